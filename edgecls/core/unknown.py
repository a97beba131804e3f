"""The "unknown" answer: a frame whose calibrated top-1 score is under the run's threshold is none of the classes.

Training chooses the threshold on held-out images so that a target share of the *correct*
in-distribution answers is kept (``--keep``, 0.95 by default), and export writes it where the
ecosystem looks for a default score threshold (the output tensor's ScoreThresholdingOptions in the
TFLite metadata, which MediaPipe Tasks and the Task Library apply) and into ``edgecls.json`` packed
with the model, which this runtime reads: a ``.tflite`` copied alone still says "unknown".

The score is the calibrated maximum probability: the model's own output, so every runtime can apply
the same rule. A run trained with negatives (photos that are none of the classes) has one more class,
named ``unknown`` (:data:`UNKNOWN_CLASS`), and a frame whose top-1 is that class is unknown too: on
held-out photos of things never trained on, that accepted a third as many as a threshold alone, where
training the negatives towards a uniform target barely helped (BENCHMARKS.md, "Unknown photos"). Pure numpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

RULE_FILE = "edgecls.json"
"""The file packed with the model's metadata that carries the rule (and the temperature, for the record)."""
DEFAULT_LABEL = "unknown"
UNKNOWN_CLASS = DEFAULT_LABEL
"""The name of the class a run trained with negatives adds after its own classes (labels.txt's last line)."""
DECISION_MARGIN = 0.05
"""verify: a frame whose top-1 score is within this of the threshold may land on either side on another runtime."""


@dataclass(frozen=True)
class UnknownRule:
    """Reject when the top-1 probability is below ``threshold`` (0: no threshold), or when the top-1 is the
    model's own unknown class (``class_index``, a model trained with negatives)."""

    threshold: float
    label: str = DEFAULT_LABEL
    class_index: Optional[int] = None

    def rejects(self, probs: np.ndarray) -> bool:
        return bool(self.rejects_rows(np.asarray(probs, np.float32).reshape(1, -1))[0])

    def rejects_rows(self, probs: np.ndarray) -> np.ndarray:
        """Per row of ``probs`` [N, C]: rejected."""
        p = np.asarray(probs, np.float32)
        out = (p.max(axis=1) < self.threshold) if self.threshold > 0 else np.zeros(len(p), bool)
        if self.class_index is not None and len(p):
            out |= p.argmax(axis=1) == self.class_index
        return out


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
              chosen_on: str, class_index: Optional[int] = None) -> bytes:
    """The JSON packed with a model: its unknown rule and how it was chosen."""
    return json.dumps({"unknown": {"rule": "max_probability", "threshold": round(float(threshold), 6), "keep": keep,
                                   "chosen_on": chosen_on, "class_index": class_index},
                       "temperature": temperature}, indent=1).encode("utf-8")


def packed_rule(record: dict[str, Any]) -> tuple[Optional[float], Optional[int]]:
    """(threshold, unknown class index) of a rule file's ``unknown`` entry; None for what is missing or absurd."""
    value, index = record.get("threshold"), record.get("class_index")
    threshold = float(value) if isinstance(value, (int, float)) and 0.0 <= value <= 1.0 else None
    return threshold, (index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else None)


def read_rule_file(data: bytes) -> dict[str, Any]:
    try:
        out = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}
