"""Capture-to-result latency: when each frame left the source, and percentiles of frame ages.

The per-stage means in the stats say where time goes; the frame's *age* when its result is out
(queueing included) is what a user of the answer feels, and its tail (p99) is what a watchdog
or an alarm threshold must allow for.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Optional

import numpy as np

from edgecls.runtime.sources import FrameSource


class StampedSource(FrameSource):
    """Notes when each frame left the source, so a result can report the frame's age.

    Kept outside the grabber: frames are matched by identity (the grabber passes the array on
    untouched), newest first.
    """

    def __init__(self, inner: FrameSource) -> None:
        self.inner = inner
        self.name, self.fps, self.is_live = inner.name, inner.fps, inner.is_live
        self._stamps: collections.deque[tuple[int, float]] = collections.deque(maxlen=32)

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        ok, rgb = self.inner.read()
        if ok and rgb is not None:
            self._stamps.append((id(rgb), time.perf_counter()))
        return ok, rgb

    @property
    def skipped(self) -> list[str]:
        return self.inner.skipped

    def captured_at(self, rgb: np.ndarray) -> Optional[float]:
        key = id(rgb)
        for k, t in reversed(list(self._stamps)):  # list(): a snapshot, the grabber appends meanwhile
            if k == key:
                return t
        return None

    def reopen(self) -> bool:
        return self.inner.reopen()

    def expected_frames(self) -> Optional[int]:
        return self.inner.expected_frames()

    def close(self) -> None:
        self.inner.close()


def percentiles(values: Any) -> dict[str, float]:
    """p50/p90/p99/max of a sequence of milliseconds ({} when empty)."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return {}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "max": round(float(a.max()), 3), "n": int(a.size)}
