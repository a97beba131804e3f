"""Checks on a converted .tflite: it loads in the device runtime and its types are as promised.

The converter does not always refuse an op it cannot quantize: TF 2.21 with
``supported_ops=[TFLITE_BUILTINS_INT8]`` quietly wraps e.g. SIN in DEQUANTIZE/QUANTIZE and
runs it in float32. So a "full int8" promise is checked on the file itself: every tensor is
walked and any float32 one is named, with the ops that produce float outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls.core.errors import EdgeclsError

# Ops that legitimately move between float and integer at a model's edges.
_EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}
IO_DTYPES = {"uint8": ("uint8", "uint8"), "int8": ("int8", "int8"), "uint8-float32": ("uint8", "float32")}
"""(input, output) tensor types of an int8 file, by ``--io``."""
FLOAT_OUTPUT_OPS = ("FULLY_CONNECTED", "SOFTMAX")
"""Ops that compute in float in a file with a float32 output: the classifier head, from dequantized features."""


@dataclass
class TensorQuant:
    dtype: str
    shape: list[int]
    scale: float
    zero_point: int


@dataclass
class TfliteInfo:
    """What a .tflite file holds, as the device runtime sees it."""

    runtime: str
    input: TensorQuant
    output: TensorQuant
    ops: list[str]
    float_tensors: list[str] = field(default_factory=list)
    """float32 tensors that are neither the model's input nor its output."""
    float_ops: list[str] = field(default_factory=list)
    """Op types (other than QUANTIZE/DEQUANTIZE) that produce a float32 tensor."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quant(d: dict) -> TensorQuant:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorQuant(np.dtype(d["dtype"]).name, [int(v) for v in d["shape"]], float(scale), int(zp))


def inspect_tflite(path: str | Path) -> TfliteInfo:
    """Load ``path`` with the device runtime (EdgeclsError if it cannot) and list its tensor types."""
    from edgecls.runtime.interpreter import load_interpreter

    interp, runtime = load_interpreter(path, num_threads=1)
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise EdgeclsError(f"{path}: expected one input and one output tensor, got {len(ins)} and {len(outs)}")
    io_index = {ins[0]["index"], outs[0]["index"]}
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    float_tensors = sorted(
        d["name"] for i, d in tensors.items() if i not in io_index and np.dtype(d["dtype"]) == np.float32
    )
    ops: set[str] = set()
    float_ops: set[str] = set()
    get_ops = getattr(interp, "_get_ops_details", None)  # private but present in LiteRT and tf.lite
    for op in get_ops() if get_ops else []:
        name = str(op.get("op_name", "?"))
        ops.add(name)
        outputs = [int(i) for i in op.get("outputs", []) if int(i) in tensors]
        if name not in _EDGE_OPS and any(np.dtype(tensors[i]["dtype"]) == np.float32 for i in outputs):
            float_ops.add(name)
    ops.discard("DELEGATE")  # XNNPACK's fused partitions, not model ops
    float_ops.discard("DELEGATE")
    return TfliteInfo(runtime, _quant(ins[0]), _quant(outs[0]), sorted(ops), float_tensors, sorted(float_ops))


def check_tflite(
    info: TfliteInfo,
    *,
    mode: str,
    size: int,
    io: str = "uint8",
    allow_float_fallback: bool = False,
    path: Optional[str] = None,
) -> list[str]:
    """Raise EdgeclsError when the file breaks a promise; return warnings for softer problems."""
    where = f"{path}: " if path else ""
    warnings: list[str] = []
    shape = info.input.shape
    if len(shape) != 4 or shape[1] != size or shape[2] != size or shape[3] != 3:
        raise EdgeclsError(f"{where}model input is {shape}, expected [1, {size}, {size}, 3] (the run's size)")
    if mode != "int8":
        if info.input.dtype != "float32" or info.output.dtype != "float32":
            raise EdgeclsError(
                f"{where}{mode} model should take and give float32, got {info.input.dtype} -> {info.output.dtype}"
            )
        return warnings
    want_in, want_out = IO_DTYPES[io]
    if info.input.dtype != want_in or info.output.dtype != want_out:
        raise EdgeclsError(f"{where}int8 model should have {want_in} input and {want_out} output, got "
                           f"{info.input.dtype} -> {info.output.dtype}")
    # With a float output, the classifier head computes in float: those float tensors are the promise.
    unexpected = [op for op in info.float_ops if not (want_out == "float32" and op in FLOAT_OUTPUT_OPS)]
    if not unexpected and info.float_tensors and want_out != "float32":
        unexpected = ["unknown ops"]
    if unexpected:
        named = ", ".join(info.float_tensors[:5]) + (" ..." if len(info.float_tensors) > 5 else "")
        ops = ", ".join(unexpected)
        if not allow_float_fallback:
            raise EdgeclsError(
                f"{where}the full-int8 model still computes in float32: op(s) {ops} have no int8 kernel "
                f"(float tensors: {named}); pass --allow-float-fallback to accept a mixed model, "
                "or use a backbone without these ops (mobilenet_v2)"
            )
        warnings.append(f"mixed model: op(s) {ops} run in float32 between QUANTIZE/DEQUANTIZE (--allow-float-fallback)")
    # Raw 0..255 pixels map 1:1 onto uint8 only with scale 1, zero point 0 (-128 for int8 I/O).
    want_zp = 0 if want_in == "uint8" else -128
    if abs(info.input.scale - 1.0) > 1e-6 or info.input.zero_point != want_zp:
        warnings.append(
            f"input quantization is scale {info.input.scale:g}, zero point {info.input.zero_point} "
            f"(expected 1, {want_zp}): camera pixels are requantized before inference"
        )
    return warnings
