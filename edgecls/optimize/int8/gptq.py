"""Error-compensating int8 weight rounding (GPTQ / OBQ, Frantar et al. 2022) on the converter's own grid.

Rounding every weight to its nearest int8 level (what the converter does) minimises each weight's
error, not the layer's output error. On the hard benchmark set the kernels rounded alone, with
float activations, already disagreed with the float model on 10% of held-out images, and rounding
just the first depthwise conv's 288 weights did all of that: its nine
weights per channel nearly cancel over a large positive input (ReLU6 outputs), so a rounding error
of a fraction of a level is a large shift once the BatchNorm after it divides by a small variance.

GPTQ rounds a layer's kernel one input column at a time and spreads each column's rounding error
over the columns not yet rounded, weighted by the inverse of H = X^T X of the layer's inputs on
calibration images, so that the *output* X W moves as little as possible. X per kind of layer:
a 1x1 conv or Dense, the input channels at every position; a k x k conv, its im2col patches
(kh*kw*cin); a depthwise conv, each channel's own k x k patches (one small H per channel). H is
dampened by 1% of its mean diagonal (the paper's choice: it keeps the inverse well conditioned
where inputs are (nearly) collinear or constant).

Opt-in (``edgecls export --gptq``): on the hard benchmark set GPTQ + bias correction reached
0.964 agreement against bias correction's 0.967 in the same run and took ~3.5 minutes more; what it
does lower is every op's own error (the debugger's worst rmse/scale 0.98 -> 0.30, rounding noise),
which leaves the 8-bit activation noise as the remaining cause of flips there.

The grid is exactly the converter's: symmetric, narrow range, one scale per output channel =
the channel's max |w| / 127 (:func:`edgecls.optimize.int8.bias_correction.round_kernel`). The element
that sets each channel's max is pinned to +-127 so the max, hence the converter's scale, is
unchanged, and every other level is clipped to -127..127. The kernels written back lie exactly on
that grid, so the converter's round-to-nearest reproduces the chosen integers; BatchNorm folding
scales a whole output channel, which keeps the grid (round(s * w) = s * round(w) per channel).

H is collected on the float model's inputs (one forward pass for all layers, like bias
correction), not on the inputs of the partly rounded network: cheaper, and each layer's own error
is what it compensates. The mean shift that remains is then removed by bias correction measured
against the *original* kernels (:func:`edgecls.optimize.int8.bias_correction.correct_biases` with
``rounded=``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np

from edgecls.optimize.int8.bias_correction import INT8_LEVELS, _channel_axes, channel_scales
from edgecls.optimize.int8.method import Built, Context, Method

BATCH = 8
DAMPING = 0.01
"""Added to H's diagonal, as a fraction of its mean diagonal (GPTQ's default)."""
MAX_ROWS = 100_000
"""Input rows (positions x images) a layer's H is built from; early layers have 6400 positions an image at 160 px."""


def gptq_round(w: np.ndarray, h: np.ndarray, scale: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """Integer levels for ``w`` [rows, cols] (rows = output channels) that keep ``w @ x`` close for inputs with
    second moment ``h`` [cols, cols] (or one [rows, cols, cols] per row), on the grid ``scale`` [rows].

    Each row's largest |w| is pinned to +-127 (the converter then sees the same max, hence the same scale).
    """
    w = np.array(w, dtype=np.float64)
    rows, cols = w.shape
    per_row = h.ndim == 3
    h = np.array(h, dtype=np.float64).reshape(-1, cols, cols)
    return _gptq_round(w, h, scale, damping, per_row)


def _gptq_round(w: np.ndarray, h: np.ndarray, scale: np.ndarray, damping: float, per_row: bool) -> np.ndarray:
    rows, cols = w.shape
    diag = np.diagonal(h, axis1=1, axis2=2).copy()
    dead = diag <= 0
    idx = np.arange(cols)
    h[:, idx, idx] = np.where(dead, 1.0, diag + damping * np.maximum(diag.mean(1, keepdims=True), 1e-12))
    # Upper Cholesky factor of H^-1: row i holds how column i's error spreads over columns i..end.
    u = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)
    s = np.asarray(scale, np.float64).reshape(rows)
    pin = np.zeros((rows, cols), bool)
    pin[np.arange(rows), np.argmax(np.abs(w), axis=1)] = True
    pin_level = np.sign(w[pin]).reshape(rows) * INT8_LEVELS
    q = np.zeros((rows, cols), np.float64)
    for i in range(cols):
        ui = u[:, i, :] if per_row else np.broadcast_to(u[0, i, :], (rows, cols))
        level = np.clip(np.round(w[:, i] / s), -INT8_LEVELS, INT8_LEVELS)
        level = np.where(pin[:, i], pin_level, level)
        q[:, i] = level
        err = (w[:, i] - level * s) / ui[:, i]
        w[:, i + 1:] -= err[:, None] * ui[:, i + 1:]
    return q


def _layer_rows(layer: Any, x: np.ndarray, keras: Any, tf: Any) -> np.ndarray:
    """The layer's input as the rows its kernel multiplies: [N, cin] (1x1 conv, Dense), [N, kh*kw*cin] (conv),
    [N, kh*kw, C] (depthwise)."""
    if isinstance(layer, keras.layers.Dense):
        return x.reshape(-1, x.shape[-1])
    kh, kw = layer.kernel_size
    if (kh, kw) == (1, 1) and tuple(layer.strides) == (1, 1):
        return x.reshape(-1, x.shape[-1])
    patches = tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, *layer.strides, 1],
                                       rates=[1, *layer.dilation_rate, 1], padding=layer.padding.upper()).numpy()
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return patches.reshape(-1, kh * kw, x.shape[-1])  # extract_patches orders (kh, kw, channel)
    return patches.reshape(-1, kh * kw * x.shape[-1])


def _layers(flat: Any, keras: Any) -> list[Any]:
    """The layers rounded here: Dense, and 2-D convs in channels_last without groups (im2col as written)."""
    return [layer for layer in flat.layers if _channel_axes(layer, keras) is not None
            and getattr(layer, "data_format", "channels_last") == "channels_last"
            and getattr(layer, "groups", 1) == 1 and not isinstance(layer, keras.layers.Conv2DTranspose)
            and (isinstance(layer, keras.layers.Dense) or len(layer.kernel_size) == 2)]


def input_moments(flat: Any, layers: list[Any], images: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """H = X^T X (mean over rows) of each layer's input rows on ``images`` (float graph), as float64."""
    from edgecls.core.keras import keras, tf

    probe = keras.Model(flat.input, [layer.input for layer in layers])
    rng = np.random.default_rng(seed)
    sums: list[Any] = [0.0] * len(layers)
    counts = [0] * len(layers)
    for start in range(0, len(images), BATCH):
        outs = probe(images[start:start + BATCH].astype(np.float32), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for j, (layer, out) in enumerate(zip(layers, outs)):
            rows = _layer_rows(layer, out.numpy(), keras, tf)
            keep = max(1, MAX_ROWS * len(out) // len(images))  # this batch's share of MAX_ROWS
            if rows.shape[0] > keep:  # a seeded subsample of positions: H of early layers from 6400 per image
                rows = rows[rng.choice(rows.shape[0], keep, replace=False)]
            # float32 products within a batch (4x faster than float64; a few thousand rows), float64 sums across
            if rows.ndim == 3:
                r = np.ascontiguousarray(rows.transpose(2, 1, 0), dtype=np.float32)  # [C, k*k, N]
                prod = r @ r.transpose(0, 2, 1)
            else:
                r = np.ascontiguousarray(rows, dtype=np.float32)
                prod = r.T @ r
            sums[j] = sums[j] + prod.astype(np.float64)
            counts[j] += rows.shape[0]
    return [s / max(c, 1) for s, c in zip(sums, counts)]


def _round_layer(layer: Any, h: np.ndarray, keras: Any, damping: float) -> np.ndarray:
    """The layer's kernel with GPTQ-chosen levels, in Keras layout (on the converter's grid)."""
    kernel = layer.get_weights()[0]
    axes = _channel_axes(layer, keras)
    scale = channel_scales(kernel, axes)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, c, m = kernel.shape
        w = kernel.reshape(kh * kw, c * m).T  # rows: TFLite's channel c * m + j
        hh = np.repeat(h, m, axis=0)  # channel c's patches feed all m of its outputs
        q = gptq_round(w, hh, scale.reshape(-1), damping)
        return (q.T.reshape(kernel.shape) * scale).astype(kernel.dtype)
    w = kernel.reshape(-1, kernel.shape[-1]).T  # [cout, kh*kw*cin] in extract_patches' order
    q = gptq_round(w, h, scale.reshape(-1), damping)
    return (q.T.reshape(kernel.shape) * scale).astype(kernel.dtype)


def compensate_rounding(model: Any, images: np.ndarray, *, damping: float = DAMPING,
                        bias_correction: bool = True, log: Optional[Callable[[str], None]] = None
                        ) -> tuple[Any, dict[str, Any]]:
    """A flat copy of ``model`` whose conv/dense kernels lie on the int8 grid, rounded by GPTQ on ``images``;
    with ``bias_correction`` the biases then cancel the mean shift of that rounding (against the original kernels).

    Convert the copy as usual (:func:`edgecls.optimize.convert.convert_model`): its weights round to the chosen
    integers. Parity still compares with the original ``model``.
    """
    from edgecls.core.keras import keras
    from edgecls.optimize.int8.flat import flatten

    t0 = time.perf_counter()
    flat = flatten(model)  # a copy: its kernels are replaced in it only
    layers = _layers(flat, keras)
    moments = input_moments(flat, layers, images)
    rounded: dict[str, np.ndarray] = {}
    for layer, h in zip(layers, moments):
        rounded[layer.name] = _round_layer(layer, h, keras, damping)
        if log:
            log(f"gptq {layer.name}: {layer.get_weights()[0].size} weights")
    info: dict[str, Any] = {"layers": len(layers), "images": int(len(images)), "damping": damping}
    if bias_correction:
        from edgecls.optimize.int8.bias_correction import correct_biases

        flat, bc = correct_biases(flat, images, rounded=rounded)
        info["bias_correction"] = bc
    for layer in _layers(flat, keras):
        w = layer.get_weights()
        w[0] = rounded[layer.name]
        layer.set_weights(w)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    return flat, info


class GPTQ(Method):
    """PTQ of the kernels GPTQ rounded onto the converter's grid (errors compensated), bias-corrected on top."""

    name = "gptq"
    summary = "post-training quantization of GPTQ-rounded weights, bias-corrected"

    def build(self, ctx: Context) -> Optional[Built]:
        rounded, info = compensate_rounding(ctx.model, ctx.representative, bias_correction=True)
        return Built(ctx.convert(rounded), record={"gptq": {k: v for k, v in info.items() if k != "bias_correction"},
                                                   "bias_correction": info.get("bias_correction")})
