"""Exact int8 ranges for the backbone's own input scaling.

Every backbone scales its 0..255 input inside the model (MobileNetV2: ``Rescaling(1/127.5,
offset=-1)``, a MUL then an ADD in the TFLite graph). Calibration gives those tensors ranges from
what it observed, and TF 2.21's calibrator records the MUL's output as [-1, 2] where it can only be
[0, 2]: scale 3/255, so the 256 pixel values land on 171 codes, a staircase of 1.5 grey levels in
front of the first conv. Harmless on noisy images; on blurry real photos it alone cost 3 points of
int8-vs-float agreement (docs/export.md, "What int8 costs").

Those tensors need no statistics: from the input through element-wise ops with constant operands
(MUL, ADD, SUB, DIV), each one's range follows exactly from its input's. :func:`pin_input_scaling`
computes them from the input's 0..255 and writes them over the calibrated ones, before the
converter's own quantize step. With MobileNetV2's scaling the 256 pixel values then reach the first
conv as 255 codes in order (its output (p - 127.5) / 127.5 never hits 0, which an int8 grid must
hold, so the two values at one end share a code).
"""

from __future__ import annotations

from typing import Any

import numpy as np

INPUT_RANGE = (0.0, 255.0)
"""What the exported models' input holds: raw pixels (export pins calibration to it, convert.py)."""


def pin_input_scaling(calibrated: bytes, input_range: tuple[float, float] = INPUT_RANGE
                      ) -> tuple[bytes, list[dict[str, Any]]]:
    """``calibrated`` (a calibrate-only TFLite model) with exact ranges on the input's scaling chain,
    and what changed: [{"tensor", "calibrated": [lo, hi], "exact": [lo, hi]}]."""
    from edgecls.optimize import tflite_graph

    g = tflite_graph.read(calibrated)
    graph = g.graph
    ranges: dict[int, tuple[float, float]] = {int(graph.inputs[0]): input_range}
    changed: list[dict[str, Any]] = []
    for name, op in g.ops():  # in execution order
        if name not in ("MUL", "ADD", "SUB", "DIV") or len(op.inputs) != 2:
            continue
        if getattr(op.builtinOptions, "fusedActivationFunction", 0):
            continue  # a clipped op is no longer an exact affine map of its input
        known = [i for i in op.inputs if int(i) in ranges]
        constant = [i for i in op.inputs if _constant(g, i) is not None]
        if len(known) != 1 or len(constant) != 1:
            continue
        lo, hi = ranges[int(known[0])]
        c = _constant(g, constant[0])
        x_first = int(op.inputs[0]) == int(known[0])
        ends = np.concatenate([_apply(name, lo, c, x_first).ravel(), _apply(name, hi, c, x_first).ravel()])
        if not np.all(np.isfinite(ends)):
            continue
        out = int(op.outputs[0])
        ranges[out] = (float(ends.min()), float(ends.max()))
        q = graph.tensors[out].quantization
        if q is None or q.min is None or q.max is None or len(q.min) != 1:
            continue
        old = [float(q.min[0]), float(q.max[0])]
        new = [min(ranges[out][0], 0.0), max(ranges[out][1], 0.0)]  # an int8 range always holds 0
        if not np.allclose(old, new, rtol=0, atol=1e-6):
            q.min, q.max = np.array([new[0]], np.float32), np.array([new[1]], np.float32)
            changed.append({"tensor": g.tensor_name(out), "calibrated": old, "exact": new})
    if not changed:
        return calibrated, []
    return g.to_bytes(), changed


def _constant(g: Any, index: int) -> np.ndarray | None:
    """A float32 constant operand's values, or None."""
    from edgecls.optimize.tflite_graph import FLOAT32

    buffer = g.buffer(index)
    data = buffer.data if buffer is not None else None
    if data is None or len(data) == 0 or g.graph.tensors[int(index)].type != FLOAT32:
        return None
    return np.frombuffer(bytes(bytearray(data)), dtype=np.float32)


def _apply(name: str, x: float, c: np.ndarray, x_first: bool) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "MUL":
            return x * c
        if name == "ADD":
            return x + c
        if name == "SUB":
            return x - c if x_first else c - x
        return x / c if x_first else c / x
