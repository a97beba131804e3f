"""The camera loop: capture -> preprocess -> invoke -> postprocess -> smooth -> overlay -> outputs.

``run(cfg)`` does the work and returns :class:`LoopStats`; ``edgecls camera`` only builds the
config. Capture and preprocessing run on a grabber thread (``cfg.pipeline``) so the model
is never kept waiting for the camera or the video decoder.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional

import numpy as np

from edgecls.core.config import CameraConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json
from edgecls.runtime.classifier import Classifier, read_labels_file
from edgecls.core.io import ensure_writable
from edgecls.runtime.grabber import FrameGrabber, InlineReader
from edgecls.runtime.scores import ScoreSmoother, top_k
from edgecls.runtime.sources import cv2_has, open_source

log = logging.getLogger("edgecls.camera")

STAGES = ("capture", "preprocess", "invoke", "postprocess", "draw", "output")
FPS_SMOOTHING = 0.9  # on-screen FPS is an exponential average, so the number is readable
WINDOW_NAME = "edgecls"


@dataclass
class LoopStats:
    """What one run of the loop did; written as --stats-json."""

    frames: int = 0
    loop_fps: float = 0.0
    invoke_fps: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    """Mean milliseconds per frame of each stage (capture/preprocess run on the grabber thread when pipelined)."""
    dropped_frames: int = 0
    source: str = ""
    model: str = ""
    threads: int = 0
    runtime: str = ""
    runtime_version: Optional[str] = None
    xnnpack: bool = True
    pipeline: bool = True
    headless: bool = True
    elapsed_s: float = 0.0
    reopens: int = 0
    interrupted: bool = False
    stop_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stage_ms"] = {k: round(v, 4) for k, v in self.stage_ms.items()}
        return d


def display_status() -> tuple[bool, str]:
    """Whether a window can be shown here, and why not."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no $DISPLAY or $WAYLAND_DISPLAY"
    if not cv2_has("GUI"):
        return False, "this OpenCV build has no GUI (opencv-python-headless)"
    return True, "display available"


def _validate(cfg: CameraConfig) -> None:
    if cfg.threads < 1:
        raise EdgeclsError(f"--threads must be >= 1, got {cfg.threads}")
    if cfg.top_k < 1:
        raise EdgeclsError(f"--top-k must be >= 1, got {cfg.top_k}")
    if not 0.0 <= cfg.threshold <= 1.0:
        raise EdgeclsError(f"--threshold must be between 0 and 1, got {cfg.threshold}")
    if not 0.0 <= cfg.smoothing < 1.0:
        raise EdgeclsError(f"--smoothing must be in [0, 1) (0 = off, 0.9 = heavy), got {cfg.smoothing}")
    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise EdgeclsError(f"--max-frames must be >= 1, got {cfg.max_frames}")
    if cfg.width < 1 or cfg.height < 1:
        raise EdgeclsError(f"--width/--height must be positive, got {cfg.width}x{cfg.height}")
    outs = [p for p in (cfg.save, cfg.jsonl, cfg.stats_json) if p]
    if len({str(Path(p).resolve()) for p in outs}) != len(outs):
        raise EdgeclsError("--save, --jsonl and --stats-json must be different files")
    for flag, p in (("--save", cfg.save), ("--jsonl", cfg.jsonl), ("--stats-json", cfg.stats_json)):
        if p and Path(p).exists() and not cfg.force:
            raise EdgeclsError(f"{p} already exists; choose another {flag} path or pass --force to overwrite it")
        if p and Path(p).is_dir():
            raise EdgeclsError(f"{flag} {p} is a folder; give a file path")
        if p:
            ensure_writable(p, flag)  # a read-only folder fails now, not after the whole run


class _Outputs:
    """The annotated video (written to a .partial file, renamed when complete) and the JSONL stream."""

    def __init__(self, cfg: CameraConfig, fps: float) -> None:
        self.cfg, self.fps = cfg, fps
        self.writer = None
        self.video_tmp: Optional[Path] = None
        self.jsonl: Optional[IO[str]] = None
        if cfg.jsonl:
            Path(cfg.jsonl).parent.mkdir(parents=True, exist_ok=True)
            # Streamed and flushed per row: a crash keeps every row written so far.
            self.jsonl = open(cfg.jsonl, "w" if cfg.force else "x", encoding="utf-8")

    def write_video(self, bgr: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            out = Path(self.cfg.save)  # type: ignore[arg-type]
            out.parent.mkdir(parents=True, exist_ok=True)
            self.video_tmp = out.with_name(f".{out.stem}.partial{out.suffix or '.mp4'}")
            h, w = bgr.shape[:2]
            self.writer = cv2.VideoWriter(str(self.video_tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                self.writer = None
                raise EdgeclsError(f"could not write video {out} (this OpenCV build cannot encode mp4v)")
        self.writer.write(bgr)

    def write_row(self, row: dict[str, Any]) -> None:
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(row) + "\n")
            self.jsonl.flush()

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.video_tmp, self.cfg.save)  # type: ignore[arg-type]


class _SigtermAsInterrupt:
    """systemd stops a service with SIGTERM: treat it like Ctrl-C so outputs are flushed and closed."""

    def __enter__(self) -> None:
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def run(cfg: CameraConfig, *, on_frame: Optional[Callable[[int, list], None]] = None) -> LoopStats:
    """Run the loop until the source ends, ``max_frames``, Ctrl-C/SIGTERM or ``q`` in the window."""
    import cv2

    _validate(cfg)
    if cfg.labels and not Path(cfg.labels).is_file():
        raise EdgeclsError(f"labels file not found: {cfg.labels}")
    labels = read_labels_file(cfg.labels) if cfg.labels else None
    clf = Classifier(cfg.model, labels=labels, num_threads=cfg.threads, xnnpack=cfg.xnnpack)
    show, why = display_status()
    if cfg.headless is False and not show:
        raise EdgeclsError(f"cannot show a window: {why}; run with --headless (and --save/--jsonl)")
    headless = True if cfg.headless else not show

    source = open_source(cfg.source, width=cfg.width, height=cfg.height)
    cv2_threads = cv2.getNumThreads()
    if cfg.pipeline:
        # The grabber thread already runs beside the interpreter's threads; OpenCV's own
        # worker pool (resize, colour conversion) would only fight them for the same cores.
        cv2.setNumThreads(1)
    pace = source.fps if (cfg.realtime and not source.is_live) else None
    if cfg.pipeline:
        reader: Any = FrameGrabber(source, transform=clf.preprocess, pace_fps=pace)
    elif source.is_live:
        reader = FrameGrabber(source, transform=None)  # still newest-frame only; preprocess inline
    else:
        reader = InlineReader(source, transform=clf.preprocess, pace_fps=pace)

    stats = LoopStats(
        source=source.name, model=str(cfg.model), threads=cfg.threads, runtime=clf.runtime,
        runtime_version=clf.runtime_version, xnnpack=cfg.xnnpack, pipeline=cfg.pipeline, headless=headless,
    )
    sums = dict.fromkeys(STAGES, 0.0)
    smoother = ScoreSmoother(cfg.smoothing)
    draw = bool(cfg.save) or not headless
    outputs: Optional[_Outputs] = None
    shown_fps = 0.0
    t_start = time.perf_counter()
    t_prev = t_start
    try:
        outputs = _Outputs(cfg, source.fps)
        with _SigtermAsInterrupt():
            reader.start()
            while True:
                frame = reader.get()
                if frame is None:
                    stats.stop_reason = "end of source"
                    break
                tensor = frame.tensor
                pre_ms = frame.preprocess_ms
                if tensor is None:
                    t0 = time.perf_counter()
                    tensor = clf.preprocess(frame.rgb)
                    pre_ms = (time.perf_counter() - t0) * 1e3
                t0 = time.perf_counter()
                raw = clf.invoke(tensor)
                t1 = time.perf_counter()
                probs = smoother(clf.postprocess(raw))
                cats = top_k(probs, cfg.top_k, cfg.threshold, clf.labels)
                t2 = time.perf_counter()
                invoke_ms = (t1 - t0) * 1e3
                now = time.perf_counter()
                inst = 1.0 / max(now - t_prev, 1e-9)
                shown_fps = inst if stats.frames == 0 else FPS_SMOOTHING * shown_fps + (1 - FPS_SMOOTHING) * inst
                t_prev = now
                quit_key = False
                if draw:
                    from edgecls.runtime.overlay import draw_overlay

                    bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
                    draw_overlay(bgr, cats, fps=shown_fps, inference_ms=invoke_ms)
                    if cfg.save:
                        outputs.write_video(bgr)
                    if not headless:
                        cv2.imshow(WINDOW_NAME, bgr)
                        quit_key = (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)
                t3 = time.perf_counter()
                outputs.write_row({
                    "time": round(time.time(), 6),
                    "frame": stats.frames,
                    "source_frame": frame.index,
                    "top_k": [c.as_dict() for c in cats],
                    "inference_ms": round(invoke_ms, 4),
                })
                t4 = time.perf_counter()
                for name, ms in (
                    ("capture", frame.capture_ms), ("preprocess", pre_ms), ("invoke", invoke_ms),
                    ("postprocess", (t2 - t1) * 1e3), ("draw", (t3 - t2) * 1e3), ("output", (t4 - t3) * 1e3),
                ):
                    sums[name] += ms
                stats.frames += 1
                if on_frame is not None:
                    on_frame(stats.frames, cats)
                if quit_key:
                    stats.stop_reason = "q pressed"
                    break
                if cfg.max_frames is not None and stats.frames >= cfg.max_frames:
                    stats.stop_reason = "max frames"
                    break
    except KeyboardInterrupt:
        stats.interrupted = True
        stats.stop_reason = "interrupted"
    finally:
        t_end = time.perf_counter()
        reader.shutdown()  # stops the grabber thread before the source is closed
        cv2.setNumThreads(cv2_threads)
        if outputs is not None:
            outputs.close()
        if not headless:
            cv2.destroyAllWindows()
        stats.elapsed_s = t_end - t_start
        n = max(stats.frames, 1)
        stats.stage_ms = {k: v / n for k, v in sums.items()}
        stats.loop_fps = stats.frames / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
        stats.invoke_fps = 1e3 / stats.stage_ms["invoke"] if stats.stage_ms["invoke"] > 0 else 0.0
        stats.dropped_frames = reader.dropped
        stats.reopens = reader.reopens
        if cfg.stats_json:
            atomic_write_json(cfg.stats_json, stats.as_dict())
    return stats
