"""Pure score functions: (de)quantization and top-k. Numpy only, no model needed.

Used by the Classifier, the camera loop and the host's parity check alike, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass
class Category:
    """One class in a top-k answer."""

    index: int
    label: str
    score: float

    def as_dict(self) -> dict:
        return {"label": self.label, "score": round(float(self.score), 6), "index": int(self.index)}


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Real values -> integers of ``dtype``: ``round(x / scale + zero_point)``, clipped to the dtype's range.

    Rounding is half-to-even (``np.rint``), as TFLite's own quantizer does for calibration.
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(f"quantize needs an integer dtype, got {dtype}")
    if not scale > 0:
        raise ValueError(f"quantization scale must be > 0, got {scale}")
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integers -> real float32 values: ``scale * (q - zero_point)``.

    Casting to int32 before subtracting matters: in uint8, ``3 - 128`` wraps to 131.
    """
    q = np.asarray(q)
    return (np.float32(scale) * (q.astype(np.int32) - np.int32(zero_point))).astype(np.float32)


def top_k(
    scores: np.ndarray,
    k: int,
    threshold: float = 0.0,
    labels: Optional[Sequence[str]] = None,
) -> list[Category]:
    """The ``k`` highest scores at or above ``threshold``, best first.

    Ties keep the lower class index first (a stable sort), so answers are reproducible.
    ``k`` larger than the number of classes returns them all.
    """
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    if k <= 0 or s.size == 0:
        return []
    # Stable sort on the negated scores: equal scores stay in index order.
    order = np.argsort(-s, kind="stable")[: min(k, s.size)]
    out = []
    for i in order:
        score = float(s[i])
        if score < threshold:
            break
        label = labels[i] if labels is not None and i < len(labels) else f"class_{i}"
        out.append(Category(index=int(i), label=label, score=score))
    return out


def top1_margin(probs: np.ndarray) -> np.ndarray:
    """Per row of ``probs`` [N, C]: the top-1 score minus the runner-up's (the top-1 itself when C is 1).

    How firmly each image is decided: rounding can swap the top-1 of a near-tie but not of a clear
    decision, so host parity and device verify both split their flips by it.
    """
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 2 or p.shape[0] == 0:
        return np.zeros((p.shape[0] if p.ndim else 0,), dtype=np.float32)
    s = np.sort(p, axis=1)
    return s[:, -1] - s[:, -2] if p.shape[1] > 1 else s[:, -1]


class ScoreSmoother:
    """Exponential moving average of score vectors across frames (0 = off, 0.9 = heavy).

    ``smoothed = alpha * previous + (1 - alpha) * current``; steadies flickering labels on video.
    """

    def __init__(self, alpha: float) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {alpha}")
        self.alpha = float(alpha)
        self._state: Optional[np.ndarray] = None

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float32)
        if self.alpha == 0.0:
            return scores
        if self._state is None or self._state.shape != scores.shape:
            self._state = scores.copy()
        else:
            self._state = self.alpha * self._state + (1.0 - self.alpha) * scores
        return self._state

    def reset(self) -> None:
        self._state = None
