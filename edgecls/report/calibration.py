"""How sure the model is, and whether its sureness can be trusted: reliability bins and ECE. Pure numpy.

A reliability diagram puts the held-out images into bins by the top-1 probability and compares each
bin's mean confidence with its accuracy; the expected calibration error (ECE) is the gap averaged
over the images. Figures a training run recorded itself (``metrics.json``'s ``calibration``, when
present) are read by :func:`from_metrics`, which accepts any of a few plausible layouts and ignores
what it does not recognise, so an older or newer run never breaks the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from edgecls.train import calibration as training_calibration

RELIABILITY_BINS = training_calibration.ECE_BINS
"""Equal-width confidence bins, as training counts them for its ECE."""
_CONF_KEYS = ("confidence", "mean_confidence", "avg_confidence", "conf", "mean_conf")
_ACC_KEYS = ("accuracy", "acc", "mean_accuracy")
_COUNT_KEYS = ("count", "n", "size", "samples")


@dataclass
class Reliability:
    """Per-bin mean confidence, accuracy and count (None where a bin is empty), and the ECE."""

    name: str
    edges: list[float]
    confidence: list[Optional[float]]
    accuracy: list[Optional[float]]
    count: list[int]
    ece: Optional[float]

    @property
    def n(self) -> int:
        return int(sum(self.count))


@dataclass
class RecordedCalibration:
    """What metrics.json says about calibration: its scalar figures, its diagrams, its temperature."""

    figures: dict[str, float] = field(default_factory=dict)
    diagrams: list[Reliability] = field(default_factory=list)
    temperature: Optional[float] = None


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = RELIABILITY_BINS, name: str = "") -> Reliability:
    """Reliability bins of top-1 probabilities ``probs`` ``[N, C]`` against the true labels ``y``: training's own
    bins and ECE (:mod:`edgecls.train.calibration`), so the page shows the figures metrics.json holds."""
    y = np.asarray(y, dtype=np.int64)
    edges = np.linspace(0.0, 1.0, bins + 1).tolist()
    if not len(y):
        return Reliability(name, edges, [None] * bins, [None] * bins, [0] * bins, None)
    rows = training_calibration.reliability(probs, y, bins)
    return Reliability(name, edges, [r["confidence"] for r in rows], [r["accuracy"] for r in rows],
                       [r["n"] for r in rows], training_calibration.ece(probs, y, bins))


def with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities rescaled by temperature scaling: softmax(log p / T) (the logits up to a constant)."""
    return training_calibration.scaled(probs, temperature)


def confidence_histogram(probs: np.ndarray, y: np.ndarray, bins: int = RELIABILITY_BINS) -> tuple[list[int], list[int]]:
    """(right, wrong) counts of top-1 probabilities per equal-width bin: how sure it is when it is right."""
    p = np.asarray(probs, dtype=np.float64)
    if not len(p):
        return [0] * bins, [0] * bins
    conf, ok = p.max(1), p.argmax(1) == np.asarray(y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    return ([int(np.sum((which == b) & ok)) for b in range(bins)],
            [int(np.sum((which == b) & ~ok)) for b in range(bins)])


def _first(d: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((d[k] for k in keys if k in d), None)


def _as_diagram(rows: list[Any], name: str) -> Optional[Reliability]:
    """A list of bin records ({confidence, accuracy, count}-like) as a diagram, or None if it is not one."""
    confs, accs, counts = [], [], []
    for r in rows:
        if not isinstance(r, dict):
            return None
        c, a, k = _first(r, _CONF_KEYS), _first(r, _ACC_KEYS), _first(r, _COUNT_KEYS)
        if (c is not None and not isinstance(c, (int, float))) or (a is not None and not isinstance(a, (int, float))):
            return None
        confs.append(None if c is None else float(c))
        accs.append(None if a is None else float(a))
        counts.append(int(k) if isinstance(k, (int, float)) else 0)
    if not rows or all(c is None for c in confs) or all(a is None for a in accs):
        return None
    edges = np.linspace(0.0, 1.0, len(rows) + 1).tolist()
    return Reliability(name, edges, confs, accs, counts, None)


def from_metrics(calibration: Any) -> Optional[RecordedCalibration]:
    """The calibration a run recorded (``metrics.json['calibration']``), read leniently; None if absent or unreadable."""
    if not isinstance(calibration, dict) or not calibration:
        return None
    out = RecordedCalibration()

    def walk(node: Any, path: str) -> None:
        if isinstance(node, bool):
            return
        if isinstance(node, (int, float)):
            out.figures[path] = float(node)
            if path.rsplit(".", 1)[-1] in ("temperature", "T") and node > 0:
                out.temperature = float(node)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list) and node:
            diagram = _as_diagram(node, path)
            if diagram is not None:
                out.diagrams.append(diagram)

    walk(calibration, "")
    return out if (out.figures or out.diagrams) else None
