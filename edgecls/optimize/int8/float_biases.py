"""Ops kept in float in a bias-corrected int8 file get their original biases back.

Bias correction (:mod:`edgecls.optimize.int8.bias_correction`) shifts each layer's bias to cancel the
mean error that rounding *its* kernel to int8 causes. A selective int8 file keeps some ops in
float: their kernels are not rounded, so the correction is now an error of its own. On a real-photo
run (CIFAR-10 upscaled from 32 px) keeping MobileNetV2's first conv and first
depthwise conv in float took the bias-corrected file from 0.940 to 0.978 agreement with their
biases restored, and down to 0.892 without.

The correction is measured per layer from the float model's own inputs, so restoring one layer's
bias is exact. It is done in the calibrated model, the float TFLite graph the converter's quantize
step starts from, where each BatchNorm is already folded into its conv's bias, and the shift was
measured in the units of that op's output. So no re-calibration is needed, and an effect search can
try many float sets on one calibration.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

BIASED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
"""Ops whose third input is the (folded) bias."""


def corrected_layer(tensor: str, shifts: Mapping[str, np.ndarray]) -> Optional[str]:
    """The one bias-corrected Keras layer named in an op's output ``tensor``, or None (none, or an
    ambiguous name): the same rule for the calibrated file and for the Keras model."""
    from edgecls.optimize.int8.debugger import name_components

    layers = [n for n in name_components(tensor) if n in shifts]
    return layers[0] if len(layers) == 1 else None


def restore_biases(calibrated: bytes, float_tensors: Sequence[str], shifts: Mapping[str, np.ndarray]
                   ) -> tuple[bytes, list[str]]:
    """``calibrated`` with the bias-correction ``shifts`` added back to the ops that produce ``float_tensors``,
    and the layers restored. ``shifts`` maps a Keras layer name to what correction subtracted from it
    (:func:`edgecls.optimize.int8.bias_correction.corrected_with_shifts`); an op is matched by the layer names in
    its output tensor's name."""
    from edgecls.optimize import tflite_graph

    wanted = set(float_tensors)
    if not wanted or not shifts:
        return calibrated, []
    g = tflite_graph.read(calibrated)
    restored: list[str] = []
    for name, op in g.ops():
        if name not in BIASED_OPS or len(op.inputs) < 3:
            continue
        out = g.tensor_name(op.outputs[0])
        if out not in wanted:
            continue
        layer = corrected_layer(out, shifts)
        if layer is None:
            continue
        buffer = g.buffer(op.inputs[2])
        if g.graph.tensors[int(op.inputs[2])].type != tflite_graph.FLOAT32 or buffer is None or buffer.data is None:
            continue  # a bias must be a float constant here
        values = np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.float32)
        shift = np.asarray(shifts[layer], np.float32).reshape(-1)
        if values.shape != shift.shape:
            continue
        buffer.data = np.frombuffer((values + shift).tobytes(), dtype=np.uint8)
        restored.append(layer)
    if not restored:
        return calibrated, []
    return g.to_bytes(), restored


def restore_layer_biases(flat: Any, float_tensors: Sequence[str], shifts: Mapping[str, np.ndarray]
                         ) -> tuple[Any, list[str]]:
    """A copy of the bias-corrected Keras model ``flat`` whose layers inside ``float_tensors`` have their
    original biases back, and those layers: the model the final selective file is calibrated from, so
    that its ranges match what its float ops compute."""
    from edgecls.core.keras import keras

    copy = keras.models.clone_model(flat)
    copy.set_weights(flat.get_weights())
    names = sorted({n for n in (corrected_layer(t, shifts) for t in float_tensors) if n is not None})
    for name in names:
        layer = copy.get_layer(name)
        var = layer.beta if isinstance(layer, keras.layers.BatchNormalization) else layer.bias
        var.assign(var.numpy() + np.asarray(shifts[name], np.float32))
    return copy, names
