"""TFLite metadata: labels travel inside the model; MediaPipe's ImageClassifier names our classes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgecls.core.config import ExportConfig


@pytest.mark.slow
def test_labels_are_embedded_and_read_by_our_runtime(exported_run, tmp_path):
    from edgecls.optimize.metadata import embedded_labels
    from edgecls.runtime.classifier import Classifier, labels_from_metadata

    labels = (exported_run.path / "labels.txt").read_text().split()
    data = (exported_run.path / "export" / "model_int8.tflite").read_bytes()
    assert embedded_labels(data) == labels
    assert labels_from_metadata(data) == labels  # the device's TF-free reader
    alone = tmp_path / "model.tflite"  # no labels.txt beside it: the runtime must use the metadata
    shutil.copy(exported_run.path / "export" / "model_int8.tflite", alone)
    clf = Classifier(alone, num_threads=1)
    assert clf.labels == labels and "metadata" in clf.labels_source


@pytest.mark.slow
def test_metadata_min_parser_version_matches_the_fields_used(exported_run):
    """Our stand-in for MediaPipe's missing compiled helper gives the schema's base version here."""
    pytest.importorskip("mediapipe")
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb
    from mediapipe.tasks.metadata import schema_py_generated as schema

    from edgecls.optimize.metadata import min_parser_version

    data = (exported_run.path / "export" / "model_int8.tflite").read_bytes()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    meta = next(m for m in model.metadata if m.name == b"TFLITE_METADATA")
    buf = bytes(model.buffers[meta.buffer].data)
    md = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(buf, 0))
    assert md.minParserVersion == b"1.0.0" == min_parser_version(buf).encode()
    out = md.subgraphMetadata[0].outputTensorMetadata[0]
    assert out.associatedFiles[0].type == fb.AssociatedFileType.TENSOR_AXIS_LABELS
    norm = md.subgraphMetadata[0].inputTensorMetadata[0].processUnits[0].options
    assert list(norm.mean) == [0.0] and list(norm.std) == [1.0]  # raw 0..255 pixels: identity


@pytest.mark.slow
def test_mediapipe_image_classifier_round_trip(exported_run):
    """A standard consumer loads our int8 file and answers with our class names."""
    mp = pytest.importorskip("mediapipe")
    vision = pytest.importorskip("mediapipe.tasks.python.vision")
    from mediapipe.tasks.python.core.base_options import BaseOptions

    labels = (exported_run.path / "labels.txt").read_text().split()
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(exported_run.path / "export" / "model_int8.tflite")),
        running_mode=vision.RunningMode.IMAGE, max_results=len(labels),
    )
    rgb = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
    names = [c.category_name for c in result.classifications[0].categories]
    assert sorted(names) == sorted(labels)


@pytest.mark.slow
def test_export_without_mediapipe_warns_and_records_no_metadata(exported_run, tmp_path, monkeypatch, capsys):
    from edgecls.optimize import metadata
    from edgecls.optimize.export import export_run

    def unavailable():
        raise metadata.MetadataUnavailable("mediapipe is not importable (test)")

    monkeypatch.setattr(metadata, "_writer_module", unavailable)
    card = export_run(ExportConfig(run=str(exported_run.path), mode="float32", out=str(tmp_path)))
    assert card["metadata"] is False and "not importable" in card["metadata_missing_reason"]
    assert json.loads((tmp_path / "model_float32.card.json").read_text())["metadata"] is False
    assert metadata.embedded_labels((tmp_path / "model_float32.tflite").read_bytes()) is None
    assert "Warning: the model has no metadata" in capsys.readouterr().err
