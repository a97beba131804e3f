"""TFLite conversion: a tf_keras model -> float32, float16, dynamic-range or full-int8 flatbuffer.

Full int8 calibrates on a stratified sample of the run's *training* split, decoded and resized
exactly as in training (``data.load_images``), fed as raw 0..255 float32 because the model has
its preprocessing inside. The first calibration image carries one black and one white pixel so
the input range is exactly 0..255: the uint8 input then has scale 1 / zero point 0 and camera
pixels go in unchanged. The backbone's own input scaling behind it gets exact ranges too, set from
that 0..255 rather than from calibration (``input_ranges.py``), so no grey levels are merged there.
"""

from __future__ import annotations

import re
import warnings as warnings_module
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from edgecls.core.config import EXPORT_MODES as MODES, IO_TYPES
from edgecls.core.errors import EdgeclsError
from edgecls.core.rundir import RunDir

INPUT_NAME = "image"


_OP_PATTERNS = (
    re.compile(r"'tfl?\.(\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"TF Select ops: ([\w, ]+)"),
    re.compile(r"[Qq]uantization (?:is )?not (?:yet )?supported for op:? '?(?:tfl?\.)?(\w+)"),
    re.compile(r"'tfl\.(\w+)' op (?:operand|result) #\d+ must be"),
    re.compile(r"failed to legalize operation '(?:tfl?\.)?(\w+)'"),
)


def ops_in_converter_error(message: str) -> list[str]:
    """Op names a TFLite converter error blames, in order, without duplicates."""
    found: list[str] = []
    for pat in _OP_PATTERNS:
        for m in pat.finditer(message):
            for name in m.group(1).split(","):
                name = name.strip()
                if name and name not in found:
                    found.append(name)
    return found


def representative_images(run: RunDir, size: int, n: int, seed: int) -> np.ndarray:
    """uint8 [n,S,S,3]: a stratified sample of the training split, decoded/resized as in training."""
    from edgecls import data

    root, split = data.load_split(run)
    train = split.get("train") or []
    if not train:
        raise EdgeclsError(f"{run.split_json} lists no training images to calibrate int8 on")
    items = data.stratified_sample(train, n, seed)
    images, _ = data.load_images(root, items, size)
    return images


def _representative(images: np.ndarray):
    def gen() -> Iterator[list[np.ndarray]]:
        for i, img in enumerate(images):
            x = img.astype(np.float32)
            if i == 0:  # pin the observed input range to exactly 0..255 (see module doc)
                x = x.copy()
                x[0, 0, :] = 0.0
                x[0, -1, :] = 255.0
            yield [x[None]]

    return gen


def convert_model(
    model: Any,
    mode: str,
    *,
    representative: Optional[np.ndarray] = None,
    io: str = "uint8",
    allow_float_fallback: bool = False,
) -> bytes:
    """TFLite flatbuffer of a tf_keras ``model``, batch 1.

    ``TFLiteConverter.from_keras_model`` works with tf_keras models under TF 2.21 but first
    exports a SavedModel: 18-35 s for MobileNetV2 0.35 at 64 px on 2 busy cores. A traced
    concrete function converted without that detour (``experimental_lower_to_saved_model =
    False``) gives the same graph in about 1 s.
    """
    from edgecls.core.keras import quiet_native_stderr

    if mode not in MODES:
        raise EdgeclsError(f"unknown export mode {mode!r}; use one of {', '.join(MODES)}")
    conv = make_converter(model, mode, representative=representative, allow_float_fallback=allow_float_fallback)
    # Full int8 is calibrated, then quantized by the converter's own step (what convert() does
    # inside), so that the input scaling's ranges can be made exact in between (input_ranges.py).
    staged = mode == "int8"
    conv._experimental_calibrate_only = staged
    try:
        with quiet_native_stderr(), warnings_module.catch_warnings():
            # Our inputs carry their own range (0-255, pinned by calibration), so the converter's
            # "statistics for quantized inputs were expected" warning does not apply.
            warnings_module.filterwarnings("ignore", message="Statistics for quantized inputs")
            out = bytes(conv.convert())
            return quantize_calibrated(out, io=io) if staged else out
    except Exception as e:  # noqa: BLE001 - ConverterError and friends
        raise EdgeclsError(_conversion_error(str(e), mode, allow_float_fallback)) from None


def calibrate(model: Any, representative: np.ndarray) -> bytes:
    """``model`` as a float TFLite graph carrying each tensor's range observed on ``representative`` (the
    converter's calibration alone): what :func:`quantize_calibrated` turns into int8, after edits in between."""
    from edgecls.core.keras import quiet_native_stderr

    conv = make_converter(model, "int8", representative=representative)
    conv._experimental_calibrate_only = True
    try:
        with quiet_native_stderr(), warnings_module.catch_warnings():
            warnings_module.filterwarnings("ignore", message="Statistics for quantized inputs")
            return bytes(conv.convert())
    except Exception as e:  # noqa: BLE001 - ConverterError and friends
        raise EdgeclsError(_conversion_error(str(e), "int8", False)) from None


def quantize_calibrated(calibrated: bytes, *, io: str = "uint8", float_tensors: Sequence[str] = ()) -> bytes:
    """The converter's quantize step on a calibrated model, the input scaling's ranges made exact
    first; ``float_tensors`` stay float (selective int8). Input/output types: ``io`` (:data:`IO_TYPES`)."""
    from edgecls.core.keras import quiet_native_stderr, tf
    from edgecls.optimize.input_ranges import pin_input_scaling
    from tensorflow.lite.python import convert as tfl_convert  # the converter's own quantize step

    types = {"uint8": (tf.uint8, tf.uint8), "int8": (tf.int8, tf.int8), "uint8-float32": (tf.uint8, tf.float32)}
    if io not in types:
        raise EdgeclsError(f"--io must be one of {', '.join(IO_TYPES)}, got {io!r}")
    floats = list(float_tensors)
    if io == "uint8-float32":
        floats += head_outputs(calibrated)  # the quantizer then dequantizes the pooled features in front of it
    pinned, _ = pin_input_scaling(calibrated)
    with quiet_native_stderr():
        return bytes(tfl_convert.mlir_quantize(pinned, input_data_type=types[io][0], output_data_type=types[io][1],
                                               denylisted_nodes=floats))


def head_outputs(tflite: bytes) -> list[str]:
    """The classifier head's output tensors in a TFLite graph: each SOFTMAX and the op that makes its logits.
    Kept float, the logits and the probabilities are not rounded to 8 bits, so classes closer than one
    step stay apart."""
    from edgecls.optimize import tflite_graph

    g = tflite_graph.read(tflite)
    made_by = {int(op.outputs[0]): op for _, op in g.ops() if len(op.outputs)}
    names = []
    for name, op in g.ops():
        if name == "SOFTMAX":
            logits = made_by.get(int(op.inputs[0]))
            if logits is not None:
                names.append(g.tensor_name(logits.outputs[0]))
            names.append(g.tensor_name(op.outputs[0]))
    return names


def make_converter(
    model: Any,
    mode: str,
    *,
    representative: Optional[np.ndarray] = None,
    allow_float_fallback: bool = False,
) -> Any:
    """A configured ``TFLiteConverter`` for ``model`` (shared by export and the quantization debugger)."""
    from edgecls.core.keras import tf

    shape = [1, *[int(d) for d in model.input_shape[1:]]]
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32, name=INPUT_NAME))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    conv.experimental_lower_to_saved_model = False
    if mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if representative is None or len(representative) == 0:
            raise EdgeclsError("int8 export needs representative images")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(representative)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if allow_float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        conv.target_spec.supported_ops = ops
        # Conversion stops after calibration and quantize_calibrated sets the file's in/out types; the
        # quantization debugger, which quantizes itself, compares on uint8 in/out as the default file has.
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return conv


def _conversion_error(message: str, mode: str, allow_float_fallback: bool) -> str:
    ops = ops_in_converter_error(message)
    named = ", ".join(ops) if ops else "unknown (see the converter log above)"
    if "flex" in message.lower() or "TF Select" in message:
        return (
            f"{mode} conversion failed: op(s) {named} have no TFLite builtin kernel (they need TensorFlow "
            "'Flex' ops, which the device runtime does not ship); remove them from the model"
        )
    if mode == "int8" and not allow_float_fallback:
        return (
            f"int8 conversion failed: op(s) {named} cannot be quantized to int8; pass --allow-float-fallback "
            "to keep them in float32 (a mixed model), or use a backbone that quantizes fully (mobilenet_v2)"
        )
    first = message.strip().splitlines()[0] if message.strip() else "no message"
    return f"{mode} conversion failed (op(s): {named}): {first}"
