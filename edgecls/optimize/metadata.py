"""TFLite model metadata for image classifiers: labels and input normalisation inside the model.

Standard readers (MediaPipe Tasks' ``ImageClassifier``, the TFLite Support task library) take
the class names from the model itself: a ``labels.txt`` zipped onto the end of the flatbuffer
and declared as the output tensor's ``TENSOR_AXIS_LABELS`` file in the ``TFLITE_METADATA``
buffer, plus the input's ``NormalizationOptions``. Our models take raw 0..255 pixels (the
preprocessing is inside), so mean 0 and std 1: the identity.

Written by :mod:`edgecls.optimize.tflite_metadata` (the published schemas, by hand, over the
``flatbuffers`` package that the ``[train]`` extra declares); no MediaPipe or tflite-support in
the product's environment. That is the layout those writers produce, checked against
MediaPipe's own reader in tests/test_metadata.py.
"""

from __future__ import annotations

import io
import zipfile
from typing import Optional, Sequence

from edgecls.core.errors import EdgeclsError
from edgecls.optimize.tflite_metadata import (
    METADATA_NAME,
    ImageClassifierMetadata,
    MetadataUnavailable,
    attach_model_metadata,
    image_classifier_metadata,
)

__all__ = ["LABELS_FILE", "MetadataUnavailable", "add_image_classifier_metadata", "embedded_labels"]

LABELS_FILE = "labels.txt"
# A fixed zip timestamp (the earliest zip can store) so one model and labels give the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _check_labels(labels: Sequence[str]) -> list[str]:
    labels = [str(label) for label in labels]
    if not labels:
        raise EdgeclsError("cannot write metadata without labels")
    bad = [label for label in labels if not label.strip() or "\n" in label or "\r" in label]
    if bad:
        raise EdgeclsError(f"labels must be non-empty single lines for labels.txt, got {bad!r}")
    return labels


def pack_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """``model`` with ``files`` appended as a zip archive (stored, not deflated).

    Readers find the archive from its end and map each file straight out of the model, which is
    why the entries are stored uncompressed; the flatbuffer in front is untouched.
    """
    out = io.BytesIO(model)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data)
    return out.getvalue()


def add_image_classifier_metadata(
    model: bytes,
    labels: Sequence[str],
    *,
    name: str,
    description: str,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
    version: str = "",
    author: str = "edgecls",
    score_threshold: Optional[float] = None,
    files: Optional[dict[str, bytes]] = None,
) -> bytes:
    """``model`` with image-classifier metadata: input normalisation and labels.txt on the output, the output's
    default score threshold when given, and ``files`` packed beside labels.txt.

    Raises :class:`MetadataUnavailable` when this model cannot carry it (export then goes on
    without metadata and says why) and :class:`EdgeclsError` for bad labels or normalisation.
    """
    labels = _check_labels(labels)
    means = [float(mean)] if isinstance(mean, (int, float)) else [float(m) for m in mean]
    stds = [float(std)] if isinstance(std, (int, float)) else [float(s) for s in std]
    meta = image_classifier_metadata(ImageClassifierMetadata(
        name=name, description=description, labels_file=LABELS_FILE, num_labels=len(labels),
        mean=means, std=stds, version=version, author=author, score_threshold=score_threshold,
    ))
    with_meta = attach_model_metadata(model, METADATA_NAME, meta)
    return pack_files(with_meta, {LABELS_FILE: ("\n".join(labels) + "\n").encode("utf-8"), **(files or {})})


def embedded_labels(model: bytes) -> Optional[list[str]]:
    """labels.txt packed in the model's metadata zip, or None: read exactly as the device does."""
    from edgecls.runtime.classifier import labels_from_metadata

    return labels_from_metadata(model)
