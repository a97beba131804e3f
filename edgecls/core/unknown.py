"""The "unknown" answer: a frame whose calibrated top-1 score is under the run's threshold is none of the classes.

Training chooses the threshold on held-out images so that a target share of the *correct*
in-distribution answers is kept (``--keep``, 0.95 by default), and export writes it where the
ecosystem looks for a default score threshold (the output tensor's ScoreThresholdingOptions in the
TFLite metadata, which MediaPipe Tasks and the Task Library apply) and into ``edgecls.json`` packed
with the model, which this runtime reads: a ``.tflite`` copied alone still says "unknown".

The score is the calibrated maximum probability: the model's own output, so every runtime can apply
the same rule (BENCHMARKS.md, "unknown photos", measures it against alternatives). Pure numpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

RULE_FILE = "edgecls.json"
"""The file packed with the model's metadata that carries the rule (and the temperature, for the record)."""
DEFAULT_LABEL = "unknown"
DECISION_MARGIN = 0.05
"""verify: a frame whose top-1 score is within this of the threshold may land on either side on another runtime."""


@dataclass(frozen=True)
class UnknownRule:
    """Reject when the top-1 probability is below ``threshold`` (0: never)."""

    threshold: float
    label: str = DEFAULT_LABEL

    def rejects(self, probs: np.ndarray) -> bool:
        return bool(self.threshold > 0 and float(np.max(probs)) < self.threshold)

    def rejects_rows(self, probs: np.ndarray) -> np.ndarray:
        """Per row of ``probs`` [N, C]: rejected."""
        p = np.asarray(probs, np.float32)
        return (p.max(axis=1) < self.threshold) if self.threshold > 0 else np.zeros(len(p), bool)


def threshold_for_keep(probs: np.ndarray, y: np.ndarray, keep: float) -> float:
    """The highest threshold that keeps at least ``keep`` of the correct answers among ``(probs, y)``:
    the (1 - keep) quantile of their top-1 scores. 0 (nothing rejected) when none is correct."""
    p, y = np.asarray(probs, np.float64), np.asarray(y, np.int64)
    correct = p.argmax(axis=1) == y
    scores = np.sort(p.max(axis=1)[correct])
    if scores.size == 0:
        return 0.0
    kept = int(np.ceil(keep * scores.size))  # at least this many must stay at or above the threshold
    return float(scores[scores.size - kept]) if kept > 0 else float(scores[-1]) + 1e-6


def rule_file(threshold: float, *, keep: Optional[float], temperature: Optional[float],
              chosen_on: str) -> bytes:
    """The JSON packed with a model: its unknown rule and how it was chosen."""
    return json.dumps({"unknown": {"rule": "max_probability", "threshold": round(float(threshold), 6), "keep": keep,
                                   "chosen_on": chosen_on},
                       "temperature": temperature}, indent=1).encode("utf-8")


def read_rule_file(data: bytes) -> dict[str, Any]:
    try:
        out = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}
