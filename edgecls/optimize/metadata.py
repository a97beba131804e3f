"""TFLite model metadata (labels, input normalisation) written with MediaPipe's metadata writer.

Standard consumers (MediaPipe Tasks' ``ImageClassifier``, the TFLite Support task library)
read the class names from the model itself: a ``labels.txt`` zipped onto the end of the
flatbuffer and declared as a ``TENSOR_AXIS_LABELS`` file of the output tensor, plus the input
``NormalizationOptions``. Our models take raw 0..255 pixels (preprocessing is inside), so
mean = 0 and std = 1: the identity.

Why MediaPipe, and the one patch: ``mediapipe`` (0.10.30 up to 1.2.2, the current release)
ships the metadata writer in pure Python but its ``metadata.py`` imports a compiled helper,
``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version``, that none of those wheels
contains, so ``import metadata_writers`` fails. The helper only computes the metadata's
``min_parser_version`` from the fields used; :func:`min_parser_version` computes it from the
schema's documented history and is registered under that module name *only* when the real
module is missing. Everything else (schema, flatbuffer building, zip packing) is MediaPipe's.

MediaPipe is optional: ``mediapipe_status()`` says why metadata cannot be written, and export
then warns and records ``"metadata": false`` instead of failing.
"""

from __future__ import annotations

import sys
import types
from typing import Optional, Sequence

from edgecls.core.errors import EdgeclsError

_SHIM = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"

# metadata_schema.fbs history: (version, what needs it). Checked newest first.
_V1_0_0 = "1.0.0"


class MetadataUnavailable(EdgeclsError):
    """MediaPipe's metadata writer cannot be imported here (export goes on without metadata)."""


def min_parser_version(metadata_buf: bytes) -> str:
    """The oldest metadata parser that understands ``metadata_buf`` (schema history in metadata_schema.fbs)."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    md = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(bytearray(metadata_buf), 0))
    versions = [_V1_0_0]
    files = list(md.associatedFiles or [])
    units = []
    for sg in md.subgraphMetadata or []:
        files += list(sg.associatedFiles or [])
        if sg.inputProcessUnits or sg.outputProcessUnits:
            versions.append("1.1.0")
        units += list(sg.inputProcessUnits or []) + list(sg.outputProcessUnits or [])
        if sg.inputTensorGroups or sg.outputTensorGroups:
            versions.append("1.2.0")
        if getattr(sg, "customMetadata", None):
            versions.append("1.5.0")
        for t in list(sg.inputTensorMetadata or []) + list(sg.outputTensorMetadata or []):
            files += list(t.associatedFiles or [])
            units += list(t.processUnits or [])
            content = t.content
            if content is not None and content.contentPropertiesType == fb.ContentProperties.AudioProperties:
                versions.append("1.3.0")
    for f in files:
        if f.type == fb.AssociatedFileType.VOCABULARY:
            versions.append("1.0.1")
        if f.type == getattr(fb.AssociatedFileType, "SCANN_INDEX_FILE", -1):
            versions.append("1.4.0")
        if getattr(f, "version", None):
            versions.append("1.4.1")
    for u in units:
        if u.optionsType in (fb.ProcessUnitOptions.BertTokenizerOptions,
                             fb.ProcessUnitOptions.SentencePieceTokenizerOptions):
            versions.append("1.1.0")
        if u.optionsType == getattr(fb.ProcessUnitOptions, "RegexTokenizerOptions", -1):
            versions.append("1.2.1")
    return max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def _install_version_shim() -> None:
    """Register :func:`min_parser_version` as the compiled helper the wheel lacks."""
    for name in ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", "mediapipe.tasks.cc.metadata.python"):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = []  # a namespace-like package, so the leaf import resolves
            sys.modules[name] = pkg
    shim = types.ModuleType(_SHIM)
    shim.GetMinimumMetadataParserVersion = lambda buf: min_parser_version(bytes(buf))  # type: ignore[attr-defined]
    shim.__doc__ = "edgecls stand-in for the helper missing from mediapipe wheels (see edgecls.optimize.metadata)"
    sys.modules[_SHIM] = shim


def _writer_module():
    """MediaPipe's ``metadata_writer`` module, or :class:`MetadataUnavailable` saying why not."""
    try:
        import mediapipe  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken install raises anything
        raise MetadataUnavailable(f"mediapipe is not importable ({type(e).__name__}: {e})") from None
    try:
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer
        return metadata_writer
    except ModuleNotFoundError as e:
        if "mediapipe.tasks.cc" not in str(e):
            raise MetadataUnavailable(f"mediapipe's metadata writer is not importable ({e})") from None
    _install_version_shim()
    for mod in [m for m in sys.modules if m.startswith("mediapipe.tasks.python.metadata")]:
        del sys.modules[mod]  # retry the half-imported package with the helper in place
    try:
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer
    except Exception as e:  # noqa: BLE001
        raise MetadataUnavailable(f"mediapipe's metadata writer is not importable ({type(e).__name__}: {e})") from None
    return metadata_writer


def mediapipe_status() -> Optional[str]:
    """None when metadata can be written here, else the reason it cannot."""
    try:
        _writer_module()
    except MetadataUnavailable as e:
        return str(e)
    return None


def add_image_classifier_metadata(
    model: bytes,
    labels: Sequence[str],
    *,
    name: str,
    description: str,
    mean: float = 0.0,
    std: float = 1.0,
) -> bytes:
    """``model`` with image-classifier metadata: input normalisation and labels.txt on the output."""
    mw = _writer_module()

    class _Writer(mw.MetadataWriter):
        # The base __del__ cleans its temp folder with ``os`` that is gone at interpreter exit
        # (a noisy "Exception ignored"); the folder is cleaned below instead.
        def __del__(self) -> None:
            pass

    writer = _Writer.create(bytearray(model))
    try:
        writer.add_general_info(name, description)
        writer.add_image_input([mean], [std])
        writer.add_classification_output(mw.Labels().add(list(labels)))
        out, _json = writer.populate()
    finally:
        writer._temp_folder.cleanup()
    return bytes(out)


def embedded_labels(model: bytes) -> Optional[list[str]]:
    """labels.txt packed in the model's metadata zip, or None: read exactly as the device does."""
    from edgecls.runtime.classifier import labels_from_metadata

    return labels_from_metadata(model)
