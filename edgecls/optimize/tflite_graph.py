"""Reading and editing a TFLite model's graph between calibration and quantization.

The converter can stop after calibration (a float graph carrying each tensor's observed range) and
quantize later. Export edits that calibrated graph in between: exact ranges for the input scaling
(:mod:`edgecls.optimize.input_ranges`) and original biases for ops kept float
(:mod:`edgecls.optimize.float_biases`); selective float reads which op feeds which
(:mod:`edgecls.optimize.qdebug`). This module is the one place that opens the flatbuffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

FLOAT32 = 0
"""TensorType FLOAT32 in the TFLite schema."""


@dataclass
class Graph:
    """A TFLite model as mutable objects (TF's flatbuffer_utils), its first subgraph, and op names."""

    model: Any
    graph: Any
    _op_names: dict[int, str]

    def op_name(self, op: Any) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        return self._op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")

    def tensor_name(self, index: int) -> str:
        name = self.graph.tensors[int(index)].name
        return name.decode() if isinstance(name, bytes) else str(name)

    def ops(self) -> Iterator[tuple[str, Any]]:
        """(op name, op) in execution order."""
        for op in self.graph.operators:
            yield self.op_name(op), op

    def buffer(self, index: int) -> Any:
        """The buffer of tensor ``index`` (its ``data`` is None or empty for a non-constant)."""
        tensor = self.graph.tensors[int(index)]
        return self.model.buffers[tensor.buffer] if tensor.buffer < len(self.model.buffers) else None

    def to_bytes(self) -> bytes:
        from tensorflow.lite.tools import flatbuffer_utils

        return bytes(flatbuffer_utils.convert_object_to_bytearray(self.model))


def read(tflite: bytes) -> Graph:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return Graph(model, model.subgraphs[0], names)
