"""Empirical bias correction: shift each layer's bias by the mean output shift int8 weight rounding causes.

Rounding a kernel to int8 (per output channel, symmetric, narrow range: what TFLite's converter
does) changes not only each output's noise but its *mean*: per channel the rounding errors do not
cancel over the input's average, so every channel after a quantized conv is shifted a little,
and the shifts add up through the network (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", 2019, section 4.2). On this toolkit's hard benchmark set the
model with int8 weights (dynamic range) already disagreed with the float model on 5% of held-out
images, and the correction took plain int8 from 0.887 to 0.967 agreement (BENCHMARKS.md, "Earlier int8 measurements that still hold").

The correction runs on a copy of the float model before conversion: for every conv/dense layer,
the mean output shift that rounding its kernel (as the converter will) causes on calibration
images is subtracted from the bias that feeds that output (a BatchNorm's beta after a bias-free
conv, scaled as the BatchNorm scales it, else the layer's own bias). Kernels are left
untouched, so the converter rounds them exactly as simulated. BatchNorm folding into the conv
does not change the rounding: with one scale per output channel, round(s * w) = s * round(w).

Each layer's shift is measured on its float input (one forward pass for all layers): the output is
linear in the input before bias and activation, so the mean shift is the kernel's rounding error
applied to the mean input map. With every layer's own shift removed, the inputs downstream are
unshifted too (to first order), so the shifts no longer compound. (Measuring every layer on the
rounded, corrected network instead and repeating the pass diverged: each round over-corrected the
shifts the round before had already removed upstream.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from edgecls.optimize.int8.method import Built, Context, Method

BATCH = 32
INT8_LEVELS = 127  # narrow symmetric int8 range of TFLite weights: -127..127


@dataclass
class _Target:
    name: str  # the layer whose bias is shifted
    kind: str  # "beta" (BatchNorm after a bias-free conv), "bias" (linear output), "dense" (Dense + activation: its pre-activation is not a tensor)


def channel_scales(kernel: np.ndarray, channel_axes: tuple[int, ...]) -> np.ndarray:
    """The converter's per-output-channel scale (max |w| / 127), broadcastable against ``kernel``."""
    reduce = tuple(a for a in range(kernel.ndim) if a not in channel_axes)
    scale = np.max(np.abs(kernel), axis=reduce, keepdims=True) / INT8_LEVELS
    return np.where(scale > 0, scale, 1.0)


def round_kernel(kernel: np.ndarray, channel_axes: tuple[int, ...]) -> np.ndarray:
    """``kernel`` rounded to int8 per output channel as TFLite's converter does (symmetric, narrow range).

    ``channel_axes`` are the axes that index an output channel (kept); the scale is the channel's max |w| / 127.
    """
    scale = channel_scales(kernel, channel_axes)
    return (np.round(kernel / scale) * scale).astype(kernel.dtype)


def _channel_axes(layer: Any, keras: Any) -> tuple[int, ...] | None:
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return (2, 3)  # [kh, kw, C, multiplier]: TFLite's channel is C * multiplier
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return (layer.kernel.shape.rank - 1,)
    return None


def _targets(flat: Any, keras: Any) -> list[_Target]:
    out: list[_Target] = []
    weighted = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    for layer in flat.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.center:
            src = layer.inbound_nodes[0].inbound_layers
            if isinstance(src, weighted) and not isinstance(src, list):
                out.append(_Target(layer.name, "beta"))
        elif isinstance(layer, weighted) and layer.use_bias:
            consumers = [n.outbound_layer for n in layer.outbound_nodes]
            if any(isinstance(c, keras.layers.BatchNormalization) for c in consumers):
                continue  # corrected at the BatchNorm
            act = keras.activations.serialize(layer.activation)
            if act == "linear":
                out.append(_Target(layer.name, "bias"))
            elif isinstance(layer, keras.layers.Dense):
                out.append(_Target(layer.name, "dense"))
            # A conv with a non-linear activation inside it (EfficientNet's squeeze-excite) is left alone:
            # its pre-activation output is not a tensor of the graph.
    return out


def _mean_inputs(model: Any, layers: list[Any], images: np.ndarray) -> list[np.ndarray]:
    """Mean over ``images`` of each layer's input map ([1, H, W, C] or [1, C]) in ``model``'s float graph."""
    from edgecls.core.keras import keras, tf

    probe = keras.Model(model.input, [tf.reduce_mean(layer.input, axis=0, keepdims=True) for layer in layers])
    sums: list[Any] = [0.0] * len(layers)
    for start in range(0, len(images), BATCH):
        chunk = images[start:start + BATCH].astype(np.float32)
        outs = probe(chunk, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        sums = [s + np.asarray(o, np.float64) * len(chunk) for s, o in zip(sums, outs)]
    return [s / len(images) for s in sums]


def _output_shift(layer: Any, mean_input: np.ndarray, keras: Any) -> np.ndarray:
    """Per-channel mean output shift of ``layer`` when its kernel is rounded, for the mean input.

    The layer is linear in its input before the bias and activation, so the mean over images of
    (rounded - float) output is the same difference applied to the mean input map (padding included)."""
    kernel = layer.get_weights()[0]
    delta = round_kernel(kernel, _channel_axes(layer, keras)) - kernel
    if isinstance(layer, keras.layers.Dense):
        return (mean_input.reshape(-1, kernel.shape[0]) @ delta).reshape(-1, kernel.shape[-1]).mean(0)
    cfg = layer.get_config()
    cfg.update(use_bias=False, activation="linear", name=layer.name + "_rounding")
    twin = layer.__class__.from_config(cfg)
    twin.build(mean_input.shape)
    twin.set_weights([delta])
    out = twin(mean_input.astype(np.float32)).numpy()
    return out.reshape(-1, out.shape[-1]).mean(0)


def correct_biases(model: Any, images: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """A flat copy of ``model`` whose biases cancel the mean shift of int8 weight rounding on ``images``.

    Use the copy only for conversion: its float outputs are (deliberately) shifted; parity still
    compares the int8 file with the original ``model``.
    """
    flat, shifts = corrected_with_shifts(model, images)
    return flat, shift_summary(shifts, len(images))


def shift_summary(shifts: dict[str, np.ndarray], images: int) -> dict[str, Any]:
    """What the card records of a correction: layers corrected, images, the largest shift."""
    info: dict[str, Any] = {"layers": len(shifts), "images": int(images)}
    if shifts:
        info["max_shift"] = round(max(float(np.max(np.abs(s))) for s in shifts.values()), 6)
    return info


def corrected_with_shifts(model: Any, images: np.ndarray) -> tuple[Any, dict[str, np.ndarray]]:
    """:func:`correct_biases`, returning each corrected layer's shift instead of a summary:
    {layer name: the per-channel amount subtracted from its bias (BatchNorm beta, conv or dense bias)}.

    The shift is in the units of the op's output, so it is also what the converter's folded bias of
    that op lost: adding it back restores the original layer (:mod:`edgecls.optimize.int8.float_biases`)."""
    from edgecls.core.keras import keras
    from edgecls.optimize.int8.flat import flatten

    flat = flatten(model)  # a copy: the biases change in it only
    targets = _targets(flat, keras)
    shifts: dict[str, np.ndarray] = {}
    if not targets:
        return flat, shifts
    weighted = [_weighted_layer(flat, t) for t in targets]
    means = _mean_inputs(flat, weighted, images)
    for t, layer, mean_input in zip(targets, weighted, means):
        shift = _output_shift(layer, mean_input, keras)
        target = flat.get_layer(t.name)
        if t.kind == "beta":  # the conv's shift, scaled as the BatchNorm scales it
            gamma = target.gamma.numpy() if target.scale else 1.0
            shift = shift * gamma / np.sqrt(target.moving_variance.numpy() + target.epsilon)
        shift = shift.astype(np.float32)
        var = target.beta if t.kind == "beta" else target.bias
        var.assign(var.numpy() - shift)
        shifts[t.name] = shift
    return flat, shifts


def _weighted_layer(flat: Any, t: _Target) -> Any:
    layer = flat.get_layer(t.name)
    return layer.inbound_nodes[0].inbound_layers if t.kind == "beta" else layer


@dataclass
class Corrected:
    """The bias-corrected copy of the float model (made once per export, shared by the methods that build on it)."""

    model: Any
    shifts: dict[str, np.ndarray]
    """{layer: the per-channel amount subtracted from its bias}: adding it back restores a layer."""
    summary: dict[str, Any]


def corrected(ctx: Context) -> Corrected:
    """The context's float model, bias-corrected on its calibration images (made on first use)."""

    def make() -> Corrected:
        flat, shifts = corrected_with_shifts(ctx.model, ctx.representative)
        return Corrected(flat, shifts, shift_summary(shifts, len(ctx.representative)))

    return ctx.shared("corrected", make)


class BiasCorrected(Method):
    """Plain PTQ of the model whose biases cancel the mean shift of int8 weight rounding."""

    name = "bias-corrected"
    cheap = True
    summary = "post-training quantization after bias correction"

    def build(self, ctx: Context) -> Optional[Built]:
        c = corrected(ctx)
        return Built(ctx.convert(c.model), record={"bias_correction": c.summary})
