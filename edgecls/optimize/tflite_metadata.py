"""TFLite model metadata as flatbuffers, hand-written with the ``flatbuffers`` Builder API.

Only the tables an image classifier needs, from two published schemas:

- ``metadata_schema.fbs`` (tensorflow/tflite-support ``tensorflow_lite_support/metadata/``, the same
  file mediapipe wheels ship as ``mediapipe/tasks/metadata/metadata_schema.fbs``, schema 1.5.0),
  file identifier ``M001``: ModelMetadata -> SubGraphMetadata -> TensorMetadata, with Content
  (ImageProperties / FeatureProperties), ProcessUnit(NormalizationOptions), Stats, AssociatedFile.
- TFLite's ``schema.fbs``, file identifier ``TFL3``: ``Model.metadata: [Metadata{name, buffer}]``
  where ``buffer`` indexes ``Model.buffers: [Buffer{data: [ubyte] (force_align: 16)}]``.

The slot numbers below are the fields' positions in those tables (a union takes two slots: its
type byte, then its value), which is all flatbuffers needs to stay compatible.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional, Sequence

from edgecls.core.errors import EdgeclsError

MODEL_IDENTIFIER = b"TFL3"
METADATA_IDENTIFIER = b"M001"
# The name MediaPipe Tasks and the TFLite Support library look for in Model.metadata.
METADATA_NAME = "TFLITE_METADATA"
# Every field written here exists since schema 1.0.0 (the history in metadata_schema.fbs starts
# at 1.0.1 with VOCABULARY files); readers refuse a buffer whose version is above theirs, so
# claiming no more than needed keeps old parsers working.
MIN_PARSER_VERSION = "1.0.0"

# metadata_schema.fbs enums (byte-sized)
ASSOCIATED_FILE_TENSOR_AXIS_LABELS = 2
COLOR_SPACE_RGB = 1
CONTENT_FEATURE_PROPERTIES = 1
CONTENT_IMAGE_PROPERTIES = 2
PROCESS_UNIT_NORMALIZATION = 1
PROCESS_UNIT_SCORE_THRESHOLDING = 3

# schema.fbs Model fields: slot 0 is `version: uint`, every later one an offset to a table or
# vector (operator_codes, subgraphs, description, buffers, metadata_buffer, metadata,
# signature_defs, external_buffer_groups, external_buffers).
_MODEL_SLOTS = 10
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_BUFFER_OFFSET = 1  # Buffer.offset: data stored outside the flatbuffer (models over 2 GB)
_BUFFER_DATA_ALIGN = 16  # Buffer.data is force_align: 16 (weights are read in place)


class MetadataUnavailable(EdgeclsError):
    """Metadata cannot be added to this model (export goes on without it and says why)."""


@dataclass(frozen=True)
class ImageClassifierMetadata:
    """What a standard image-classifier reader needs: input normalisation and the labels file."""

    name: str
    description: str
    labels_file: str
    num_labels: int
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    version: str = ""
    author: str = ""
    score_threshold: Optional[float] = None
    """The output's default score threshold (ScoreThresholdingOptions): MediaPipe Tasks and the Task Library
    report no class scoring under it. None: not written."""


def _builder():
    try:
        import flatbuffers
    except ImportError as e:  # declared by the [train] extra (and by TensorFlow)
        raise MetadataUnavailable(f"the flatbuffers package is not importable ({e})") from None
    return flatbuffers.Builder(1024)


def _floats(b, values: Sequence[float]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _offsets(b, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _strings(b, **fields: str) -> dict[str, int]:
    return {k: b.CreateString(v) for k, v in fields.items() if v}


def _table(b, num_slots: int, offsets: dict[int, int], bytes_: Optional[dict[int, int]] = None) -> int:
    """A table with offset fields ``{slot: offset}`` and byte fields ``{slot: value}``."""
    b.StartObject(num_slots)
    for slot, off in offsets.items():
        if off:
            b.PrependUOffsetTRelativeSlot(slot, off, 0)
    for slot, value in (bytes_ or {}).items():
        b.PrependUint8Slot(slot, value, 0)
    return b.EndObject()


def image_classifier_metadata(md: ImageClassifierMetadata) -> bytes:
    """A ``ModelMetadata`` flatbuffer (identifier M001) for one image input and one score output."""
    if len(md.mean) != len(md.std) or len(md.mean) not in (1, 3):
        raise EdgeclsError(f"normalisation needs 1 or 3 means and as many stds, got {list(md.mean)} / {list(md.std)}")
    if any(s == 0 for s in md.std):
        raise EdgeclsError("normalisation std must not be 0")
    b = _builder()

    # Input: an RGB image, normalised as (pixel - mean) / std by readers that feed float32.
    s = _strings(b, name="image", description="Input image to be classified (RGB).")
    image_props = _table(b, 2, {}, {0: COLOR_SPACE_RGB})  # ImageProperties{color_space}
    content_in = _table(b, 3, {1: image_props}, {0: CONTENT_IMAGE_PROPERTIES})  # Content{type, props}
    norm = _table(b, 2, {0: _floats(b, md.mean), 1: _floats(b, md.std)})  # NormalizationOptions
    unit = _table(b, 2, {1: norm}, {0: PROCESS_UNIT_NORMALIZATION})  # ProcessUnit{type, options}
    # TensorMetadata: name 0, description 1, dimension_names 2, content 3, process_units 4, stats 5, files 6
    tensor_in = _table(b, 7, {0: s["name"], 1: s["description"], 3: content_in, 4: _offsets(b, [unit])})

    # Output: one score per label; the labels file names the axis (TENSOR_AXIS_LABELS).
    s = _strings(b, name="probability", description=f"Probabilities of the {md.num_labels} labels respectively.",
                 file=md.labels_file, file_description="Labels for objects that the model can recognize.")
    b.StartObject(5)  # AssociatedFile: name 0, description 1, type 2, locale 3, version 4
    b.PrependUOffsetTRelativeSlot(0, s["file"], 0)
    b.PrependUOffsetTRelativeSlot(1, s["file_description"], 0)
    b.PrependInt8Slot(2, ASSOCIATED_FILE_TENSOR_AXIS_LABELS, 0)
    label_file = b.EndObject()
    feature_props = _table(b, 0, {})
    content_out = _table(b, 3, {1: feature_props}, {0: CONTENT_FEATURE_PROPERTIES})
    stats = _table(b, 2, {0: _floats(b, [1.0]), 1: _floats(b, [0.0])})  # Stats{max, min}: probabilities
    units = {}
    if md.score_threshold is not None:
        b.StartObject(1)  # ScoreThresholdingOptions{global_score_threshold}
        b.PrependFloat32Slot(0, float(md.score_threshold), 0.0)
        threshold = b.EndObject()
        units = {4: _offsets(b, [_table(b, 2, {1: threshold}, {0: PROCESS_UNIT_SCORE_THRESHOLDING})])}
    tensor_out = _table(b, 7, {0: s["name"], 1: s["description"], 3: content_out, 5: stats,
                               6: _offsets(b, [label_file]), **units})

    # SubGraphMetadata: name 0, description 1, input_tensor_metadata 2, output_tensor_metadata 3 (of 10)
    subgraph = _table(b, 10, {2: _offsets(b, [tensor_in]), 3: _offsets(b, [tensor_out])})
    s = _strings(b, name=md.name, description=md.description, version=md.version, author=md.author,
                 min_parser_version=MIN_PARSER_VERSION)
    # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5,
    # associated_files 6, min_parser_version 7
    root = _table(b, 8, {0: s.get("name", 0), 1: s.get("description", 0), 2: s.get("version", 0),
                         3: _offsets(b, [subgraph]), 4: s.get("author", 0), 7: s["min_parser_version"]})
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


# -- reading and extending a TFLite Model flatbuffer -----------------------------------------------
class _Table:
    """The few reads a flatbuffer table needs: where a field is, and what an offset field points at."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_bytes = struct.unpack_from("<H", buf, self.vtable)[0]

    @property
    def num_slots(self) -> int:
        return (self.vtable_bytes - 4) // 2

    def field(self, slot: int) -> int:
        """Absolute position of the field's value, 0 when it is absent."""
        at = 4 + 2 * slot
        if at >= self.vtable_bytes:
            return 0
        rel = struct.unpack_from("<H", self.buf, self.vtable + at)[0]
        return self.pos + rel if rel else 0

    def target(self, slot: int) -> int:
        """Absolute position of the table/vector/string an offset field refers to, 0 when absent."""
        at = self.field(slot)
        return at + struct.unpack_from("<I", self.buf, at)[0] if at else 0


def _vector_targets(buf: bytes, vec: int) -> list[int]:
    """Absolute positions of the tables a vector of offsets refers to."""
    if not vec:
        return []
    n = struct.unpack_from("<I", buf, vec)[0]
    return [vec + 4 + 4 * i + struct.unpack_from("<I", buf, vec + 4 + 4 * i)[0] for i in range(n)]


def _string(buf: bytes, pos: int) -> str:
    n = struct.unpack_from("<I", buf, pos)[0]
    return bytes(buf[pos + 4:pos + 4 + n]).decode("utf-8", errors="replace")


def _model_root(model: bytes) -> _Table:
    if len(model) < 8 or model[4:8] != MODEL_IDENTIFIER:
        raise MetadataUnavailable("not a TFLite model (no TFL3 flatbuffer identifier)")
    return _Table(model, struct.unpack_from("<I", model, 0)[0])


def model_metadata(model: bytes) -> dict[str, bytes]:
    """The model's ``Model.metadata`` entries: name -> the bytes of the buffer it names."""
    try:
        root = _model_root(model)
        buffers = _vector_targets(model, root.target(_MODEL_BUFFERS))
        out = {}
        for entry in _vector_targets(model, root.target(_MODEL_METADATA)):
            t = _Table(model, entry)  # Metadata: name 0, buffer 1 (uint index into Model.buffers)
            name = _string(model, t.target(0)) if t.field(0) else ""
            index = struct.unpack_from("<I", model, t.field(1))[0] if t.field(1) else 0
            data = _Table(model, buffers[index]).target(0)
            n = struct.unpack_from("<I", model, data)[0] if data else 0
            out[name] = bytes(model[data + 4:data + 4 + n]) if data else b""
        return out
    except (struct.error, IndexError) as e:
        raise MetadataUnavailable(f"the model's flatbuffer cannot be read ({e})") from None


def attach_model_metadata(model: bytes, name: str, data: bytes) -> bytes:
    """``model`` with one more ``Model.metadata`` entry ``name`` whose buffer holds ``data``.

    The model is not rebuilt: its bytes go unchanged at the end of the new flatbuffer, and a new
    root ``Model`` table in front of them refers into them (flatbuffer offsets are relative and
    point forward). Tensors, operators and weights stay byte-identical and 16-byte aligned; only
    the root table and its ``buffers`` and ``metadata`` vectors are new, and the old root stays
    behind as a few dozen unreferenced bytes.
    """
    model = bytes(model)
    if name in model_metadata(model):
        raise MetadataUnavailable(f"the model already has {name} metadata")
    try:
        root = _model_root(model)
        buffers = _vector_targets(model, root.target(_MODEL_BUFFERS))
        external = any(_Table(model, p).field(_BUFFER_OFFSET) for p in buffers)
        entries = _vector_targets(model, root.target(_MODEL_METADATA))
        copied = {slot: root.target(slot) for slot in range(1, _MODEL_SLOTS) if root.field(slot)}
        version = struct.unpack_from("<I", model, root.field(0))[0] if root.field(0) else 0
    except (struct.error, IndexError) as e:
        raise MetadataUnavailable(f"the model's flatbuffer cannot be read ({e})") from None
    if root.num_slots > _MODEL_SLOTS:
        raise MetadataUnavailable(f"the model uses {root.num_slots} Model fields, this writer knows {_MODEL_SLOTS}")
    if external:
        # Those buffers are addressed from the start of the file, which moves here.
        raise MetadataUnavailable("the model keeps weights outside its flatbuffer (over 2 GB)")

    b = _builder()
    # The old model first (it ends up last), its start 16-byte aligned like the original file.
    b.Prep(_BUFFER_DATA_ALIGN, len(model))
    b.head -= len(model)
    b.Bytes[b.head:b.head + len(model)] = model
    base = b.Offset()  # builder offset of model[0]; model[p] is at base - p

    b.StartVector(1, len(data), _BUFFER_DATA_ALIGN)
    b.head -= len(data)
    b.Bytes[b.head:b.head + len(data)] = data
    blob = b.EndVector()
    new_buffer = _table(b, 3, {0: blob})
    entry_name = b.CreateString(name)
    b.StartObject(2)
    b.PrependUint32Slot(1, len(buffers), 0)
    b.PrependUOffsetTRelativeSlot(0, entry_name, 0)
    new_entry = b.EndObject()
    new_buffers = _offsets(b, [base - p for p in buffers] + [new_buffer])
    new_entries = _offsets(b, [base - p for p in entries] + [new_entry])

    b.StartObject(_MODEL_SLOTS)
    refs = {slot: base - pos for slot, pos in copied.items()}
    refs.update({_MODEL_BUFFERS: new_buffers, _MODEL_METADATA: new_entries})
    for slot, off in sorted(refs.items()):
        b.PrependUOffsetTRelativeSlot(slot, off, 0)
    b.PrependUint32Slot(0, version, 0)
    b.Finish(b.EndObject(), file_identifier=MODEL_IDENTIFIER)
    return bytes(b.Output())
