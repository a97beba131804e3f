"""Where int8 error comes from: per-tensor quantization error with TF's QuantizationDebugger,
and the graph facts selective float needs (which op feeds which, the stem, names across calibrations).

For every quantized tensor the debugger runs the float op and the int8 op on the same
(quantized) input and records the difference. ``rmse/scale`` is that difference's RMS in units
of the tensor's quantization step: pure rounding of a uniformly spread value gives
1/sqrt(12) ~= 0.29, so a tensor far above that loses information beyond rounding (a clipped
range, a few huge outliers in a depthwise kernel, ...). It says where int8 rounds badly, not
what that does to the answer: selective float nominates by it and decides by effect
(:mod:`edgecls.optimize.int8.float_search`).

:class:`Diagnosis` keeps the calibrated model, so a *selective* model (the named tensors left
in float, still uint8 in/out) is one quantize step away, with the same calibration.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from edgecls.core.errors import EdgeclsError

if TYPE_CHECKING:
    from edgecls.optimize.int8.method import Context

ROUNDING_NOISE = 1.0 / math.sqrt(12.0)
"""rmse/scale of pure rounding (uniform error over one quantization step)."""
DEBUG_IMAGES = 64
"""Images the debugger runs (it invokes an instrumented model per image: cost grows with N)."""
WORST_SHOWN = 5


@dataclass
class LayerError:
    """Quantization error of one tensor (the output of one op)."""

    tensor: str
    op: str
    rmse_scale: float
    scale: float
    max_abs_error: float

    def as_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "op": self.op, "rmse_scale": round(self.rmse_scale, 4),
                "scale": self.scale, "max_abs_error": round(self.max_abs_error, 6)}


@dataclass
class Diagnosis:
    """Per-tensor errors (worst first) and the calibrated model they were measured on."""

    layers: list[LayerError]
    calibrated: bytes
    denylisted: list[str]

    def worst(self, n: int = WORST_SHOWN) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.layers[:n]]

    def summary(self, n: int = WORST_SHOWN) -> dict[str, Any]:
        """What parity reports: the worst tensors and the noise floor they compare with."""
        return {
            "worst": self.worst(n),
            "n_tensors": len(self.layers),
            "rounding_noise": round(ROUNDING_NOISE, 4),
            "float_layers": list(self.denylisted),
        }


def _gen(images: np.ndarray):
    def gen():
        for img in images:
            yield [np.asarray(img, dtype=np.float32)[None]]

    return gen


def diagnose(
    model: Any, representative: np.ndarray, debug_images: np.ndarray, *, denylisted: Sequence[str] = ()
) -> Diagnosis:
    """Calibrate ``model`` on ``representative`` as export does, then measure every int8 tensor's
    error on ``debug_images`` (uint8 or float [N,H,W,3], 0..255). ``denylisted`` tensors stay float
    and are not measured (a selective model's own figures)."""
    from edgecls.core.keras import quiet_native_stderr, tf
    from edgecls.optimize.convert import make_converter

    if len(debug_images) == 0:
        raise EdgeclsError("the quantization debugger needs at least one image")
    conv = make_converter(model, "int8", representative=representative)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(denylisted) or None)
    try:
        with quiet_native_stderr():
            dbg = tf.lite.experimental.QuantizationDebugger(
                converter=conv, debug_dataset=_gen(debug_images[:DEBUG_IMAGES]), debug_options=options)
            dbg.run()
    except Exception as e:  # noqa: BLE001 - the debugger raises ValueError/RuntimeError of many kinds
        raise EdgeclsError(f"the quantization debugger failed: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from None
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    layers = []
    for row in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(row["scale"])
        rmse = math.sqrt(max(float(row["mean_squared_error"]), 0.0))
        layers.append(LayerError(tensor=row["tensor_name"], op=row["op_name"],
                                 rmse_scale=rmse / scale if scale > 0 else float("inf"),
                                 scale=scale, max_abs_error=float(row["max_abs_error"])))
    layers.sort(key=lambda e: -e.rmse_scale)
    return Diagnosis(layers=layers, calibrated=bytes(dbg.calibrated_model), denylisted=list(denylisted))


def ptq_diagnosis(ctx: "Context") -> Diagnosis:
    """The debugger's per-tensor error of the context's plain PTQ calibration (made on first use)."""
    return ctx.shared("diagnosis", lambda: diagnose(ctx.model, ctx.representative, ctx.representative[:DEBUG_IMAGES]))


def name_components(tensor: str) -> set[str]:
    """The parts of a TFLite tensor name: the Keras layer names (and op names) it was made from."""
    return {p for p in re.split(r"[/;]", tensor) if p}


def resolve_float_layers(names: Sequence[str], layers: Sequence[LayerError]) -> list[str]:
    """Map user names (a tensor name, or a Keras layer name such as ``block_1_depthwise``) to tensors."""
    chosen: list[str] = []
    for name in names:
        hits = [e.tensor for e in layers if e.tensor == name or name in name_components(e.tensor)]
        if not hits:
            known = ", ".join(e.tensor.split(";")[0].split("/")[-2] if "/" in e.tensor else e.tensor
                              for e in layers[:WORST_SHOWN])
            raise EdgeclsError(
                f"--float-layers: no quantized tensor is named {name!r}; the worst layers are: {known} "
                "(see parity_int8.json 'quant_error' for full names)"
            )
        chosen += [h for h in hits if h not in chosen]
    return chosen


def producers(calibrated: bytes) -> dict[str, str]:
    """{op output tensor: the tensor its first input comes from} in a calibrated model.

    A tensor stays float only when the op making it *and* the op reading it are float; this is how
    selective float finds the op before one (:func:`edgecls.optimize.int8.float_search.candidates`)."""
    from edgecls.optimize import tflite_graph

    g = tflite_graph.read(calibrated)
    return {g.tensor_name(op.outputs[0]): g.tensor_name(op.inputs[0]) for _, op in g.ops()
            if len(op.inputs) and len(op.outputs) and int(op.inputs[0]) >= 0}


def same_tensors(names: Sequence[str], calibrated: bytes, other: bytes) -> list[str]:
    """``names`` (op outputs in ``calibrated``) as named in ``other``, a calibration of a copy of the same
    model. The converter names a conv with its BatchNorm folded in partly after the folded constants, and a
    copy's constants can be named differently: EfficientNet's stem conv output is
    ``.../stem_bn/FusedBatchNormV3;.../stem_conv/Conv2D;.../stem_bn/ReadVariableOp_1/resource;...`` in the
    bias-corrected model and ``.../stem_conv/Conv2D;...`` in its restored copy, and a float list made for
    one named nothing in the other (the convs were quantized). The ops come in the same order in both."""
    from edgecls.optimize import tflite_graph

    a, b = tflite_graph.read(calibrated), tflite_graph.read(other)
    ops_a, ops_b = list(a.ops()), list(b.ops())
    if [n for n, _ in ops_a] != [n for n, _ in ops_b]:
        raise EdgeclsError("selective float: the model calibrated again has other ops than the one the float "
                           "tensors were chosen on; export with --float-layers none")
    index = {a.tensor_name(out): (i, k) for i, (_, op) in enumerate(ops_a) for k, out in enumerate(op.outputs)}
    missing = [t for t in names if t not in index]
    if missing:
        raise EdgeclsError(f"selective float: no op makes tensor {missing[0]!r}")
    return [b.tensor_name(ops_b[index[t][0]][1].outputs[index[t][1]]) for t in names]


SPATIAL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
STEM_SEARCH_TENSORS = 12
"""How far (in tensors) the stem search looks past the first conv for the next one."""


def stem_tensors(calibrated: bytes) -> list[str]:
    """The stem: the first conv's output, the output of the next conv reading it, and every tensor on
    the way between them, when all are quantized tensors. Kept float together, the first conv's
    activated output (the feature maps the first depthwise conv takes differences of) is not rounded
    to 8 bits. The way between differs by backbone: nothing (MobileNetV2's ReLU6 is fused into the
    conv), one HARD_SWISH (MobileNetV3), LOGISTIC and MUL (EfficientNet's swish). A branch that does
    not lead to that next conv (MobileNetV3-Large's first residual ADD) is not part of it.
    [] when there is no such stem."""
    from edgecls.optimize import tflite_graph

    g = tflite_graph.read(calibrated)
    ops = list(g.ops())
    first = next((op for name, op in ops if name == "CONV_2D"), None)
    if first is None:
        return []
    readers: dict[int, list[tuple[str, Any]]] = {}
    for name, op in ops:
        for t in op.inputs:
            if int(t) >= 0:
                readers.setdefault(int(t), []).append((name, op))
    start = int(first.outputs[0])
    made_by: dict[int, list[int]] = {start: []}  # reached tensor -> the op's inputs it was made from
    frontier, target = [start], None
    while frontier and target is None and len(made_by) <= STEM_SEARCH_TENSORS:
        for name, op in readers.get(frontier.pop(0), []):
            out = int(op.outputs[0])
            if out in made_by:
                continue
            made_by[out] = [int(t) for t in op.inputs if int(t) >= 0]
            if name in SPATIAL_OPS:
                target = out  # breadth first: the nearest conv reading the stem
                break
            frontier.append(out)
    if target is None:
        return []
    on_way, todo = set(), [target]  # the reached tensors the target is computed from
    while todo:
        t = todo.pop()
        if t not in on_way:
            on_way.add(t)
            todo.extend(s for s in made_by[t] if s in made_by)
    names = [t for t in made_by if t in on_way]
    # Each must be a tensor calibration measured (a quantizable op's output), or int8 would not round it.
    if not all(_calibrated(g.graph.tensors[t]) for t in names):
        return []
    return [g.tensor_name(t) for t in names]


def _calibrated(tensor: Any) -> bool:
    q = tensor.quantization
    return q is not None and q.min is not None and q.max is not None and len(q.min) > 0


def selective_int8(calibrated: bytes, float_tensors: Sequence[str], *, io: str = "uint8") -> bytes:
    """Quantize a calibrated model with ``float_tensors`` left in float; input/output stay ``io``."""
    from edgecls.optimize.convert import quantize_calibrated

    try:
        return quantize_calibrated(calibrated, io=io, float_tensors=float_tensors)
    except Exception as e:  # noqa: BLE001
        raise EdgeclsError(f"selective int8 quantization failed: {str(e).strip()[:300]}") from None


def format_quant_error(summary: Optional[dict[str, Any]]) -> list[str]:
    """Table lines of the worst tensors (for the parity table)."""
    if not summary:
        return []
    lines = [f"  worst int8 tensors (rmse/scale; pure rounding gives {summary['rounding_noise']:.2f}):"]
    for e in summary["worst"]:
        short = e["tensor"].split(";")[0]
        if len(short) > 60:
            short = "..." + short[-57:]
        lines.append(f"    {e['rmse_scale']:>6.3f}  {e['op']:<18} {short}")
    if summary.get("float_layers"):
        lines.append(f"  kept in float: {len(summary['float_layers'])} tensor(s)")
    return lines
