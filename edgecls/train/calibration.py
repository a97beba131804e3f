"""Calibrated confidence: temperature scaling fitted on the validation split, put inside the model.

A fine-tuned classifier's softmax is over-confident (or, after label smoothing, under-confident):
"0.9" does not mean right 9 times in 10. Temperature scaling (Guo et al., 2017) divides the logits
by one scalar T, fitted to minimise the negative log-likelihood of the validation images, which
leaves every top-1 as it was and makes the scores mean what they say. T goes *inside* the saved
model, as a ``Rescaling(1/T)`` layer between the classifier's logits and its softmax, so every
runtime (ai-edge-litert, tflite-runtime, MediaPipe Tasks) reads calibrated scores with no code of
ours; the TFLite converter folds it into the last FULLY_CONNECTED op, so it costs nothing there.

T is fitted on log-probabilities: softmax(log p / T) = softmax(z / T) for any logits z of p, since a
constant shift of the logits cancels, so the training model's softmax output is all it needs.

Expected calibration error (ECE): the images are put in ``ECE_BINS`` equal-width bins of top-1
score; ECE is the image-weighted mean of |accuracy - mean score| over the bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

ECE_BINS = 15
T_RANGE = (0.05, 20.0)
"""Temperatures searched: sharpening by 20x to softening by 20x (beyond that a model is broken, not miscalibrated)."""
LOG_FLOOR = 1e-30
TEMPERATURE_LAYER = "temperature"
PROBABILITIES_LAYER = "probabilities"


def log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, np.float64), LOG_FLOOR, 1.0))


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities a model whose logits are divided by T gives."""
    z = log_probs(probs) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(log_probs(probs)[np.arange(len(y)), y]))


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The T in :data:`T_RANGE` that minimises the NLL of softmax(log p / T) on ``(probs, y)``.

    The NLL is convex in 1/T, so a grid in log T narrowed by golden-section search finds it."""
    y = np.asarray(y, np.int64)
    if len(y) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(T_RANGE[0]), np.log(T_RANGE[1]), 41))
    losses = [nll(scaled(probs, t), y) for t in grid]
    i = int(np.argmin(losses))
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, len(grid) - 1)])
    phi = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
    fa, fb = nll(scaled(probs, np.exp(a)), y), nll(scaled(probs, np.exp(b)), y)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - phi * (hi - lo)
            fa = nll(scaled(probs, np.exp(a)), y)
        else:
            lo, a, fa = a, b, fb
            b = lo + phi * (hi - lo)
            fb = nll(scaled(probs, np.exp(b)), y)
    return float(np.exp((lo + hi) / 2.0))


def ece(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of top-1 scores (equal-width bins over [0, 1])."""
    probs, y = np.asarray(probs), np.asarray(y, np.int64)
    if len(y) == 0:
        return 0.0
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs(right[m].mean() - conf[m].mean())
    return float(total / len(y))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Per bin of top-1 score: its range, image count, mean score and accuracy (a reliability diagram's points)."""
    probs, y = np.asarray(probs), np.asarray(y, np.int64)
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        out.append({"low": round(float(edges[b]), 4), "high": round(float(edges[b + 1]), 4), "n": int(m.sum()),
                    "confidence": round(float(conf[m].mean()), 4) if m.any() else None,
                    "accuracy": round(float(right[m].mean()), 4) if m.any() else None})
    return out


@dataclass
class Calibration:
    """What temperature scaling found, and what it did to the held-out split's calibration error."""

    temperature: float
    fitted_on: str
    ece_before: float
    ece_after: float
    evaluated_on: str
    bins: int = ECE_BINS

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": round(self.temperature, 6), "fitted_on": self.fitted_on,
                "ece_before": round(self.ece_before, 5), "ece_after": round(self.ece_after, 5),
                "evaluated_on": self.evaluated_on, "bins": self.bins}


def calibrate(val: tuple[np.ndarray, np.ndarray], held_out: tuple[np.ndarray, np.ndarray], *, val_name: str = "val",
              held_out_name: str = "test") -> Calibration:
    """T fitted on ``val`` (probabilities, labels), ECE before and after on ``held_out``."""
    t = fit_temperature(*val)
    p, y = held_out
    return Calibration(t, val_name, ece(p, y), ece(scaled(p, t), y), held_out_name)


def with_temperature(model: Any, temperature: float) -> Any:
    """``model`` whose softmax reads logits / ``temperature`` (a new model sharing the body's layers and weights).

    Takes the classifier as trained (its ``predictions`` Dense ends in a softmax) or one already calibrated
    (``predictions`` -> ``temperature`` -> ``probabilities``): the head is rebuilt either way, so T can be
    fitted again (after pruning, say) without stacking temperatures."""
    from edgecls.core.keras import keras
    from edgecls.train.backbones import PREDICTIONS_LAYER

    dense = model.get_layer(PREDICTIONS_LAYER)
    logits_in = _input_within(model, dense)
    config = {**dense.get_config(), "activation": "linear", "name": PREDICTIONS_LAYER}
    linear = keras.layers.Dense.from_config(config)
    z = linear(logits_in)
    linear.set_weights(dense.get_weights())
    z = keras.layers.Rescaling(1.0 / float(temperature), name=TEMPERATURE_LAYER, dtype="float32")(z)
    out = keras.layers.Softmax(name=PROBABILITIES_LAYER, dtype="float32")(z)
    return keras.Model(model.input, out, name=model.name)


def _input_within(model: Any, layer: Any) -> Any:
    """``layer``'s input tensor in ``model``'s own graph. A layer shared by several models (the trainer, a
    pruning wrapper's clone) has one input per model; ``layer.input`` would be the first model's."""
    for i in range(len(layer._inbound_nodes)):
        if f"{layer.name}_ib-{i}" in model._network_nodes:
            return layer.get_input_at(i)
    raise ValueError(f"layer {layer.name} is not part of model {model.name}")


def temperature_of(model: Any) -> Optional[float]:
    """The temperature inside ``model`` (None: its softmax reads the raw logits)."""
    try:
        layer = model.get_layer(TEMPERATURE_LAYER)
    except ValueError:
        return None
    return 1.0 / float(layer.scale)


def refit(model: Any, val: tuple[np.ndarray, np.ndarray], *, keep: float, threshold: Optional[float] = None,
          unknown_class: Optional[int] = None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A calibrated ``model`` (after a fine-tune that moved its weights: pruning) calibrated again on ``val``
    (uint8 images, labels): its temperature times the one fitted now, and the unknown threshold chosen again
    (unless ``threshold`` is fixed); ``unknown_class`` is carried into the rule. Returns (model, calibration
    record, unknown record)."""
    from edgecls.core.unknown import threshold_for_keep

    x, y = val
    probs = np.asarray(model.predict(x.astype(np.float32), batch_size=32, verbose=0), np.float32)
    extra = fit_temperature(probs, y)
    total = (temperature_of(model) or 1.0) * extra
    calibrated = with_temperature(model, total)
    p = scaled(probs, extra)
    chosen = threshold if threshold is not None else threshold_for_keep(p, y, keep)
    record = {"temperature": round(total, 6), "refitted_by": round(extra, 6), "fitted_on": "val",
              "ece_before": round(ece(probs, y), 5), "ece_after": round(ece(p, y), 5), "evaluated_on": "val",
              "bins": ECE_BINS}
    unknown = {"rule": "max_probability", "threshold": round(float(chosen), 6), "class_index": unknown_class, "keep": keep,
               "chosen": "--unknown-threshold" if threshold is not None else f"keep {keep:g} on val", "calibrated": True}
    return calibrated, record, unknown
