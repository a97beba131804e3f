"""Capture for retraining: save the full frames the model was unsure of, as a training folder.

``DIR/<predicted label>/<time>_<frame>.jpg`` is exactly the layout ``edgecls train`` reads;
each image has a sidecar of all scores in ``DIR/<label>/.scores/<same name>.json`` (a hidden
folder, which the data scanner skips), so moving an image to its true class after labelling
needs no other change. A sliding one-hour window caps the count, so a dark night (every frame
uncertain) does not fill the card. Encoding and writing run on a background thread from a
2-frame queue; when the disk is slower than a camera, frames are dropped, not queued (for
files and folders, ``lossless``, the loop waits instead: the same policy as the grabber's).
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes, atomic_write_text
from edgecls.runtime.sinks import FrameResult

log = logging.getLogger("edgecls.camera")

HOUR_S = 3600.0
JPEG_QUALITY = 95  # training images: keep detail; ~100 kB per 640x480 frame
WRITE_QUEUE_FRAMES = 2
SCORES_DIR = ".scores"
UNLABELLED = "unlabelled"  # the folder for a label that cannot be a folder name (empty)


def safe_dirname(label: str) -> str:
    """A label as a folder name: path separators and control characters replaced, never hidden or empty."""
    name = re.sub(r"[\\/\x00-\x1f]", "_", label).strip().lstrip(".")
    return name or UNLABELLED


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EdgeclsError("could not encode a frame as JPEG")
    return buf.tobytes()


class RateLimit:
    """At most ``n`` events in any sliding ``window_s`` seconds (0 = none)."""

    def __init__(self, n: int, window_s: float = HOUR_S) -> None:
        self.n, self.window_s = n, window_s
        self._times: collections.deque[float] = collections.deque()

    def allow(self, now: float) -> bool:
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) >= self.n:
            return False
        self._times.append(now)
        return True


class UncertainSaver:
    """A loop sink: frames whose top-1 score is below ``below`` go to ``root/<label>/``."""

    def __init__(self, root: str | Path, *, below: float = 0.5, max_per_hour: int = 60, lossless: bool = False) -> None:
        if not 0.0 < below <= 1.0:
            raise EdgeclsError(f"--below must be in (0, 1], got {below}")
        if max_per_hour < 1:
            raise EdgeclsError(f"--max-per-hour must be >= 1, got {max_per_hour}")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise EdgeclsError(f"--save-uncertain {root} is a file; give a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.below, self.lossless = below, lossless
        self.limit = RateLimit(max_per_hour)
        self.saved = 0
        self.rate_limited = 0
        self.dropped = 0
        self._q: queue.Queue[Optional[tuple[str, str, np.ndarray, dict[str, Any]]]] = queue.Queue(WRITE_QUEUE_FRAMES)
        self._thread = threading.Thread(target=self._writer, name="edgecls-capture", daemon=True)
        self._thread.start()

    def handle(self, r: FrameResult) -> None:
        top = float(r.probs.max()) if r.probs.size else 0.0
        if top >= self.below and r.unknown is None:  # an unknown frame is saved whatever its score
            return
        if not self.limit.allow(time.monotonic()):
            self.rate_limited += 1
            return
        # The model's best guess even when --threshold hid it: the folder is where a person
        # starts sorting, so it should be the likeliest class.
        best = int(np.argmax(r.probs))
        predicted = str(r.labels[best]) if best < len(r.labels) else f"class_{best}"
        # Unknown frames go to their own folder: what the model has not learned is what to label next.
        label = safe_dirname(r.unknown if r.unknown is not None else predicted)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(r.wall_time))
        name = f"{stamp}-{int(r.wall_time * 1000) % 1000:03d}_f{r.frame:07d}"
        order = np.argsort(-r.probs, kind="stable")
        meta = {
            **r.summary(),
            "predicted": predicted,
            "below": self.below,
            "scores": {str(r.labels[i]) if i < len(r.labels) else str(i): round(float(r.probs[i]), 6) for i in order},
        }
        try:
            # The frame object is the camera's: it is not modified afterwards (sinks only read it).
            self._q.put((label, name, r.rgb, meta), block=self.lossless)
        except queue.Full:
            self.dropped += 1

    def report(self) -> dict[str, Any]:
        return {"uncertain": {"saved": self.saved, "rate_limited": self.rate_limited, "dropped": self.dropped}}

    def _writer(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            label, name, rgb, meta = item
            try:
                folder = self.root / label
                atomic_write_text(folder / SCORES_DIR / f"{name}.json", json.dumps(meta, indent=1) + "\n")
                # The image last: a training folder never holds an image without its scores.
                atomic_write_bytes(folder / f"{name}.jpg", encode_jpeg(rgb))
                self.saved += 1
            except OSError as e:
                # A full card must not stop the classifier: log and keep running.
                self.dropped += 1
                log.warning("could not save an uncertain frame to %s: %s", self.root, e)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)
