"""Selective float chosen by *effect*: which tensors, kept in float, make the int8 file agree?

The debugger's rmse/scale (:mod:`edgecls.optimize.qdebug`) says where int8 rounds badly, not
what that does to the answer: on the hard benchmark set, keeping the two worst tensors in
float halved the mean |prob diff| and changed no top-1 (BENCHMARKS.md). So the debugger only
*nominates* candidates (the worst tensors, plus the classifier head); each is then measured by
what it does to the model's output on *selection images* — calibration images, never the
held-out images parity judges by (no peeking at the gate):

1. every candidate alone (one requantization of the calibrated model + one pass over the
   selection images each);
2. candidates that helped, best first, added one at a time; a step is kept only when it lowers
   the error further, until ``limit`` tensors are float.

The error is (top-1 disagreements, mean |prob diff|) against the float model, compared in that
order: flips are what the gate counts, the probability distance breaks ties and sees near-flips.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgecls.optimize.qdebug import AUTO_MAX_FLOAT_LAYERS, LayerError, selective_int8

EFFECT_CANDIDATES = 10
"""Worst tensors (by rmse/scale) measured one by one, besides the classifier head."""
EFFECT_IMAGES = 150
"""Selection images per measurement (each candidate costs one requantization + this many invokes)."""
HEAD_OPS = ("FULLY_CONNECTED", "SOFTMAX", "MEAN")
"""The classifier head's ops (global pooling, dense, softmax): tried as one candidate."""


@dataclass
class Effect:
    """What a set of float tensors does to the int8 output on the selection images."""

    tensors: list[str]
    flips: int
    mean_abs_prob_diff: float

    @property
    def key(self) -> tuple[int, float]:
        return self.flips, self.mean_abs_prob_diff

    def as_dict(self) -> dict[str, Any]:
        return {"float_tensors": len(self.tensors), "flips": self.flips,
                "mean_abs_prob_diff": round(self.mean_abs_prob_diff, 5)}


@dataclass
class Selection:
    """The chosen float tensors and how the choice was made (for the card)."""

    tensors: list[str]
    baseline: Effect
    chosen: Effect
    trace: list[dict[str, Any]] = field(default_factory=list)
    images: int = 0
    nominated: list[dict[str, Any]] = field(default_factory=list)
    """The candidates the debugger nominated, with their rmse/scale."""

    def as_dict(self) -> dict[str, Any]:
        return {"method": "effect", "selection_images": self.images, "ptq": self.baseline.as_dict(),
                "chosen": self.chosen.as_dict(), "nominated": self.nominated, "trace": self.trace}


def tflite_probabilities(tflite: bytes, images: np.ndarray, workdir: Path) -> np.ndarray:
    """Probabilities [N, C] of ``tflite`` on uint8 ``images`` through the device runtime, batch 1."""
    from edgecls.runtime.classifier import Classifier

    with tempfile.NamedTemporaryFile(suffix=".tflite", dir=workdir, delete=False) as f:
        f.write(tflite)
        path = Path(f.name)
    try:
        clf = Classifier(path, labels=None, num_threads=2)
        return np.stack([clf.probabilities(img) for img in images]).astype(np.float32)
    finally:
        path.unlink(missing_ok=True)


def candidates(layers: Sequence[LayerError], n: int = EFFECT_CANDIDATES) -> list[list[str]]:
    """Candidate groups: the head (one group), then the ``n`` worst other tensors, one each."""
    head = [e.tensor for e in layers if e.op in HEAD_OPS]
    rest = [[e.tensor] for e in sorted(layers, key=lambda e: -e.rmse_scale) if e.op not in HEAD_OPS][:n]
    return ([head] if head else []) + rest


def choose_by_effect(
    evaluate: Callable[[list[str]], Effect],
    groups: Sequence[Sequence[str]],
    *,
    limit: int = AUTO_MAX_FLOAT_LAYERS,
    log: Optional[Callable[[str], None]] = None,
) -> tuple[list[str], Effect, Effect, list[dict[str, Any]]]:
    """Forward selection: measure each group alone, then add the helpful ones best first while the
    error keeps falling and at most ``limit`` tensors are float. Returns (tensors, baseline, chosen, trace)."""
    measured: dict[tuple[str, ...], Effect] = {}

    def effect(tensors: list[str]) -> Effect:
        if tuple(tensors) not in measured:
            measured[tuple(tensors)] = evaluate(tensors)
        return measured[tuple(tensors)]

    baseline = effect([])
    trace: list[dict[str, Any]] = [{"step": "ptq", **baseline.as_dict()}]
    helpful = []
    for g in groups:
        if not g or len(g) > limit:
            continue
        e = effect(list(g))
        trace.append({"step": "alone", "tensors": list(g), **e.as_dict()})
        if e.key < baseline.key:
            helpful.append((e.key, list(g)))
    helpful.sort(key=lambda t: t[0])
    chosen: list[str] = []
    best = baseline
    for _, g in helpful:
        trial = chosen + [t for t in g if t not in chosen]
        if len(trial) > limit:
            continue
        e = effect(trial)
        if e.key < best.key:
            chosen, best = trial, e
            trace.append({"step": "add", "tensors": list(g), **e.as_dict()})
            if log:
                log(f"selective float: {len(chosen)} tensor(s) -> {e.flips} flips, mean |prob diff| "
                    f"{e.mean_abs_prob_diff:.4f} on the selection images")
    return chosen, baseline, best, trace


def select_float_tensors(
    calibrated: bytes, layers: Sequence[LayerError], images: np.ndarray, p_float: np.ndarray, *, io: str,
    workdir: Path, limit: int = AUTO_MAX_FLOAT_LAYERS, log: Optional[Callable[[str], None]] = None,
) -> Selection:
    """Choose the float tensors of a selective int8 model by their measured effect on ``images``."""
    top_float = p_float.argmax(1)

    def evaluate(tensors: list[str]) -> Effect:
        p = tflite_probabilities(selective_int8(calibrated, tensors, io=io), images, workdir)
        return Effect(tensors, int(np.sum(p.argmax(1) != top_float)), float(np.abs(p - p_float).mean()))

    groups = candidates(layers)
    chosen, baseline, best, trace = choose_by_effect(evaluate, groups, limit=limit, log=log)
    by_name = {e.tensor: e for e in layers}
    nominated = [{"tensor": t, "op": by_name[t].op, "rmse_scale": round(by_name[t].rmse_scale, 4)}
                 for g in groups for t in g]
    return Selection(tensors=chosen, baseline=baseline, chosen=best, trace=trace, images=int(len(images)),
                     nominated=nominated)
