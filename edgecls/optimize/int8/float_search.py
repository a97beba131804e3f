"""Selective float chosen by *effect*: which tensors, kept in float, make the int8 file agree?

The debugger's rmse/scale (:mod:`edgecls.optimize.int8.debugger`) says where int8 rounds badly, not
what that does to the answer: keeping the worst tensors in float can leave every top-1 as it was.
So the debugger only *nominates* candidates (the worst tensors, plus the classifier head); each is
then measured by what it does to the model's output on *selection images* — calibration images,
never the held-out images parity judges by (no peeking at the gate):

1. every candidate alone (one requantization of the calibrated model + one pass over the
   selection images each). A candidate is one tensor, the classifier head, or one of the worst
   tensors together with the op that feeds it: keeping an op float still rounds its *input* to
   8 bits, and a tensor stays float only when the ops on both sides are;
2. candidates that helped, best first, added one at a time; a step is kept only when it lowers
   the error further, until ``limit`` tensors are float.

The error is (top-1 disagreements, mean |prob diff|) against the float model, compared in that
order: flips are what the gate counts, the probability distance breaks ties and sees near-flips.
With equal flips a step must lower the mean |prob diff| by ``MIN_GAIN`` (5 %): every float tensor
costs size and time.

Two methods use it: :class:`FloatByEffect` searches on the plain PTQ calibration (it finds a layer
that int8 breaks outright), :class:`FloatNamed` keeps the tensors a user names. On a bias-corrected
calibration each float op tried gets its original bias back (``shifts``;
:mod:`edgecls.optimize.int8.float_biases`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgecls.optimize.int8.debugger import LayerError, ptq_diagnosis, resolve_float_layers, selective_int8
from edgecls.optimize.int8.method import Built, Context, Method

EFFECT_CANDIDATES = 10
"""Worst tensors (by rmse/scale) measured one by one, besides the classifier head."""
EFFECT_IMAGES = 150
"""Selection images per measurement (each candidate costs one requantization + this many invokes)."""
HEAD_OPS = ("FULLY_CONNECTED", "SOFTMAX", "MEAN")
"""The classifier head's ops (global pooling, dense, softmax): tried as one candidate."""
MAX_FLOAT_TENSORS = 8
"""At most this many tensors stay float: a mostly-int8 file."""
MIN_GAIN = 0.05
"""With the same flips, a float set must lower the mean |prob diff| by 5 % to be kept: a 1 % step once kept
the 320 -> 1280 conv float, growing the file from 2.7 to 4.9 MB for a difference 150 selection images cannot
tell from noise."""
PAIR_CANDIDATES = 5
"""Worst tensors also tried together with the op that feeds them. Keeping one op float still rounds its
input to 8 bits; only the pair keeps the tensor between them float."""


@dataclass
class Effect:
    """What a set of float tensors does to the int8 output on the selection images."""

    tensors: list[str]
    flips: int
    mean_abs_prob_diff: float

    @property
    def key(self) -> tuple[int, float]:
        return self.flips, self.mean_abs_prob_diff

    def beats(self, other: "Effect") -> bool:
        """Fewer flips, or as many and a mean |prob diff| at least MIN_GAIN lower."""
        if self.flips != other.flips:
            return self.flips < other.flips
        return self.mean_abs_prob_diff < other.mean_abs_prob_diff * (1.0 - MIN_GAIN)

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
    kept: list[str] = field(default_factory=list)
    """Tensors float in every candidate, the baseline included (the stem, on a bias-corrected model)."""

    def as_dict(self) -> dict[str, Any]:
        return {"method": "effect", "selection_images": self.images, "ptq": self.baseline.as_dict(),
                "chosen": self.chosen.as_dict(), "nominated": self.nominated, "trace": self.trace,
                "always_float": self.kept}


def tflite_probabilities(tflite: bytes, images: np.ndarray, workdir: Path) -> np.ndarray:
    """Probabilities [N, C] of the file ``tflite`` on uint8 ``images`` through the device runtime, batch 1."""
    from edgecls.optimize.parity import tflite_scores

    with tempfile.NamedTemporaryFile(suffix=".tflite", dir=workdir, delete=False) as f:
        f.write(tflite)
        path = Path(f.name)
    try:
        return tflite_scores(path, images)
    finally:
        path.unlink(missing_ok=True)


def candidates(layers: Sequence[LayerError], n: int = EFFECT_CANDIDATES, *,
               producers: Optional[dict[str, str]] = None, pairs: int = PAIR_CANDIDATES) -> list[list[str]]:
    """Candidate groups: the head (one group), the ``n`` worst other tensors one each, then the ``pairs``
    worst with the op that feeds them (``producers``: output -> input tensor), so that the tensor between
    the two stays float too."""
    head = [e.tensor for e in layers if e.op in HEAD_OPS]
    worst = [e.tensor for e in sorted(layers, key=lambda e: -e.rmse_scale) if e.op not in HEAD_OPS]
    groups = ([head] if head else []) + [[t] for t in worst[:n]]
    quantized = {e.tensor for e in layers}
    for t in worst[:pairs]:
        src = (producers or {}).get(t)
        if src in quantized and src not in head:
            groups.append([src, t])
    return groups


def choose_by_effect(
    evaluate: Callable[[list[str]], Effect],
    groups: Sequence[Sequence[str]],
    *,
    limit: int = MAX_FLOAT_TENSORS,
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
        if e.beats(baseline):
            helpful.append((e.key, list(g)))
    helpful.sort(key=lambda t: t[0])
    chosen: list[str] = []
    best = baseline
    for _, g in helpful:
        trial = chosen + [t for t in g if t not in chosen]
        if len(trial) > limit:
            continue
        e = effect(trial)
        if e.beats(best):
            chosen, best = trial, e
            trace.append({"step": "add", "tensors": list(g), **e.as_dict()})
            if log:
                log(f"selective float: {len(e.tensors)} tensor(s) -> {e.flips} flips, mean |prob diff| "
                    f"{e.mean_abs_prob_diff:.4f} on the selection images")
    return chosen, baseline, best, trace


def select_float_tensors(
    calibrated: bytes, layers: Sequence[LayerError], images: np.ndarray, p_float: np.ndarray, *, io: str,
    workdir: Path, limit: int = MAX_FLOAT_TENSORS, log: Optional[Callable[[str], None]] = None,
    shifts: Optional[dict[str, np.ndarray]] = None, keep: Sequence[str] = (),
) -> Selection:
    """Choose the float tensors of a selective int8 model by their measured effect on ``images``.

    ``shifts``: ``calibrated`` is of a bias-corrected model, and each tried float op gets its original
    bias back first (:mod:`edgecls.optimize.int8.float_biases`). ``keep``: float in every candidate
    (the baseline too); the selection adds to them."""
    from edgecls.optimize.int8.debugger import producers
    from edgecls.optimize.int8.float_biases import restore_biases

    top_float = p_float.argmax(1)

    kept = list(keep)

    def evaluate(tensors: list[str]) -> Effect:
        tensors = kept + [t for t in tensors if t not in kept]
        source = restore_biases(calibrated, tensors, shifts)[0] if shifts else calibrated
        p = tflite_probabilities(selective_int8(source, tensors, io=io), images, workdir)
        return Effect(tensors, int(np.sum(p.argmax(1) != top_float)), float(np.abs(p - p_float).mean()))

    groups = [g for g in candidates(layers, producers=producers(calibrated)) if not set(g) <= set(kept)]
    chosen, baseline, best, trace = choose_by_effect(evaluate, groups, limit=limit - len(kept), log=log)
    chosen = kept + [t for t in chosen if t not in kept]
    by_name = {e.tensor: e for e in layers}
    nominated = [{"tensor": t, "op": by_name[t].op, "rmse_scale": round(by_name[t].rmse_scale, 4)}
                 for g in groups for t in g]
    return Selection(tensors=chosen, baseline=baseline, chosen=best, trace=trace, images=int(len(images)),
                     nominated=nominated, kept=kept)


def selection_images(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """The first ``EFFECT_IMAGES`` calibration images and the float model's probabilities on them."""
    images = ctx.representative[:EFFECT_IMAGES]
    p_float = np.asarray(ctx.model.predict(images.astype(np.float32), batch_size=32, verbose=0), dtype=np.float32)
    return images, p_float


class FloatByEffect(Method):
    """Plain PTQ with the tensors kept float whose float version measurably helps (forward selection)."""

    name = "float-search"
    summary = "selective float layers chosen by their effect"

    def build(self, ctx: Context) -> Optional[Built]:
        diagnosis = ptq_diagnosis(ctx)
        images, p_float = selection_images(ctx)
        selection = select_float_tensors(diagnosis.calibrated, diagnosis.layers, images, p_float, io=ctx.io,
                                         workdir=ctx.workdir, log=ctx.log)
        if not selection.tensors:
            ctx.log(f"keeping no tensor in float lowered the int8 error on {selection.images} calibration images "
                    f"(worst rmse/scale {diagnosis.layers[0].rmse_scale:.2f}); nothing to try")
            return None
        return Built(selective_int8(diagnosis.calibrated, selection.tensors, io=ctx.io), selection.tensors,
                     {"selection": {**selection.as_dict(), "base": "original"}})


class FloatNamed(Method):
    """Plain PTQ with the tensors a user named kept float (``--float-layers NAME,...``)."""

    name = "float-named"
    summary = "the float layers you named"

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)

    def build(self, ctx: Context) -> Optional[Built]:
        diagnosis = ptq_diagnosis(ctx)
        tensors = resolve_float_layers(self.names, diagnosis.layers)
        return Built(selective_int8(diagnosis.calibrated, tensors, io=ctx.io), tensors,
                     {"selection": {"method": "named", "names": self.names}})
