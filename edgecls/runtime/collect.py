"""``edgecls collect``: record training images of one class from the camera.

Images go to ``OUT/<label>/<label>_<time>_<n>.jpg``, the layout ``edgecls train`` reads, one
every ``interval`` seconds from the newest frame (a camera is read continuously on the
grabber thread, so each image is current, not a stale buffered one). Existing images are
never overwritten: names carry the time and a running number.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from edgecls.core.device_config import CollectConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.options import validate
from edgecls.core.io import atomic_write_bytes
from edgecls.runtime.capture import encode_jpeg, safe_dirname
from edgecls.runtime.grabber import FrameGrabber
from edgecls.runtime.sources import FrameSource, open_source

log = logging.getLogger("edgecls.camera")

FRAME_WAIT_S = 10.0  # no frame for this long: the camera is gone


@dataclass
class CollectStats:
    saved: list[str] = field(default_factory=list)
    folder: str = ""
    stop_reason: str = ""
    skipped_files: int = 0
    """Image files of a folder source that could not be decoded (each warned about as it was skipped)."""


def _validate(cfg: CollectConfig) -> None:
    if cfg.negatives and cfg.label:
        raise EdgeclsError("--negatives records photos that are none of the classes: give no --label with it")
    if not cfg.negatives and not cfg.label:
        raise EdgeclsError("give --label NAME (the class to record) or --negatives (photos that are none of them)")
    if cfg.label and safe_dirname(cfg.label) != cfg.label.strip():
        raise EdgeclsError(f"--label {cfg.label!r} is not usable as a folder name (no '/', no leading '.')")
    validate(cfg)  # each option's bounds (a config changed after it was made)
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise EdgeclsError(f"{cfg.out} is a file; give a data folder")


def collect(cfg: CollectConfig, *, source: Optional[FrameSource] = None,
            on_save: Optional[Callable[[int, Path], None]] = None) -> CollectStats:
    """Record ``cfg.count`` images into ``cfg.out/cfg.label/`` (``cfg.out/`` itself with ``--negatives``: the
    folder ``edgecls train --negatives`` reads); Ctrl-C keeps what was saved."""
    _validate(cfg)
    label = cfg.label.strip() or "negative"
    folder = Path(cfg.out) if cfg.negatives else Path(cfg.out) / label
    src = source if source is not None else open_source(cfg.source, width=cfg.width, height=cfg.height)
    # Files and folders: every frame in order (no drops); cameras: the newest frame.
    grabber = FrameGrabber(src, transform=None)
    stats = CollectStats(folder=str(folder))
    run_stamp = time.strftime("%Y%m%d-%H%M%S")
    next_t = time.monotonic()
    try:
        grabber.start()
        while len(stats.saved) < cfg.count:
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            frame = grabber.get(timeout=FRAME_WAIT_S)
            if frame is None:
                stats.stop_reason = "end of source" if not src.is_live else f"no frame for {FRAME_WAIT_S:g}s"
                break
            n = len(stats.saved)
            path = folder / f"{label}_{run_stamp}_{n:04d}.jpg"
            while path.exists():  # a second run in the same second: never overwrite
                n += 1
                path = folder / f"{label}_{run_stamp}_{n:04d}.jpg"
            atomic_write_bytes(path, encode_jpeg(frame.rgb, cfg.quality))
            stats.saved.append(str(path))
            if on_save is not None:
                on_save(len(stats.saved), path)
            next_t += cfg.interval
        else:
            stats.stop_reason = "count reached"
    except KeyboardInterrupt:
        stats.stop_reason = "interrupted"
    finally:
        grabber.stop()
        src.close()
    stats.skipped_files = len(src.skipped)
    if not stats.saved and src.skipped and stats.stop_reason != "interrupted":
        raise EdgeclsError(f"no usable image in {cfg.source}: all {len(src.skipped)} file(s) could not be decoded "
                           f"(e.g. {src.skipped[0]})")
    return stats
