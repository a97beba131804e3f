"""What the camera loop hands to its outputs after each frame, and the interface they share.

The loop stays one readable sequence (capture, invoke, score); everything that *uses* a result
(web view, MQTT, capture for retraining, the JSONL log) is a :class:`Sink` in its own module.
A sink's ``handle`` runs on the inference thread, so it must return at once: anything slow
(JPEG encoding, network, disk) happens on the sink's own thread from the latest result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence

import numpy as np

from edgecls.runtime.scores import Category


@dataclass
class FrameResult:
    """One processed frame. ``rgb`` is the camera's frame: sinks may read it, never modify it."""

    frame: int
    """Running count of processed frames (0-based)."""
    source_frame: int
    rgb: np.ndarray
    categories: Sequence[Category]
    """The model's top-k after smoothing and threshold, best first (also when the answer is unknown)."""
    probs: np.ndarray
    """All class scores after smoothing."""
    labels: Sequence[str]
    fps: float
    """Smoothed loop frames per second."""
    stage_ms: dict[str, float]
    """This frame's milliseconds per stage (capture, preprocess, invoke, postprocess)."""
    frame_age_ms: float
    """Capture-to-result latency: how old the frame was when its result was out."""
    wall_time: float = field(default_factory=time.time)
    unknown: Optional[str] = None
    """The unknown label when the unknown rule rejected this frame (its top-1 score under the threshold), else None."""
    _annotated: Optional[np.ndarray] = field(default=None, repr=False)
    draw_ms: float = 0.0
    """Time spent drawing the overlay for this frame (0 when no output asked for it)."""

    @property
    def top1(self) -> Optional[Category]:
        """The answer: the unknown label (index -1, the top-1 score) when the rule rejected the frame, else the
        best class above --threshold (None when there is none)."""
        if self.unknown is not None:
            return Category(index=-1, label=self.unknown, score=float(self.probs.max()) if self.probs.size else 0.0)
        return self.categories[0] if self.categories else None

    def annotated(self) -> np.ndarray:
        """The frame as BGR with the overlay drawn (top-k, FPS, invoke time), made once for every output."""
        if self._annotated is None:
            import cv2

            from edgecls.runtime.overlay import draw_overlay

            t = time.perf_counter()
            bgr = cv2.cvtColor(self.rgb, cv2.COLOR_RGB2BGR)
            shown = ([self.top1] if self.unknown is not None else []) + list(self.categories)
            self._annotated = draw_overlay(bgr, shown, fps=self.fps, inference_ms=self.stage_ms.get("invoke", 0.0))
            self.draw_ms = (time.perf_counter() - t) * 1e3
        return self._annotated

    def summary(self) -> dict[str, Any]:
        """The JSON-ready view shared by /status, MQTT and the capture sidecars."""
        top = self.top1
        return {
            "time": round(self.wall_time, 3),
            "frame": self.frame,
            "label": top.label if top else None,
            "unknown": self.unknown is not None,
            "top_k": [c.as_dict() for c in self.categories],
            "fps": round(self.fps, 2),
            "stage_ms": {k: round(v, 3) for k, v in self.stage_ms.items()},
            "frame_age_ms": round(self.frame_age_ms, 3),
        }


class Sink(Protocol):
    """An output of the loop. ``handle`` must not block; ``close`` flushes and stops threads."""

    def handle(self, result: FrameResult) -> None: ...

    def report(self) -> dict[str, Any]:
        """What it did, merged into ``LoopStats.outputs``."""
        ...

    def close(self) -> None: ...


def close_all(sinks: Sequence[Any]) -> list[BaseException]:
    """Close every sink even when one fails; the errors are returned for the caller to report."""
    errors: list[BaseException] = []
    for s in reversed(list(sinks)):
        try:
            s.close()
        except Exception as e:  # noqa: BLE001 - one broken output must not keep the others open
            errors.append(e)
    return errors
