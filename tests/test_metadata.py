"""TFLite metadata: labels and normalisation travel inside the model, and MediaPipe reads them.

MediaPipe is never imported here: it cannot share the product's environment (it pins absl-py
~=2.3, tfmot ~=1.2). Its real client runs in a venv of its own (tests/isolated_venv.py) on files
our writer produced, through ``_PROBE`` below.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecls.core.config import ExportConfig
from edgecls.core.errors import EdgeclsError
from edgecls.optimize.metadata import add_image_classifier_metadata, embedded_labels
from edgecls.optimize.tflite_metadata import METADATA_NAME, MetadataUnavailable, model_metadata

sys.path.insert(0, str(Path(__file__).parent))
from isolated_venv import named_venv  # noqa: E402

LABELS = ["cat", "dog", "bird"]
# Unequal, so a reader that swapped or ignored them would be caught. One value each: MediaPipe
# 1.2.2 refuses per-channel normalisation ("Per-channel image normalization is not available").
MEAN, STD = 100.0, 50.0

# Runs in MediaPipe's venv: its ImageClassifier on each model and image, and the metadata read
# back with the Python code MediaPipe generated from the published schemas (not ours).
_PROBE = r"""
import json, sys
import numpy as np
import mediapipe as mp
from mediapipe.tasks.metadata import metadata_schema_py_generated as md
from mediapipe.tasks.metadata import schema_py_generated as tfl
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions

def metadata(path):
    buf = bytearray(open(path, "rb").read())
    model = tfl.Model.GetRootAs(buf, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    data = model.Buffers(entries["TFLITE_METADATA"]).DataAsNumpy().tobytes()
    m = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(data, 0))
    sg = m.subgraphMetadata[0]
    tin, tout = sg.inputTensorMetadata[0], sg.outputTensorMetadata[0]
    norm = tin.processUnits[0].options
    return {
        "entries": sorted(entries), "identifier": md.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0),
        "name": m.name.decode(), "min_parser_version": m.minParserVersion.decode(),
        "input_content": tin.content.contentPropertiesType, "color_space": tin.content.contentProperties.colorSpace,
        "mean": [float(x) for x in norm.mean], "std": [float(x) for x in norm.std],
        "norm_type": tin.processUnits[0].optionsType,
        "output_files": [[f.name.decode(), f.type] for f in tout.associatedFiles],
        "score_thresholds": [float(u.options.globalScoreThreshold) for u in (tout.processUnits or [])
                             if u.optionsType == md.ProcessUnitOptions.ScoreThresholdingOptions],
    }

out = []
for path, image in zip(sys.argv[1::2], sys.argv[2::2]):
    opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path),
                                         running_mode=vision.RunningMode.IMAGE, max_results=-1)
    rgb = np.ascontiguousarray(np.load(image))
    with vision.ImageClassifier.create_from_options(opts) as classifier:
        result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
    cats = sorted(result.classifications[0].categories, key=lambda c: c.index)
    out.append({"names": [c.category_name for c in cats], "scores": [c.score for c in cats],
                "indices": [c.index for c in cats],
                "metadata": metadata(path)})
print(json.dumps(out))
"""


# Runs in TFLite Support's venv (tflite-support 0.4.4, the library MediaPipe's writer came from):
# its MetadataDisplayer, its compiled min-parser-version helper, and its task library's classifier.
_TFLITE_SUPPORT_PROBE = r"""
import json, sys
import numpy as np
from tensorflow_lite_support.metadata.cc.python import _pywrap_metadata_version
from tflite_support import metadata
from tflite_support.task import core, processor, vision

out = []
for path, image in zip(sys.argv[1::2], sys.argv[2::2]):
    displayer = metadata.MetadataDisplayer.with_model_file(path)
    buf = metadata.get_metadata_buffer(bytearray(open(path, "rb").read()))
    opts = vision.ImageClassifierOptions(base_options=core.BaseOptions(file_name=path),
                                         classification_options=processor.ClassificationOptions(max_results=-1))
    result = vision.ImageClassifier.create_from_options(opts).classify(
        vision.TensorImage.create_from_array(np.ascontiguousarray(np.load(image))))
    cats = sorted(result.classifications[0].categories, key=lambda c: c.index)
    out.append({"names": [c.category_name for c in cats], "scores": [c.score for c in cats],
                "packed_files": displayer.get_packed_associated_file_list(),
                "written_version": json.loads(displayer.get_metadata_json())["min_parser_version"],
                "needed_version": _pywrap_metadata_version.GetMinimumMetadataParserVersion(bytes(buf))})
print(json.dumps(out))
"""


def _mediapipe_python() -> Path:
    # No skip when it cannot be built: a MediaPipe that cannot be installed is a finding, not a pass.
    return named_venv("mediapipe")  # mediapipe==1.2.2 (tests/isolated_venv.py SPECS)


def _probe(python: Path, pairs: list[tuple[Path, Path]], tmp_path: Path, probe: str = _PROBE) -> list[dict]:
    script = tmp_path / "probe.py"
    script.write_text(probe)
    args = [str(x) for pair in pairs for x in pair]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(python), str(script), *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _with_metadata(src: Path, dest: Path, **kwargs) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)  # alone in its folder: no labels.txt beside it
    dest.write_bytes(add_image_classifier_metadata(src.read_bytes(), LABELS, name="edgecls test",
                                                   description="tiny", **kwargs))
    return dest


def _image(tmp_path: Path, seed: int = 3) -> tuple[np.ndarray, Path]:
    # At the model's input size, so no reader resizes and the scores can be compared exactly.
    rgb = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = tmp_path / f"image{seed}.npy"
    np.save(path, rgb)
    return rgb, path


@pytest.fixture(scope="module")
def unscaled_float_model(tmp_path_factory):
    """A float32 .tflite with no preprocessing inside: it expects normalised input."""
    from edgecls.core.keras import keras
    from edgecls.optimize.convert import convert_model

    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    path = tmp_path_factory.mktemp("unscaled") / "model.tflite"
    path.write_bytes(convert_model(model, "float32"))
    return path


# -- our writer, in the product's own environment ---------------------------------------------
@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_metadata_leaves_the_model_running_exactly_as_before(tiny_tflite, tmp_path, mode):
    from edgecls.runtime.classifier import Classifier

    plain = tmp_path / "plain" / "model.tflite"
    plain.parent.mkdir()
    shutil.copy(tiny_tflite[mode], plain)
    tagged = _with_metadata(plain, tmp_path / "tagged" / "model.tflite")
    data = tagged.read_bytes()
    assert embedded_labels(data) == LABELS
    before = set(model_metadata(plain.read_bytes()))
    assert set(model_metadata(data)) == before | {METADATA_NAME}  # the converter's own entries kept
    assert model_metadata(data)[METADATA_NAME][4:8] == b"M001"
    clf, ref = Classifier(tagged, num_threads=1), Classifier(plain, num_threads=1)
    assert clf.labels == LABELS and clf.labels_source == "model metadata"
    for image in tiny_tflite["images"]:
        assert np.array_equal(clf.invoke(clf.preprocess(image)), ref.invoke(ref.preprocess(image)))
    # Same inputs, same bytes (a fixed zip date): re-exports do not churn.
    assert _with_metadata(plain, tmp_path / "again.tflite").read_bytes() == data


@pytest.mark.parametrize("labels, kwargs, error, message", [
    ([], {}, EdgeclsError, "cannot write metadata without labels"),
    (["a", ""], {}, EdgeclsError, "labels must be non-empty single lines for labels.txt, got ['']"),
    (["a", "b\nc"], {}, EdgeclsError, "labels must be non-empty single lines for labels.txt, got ['b\\nc']"),
    (["a"], {"mean": (1.0, 2.0), "std": (1.0, 1.0)}, EdgeclsError,
     "normalisation needs 1 or 3 means and as many stds, got [1.0, 2.0] / [1.0, 1.0]"),
    (["a"], {"std": 0.0}, EdgeclsError, "normalisation std must not be 0"),
])
def test_bad_labels_or_normalisation_are_refused(tiny_tflite, labels, kwargs, error, message):
    with pytest.raises(error) as e:
        add_image_classifier_metadata(tiny_tflite["int8"].read_bytes(), labels, name="n", description="d", **kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("make, message", [
    (lambda m: b"not a model at all", "not a TFLite model (no TFL3 flatbuffer identifier)"),
    (lambda m: m[:12], "the model's flatbuffer cannot be read (unpack_from requires a buffer of at least"),
    (lambda m: add_image_classifier_metadata(m, LABELS, name="n", description="d"),
     "the model already has TFLITE_METADATA metadata"),
])
def test_models_the_writer_cannot_extend_are_metadata_unavailable(tiny_tflite, make, message):
    model = make(tiny_tflite["int8"].read_bytes())
    with pytest.raises(MetadataUnavailable) as e:
        add_image_classifier_metadata(model, LABELS, name="n", description="d")
    assert str(e.value).startswith(message)


# -- MediaPipe's real reader, in its own venv ---------------------------------------------------
@pytest.mark.slow
@pytest.mark.prebuild("mediapipe")
def test_mediapipe_image_classifier_reads_our_labels_and_normalisation(tiny_tflite, unscaled_float_model, tmp_path):
    """uint8 and float32 models from our writer: MediaPipe names our labels and its scores are
    our runtime's; a model whose metadata asks for (x - mean) / std gets exactly that."""
    from edgecls.runtime.classifier import Classifier

    python = _mediapipe_python()
    rgb, image = _image(tmp_path)
    uint8 = _with_metadata(tiny_tflite["int8"], tmp_path / "uint8" / "model.tflite")
    float32 = _with_metadata(tiny_tflite["float32"], tmp_path / "float32" / "model.tflite")
    scaled = _with_metadata(unscaled_float_model, tmp_path / "scaled" / "model.tflite", mean=MEAN, std=STD)
    got_uint8, got_float, got_scaled = _probe(python, [(uint8, image), (float32, image), (scaled, image)], tmp_path)

    for got in (got_uint8, got_float, got_scaled):
        assert got["names"] == LABELS
        m = got["metadata"]
        assert m["identifier"] and m["name"] == "edgecls test" and m["min_parser_version"] == "1.0.0"
        assert m["output_files"] == [["labels.txt", 2]]  # TENSOR_AXIS_LABELS
        assert (m["input_content"], m["color_space"], m["norm_type"]) == (2, 1, 1)  # Image, RGB, Normalization
        assert {"min_runtime_version", "TFLITE_METADATA"} <= set(m["entries"])
    assert (got_float["metadata"]["mean"], got_float["metadata"]["std"]) == ([0.0], [1.0])
    assert (got_scaled["metadata"]["mean"], got_scaled["metadata"]["std"]) == ([MEAN], [STD])

    ours = Classifier(uint8, num_threads=1)
    # MediaPipe dequantizes the same uint8 output (scale 1/256): at most one step apart.
    assert np.allclose(got_uint8["scores"], ours.probabilities(rgb), atol=ours.output_scale + 1e-6)
    assert np.allclose(got_float["scores"], Classifier(float32, num_threads=1).probabilities(rgb), atol=1e-5)

    raw = Classifier(scaled, num_threads=1)
    def scores(mean: float, std: float) -> np.ndarray:
        return raw.postprocess(raw.invoke(((rgb - np.float32(mean)) / np.float32(std)).astype(np.float32)[None]))

    expected = scores(MEAN, STD)
    assert np.allclose(got_scaled["scores"], expected, atol=1e-5)
    # ... and that check can tell: raw pixels or swapped mean/std give other scores.
    assert min(np.abs(scores(0.0, 1.0) - expected).max(), np.abs(scores(STD, MEAN) - expected).max()) > 1e-3


@pytest.mark.slow
@pytest.mark.prebuild("mediapipe")
def test_mediapipe_applies_the_models_unknown_threshold_as_its_default_score_threshold(tiny_tflite, tmp_path):
    """The unknown rule's threshold rides in the output's ScoreThresholdingOptions: MediaPipe reads it back and
    reports no class scoring under it, with no option of the caller's (and the labels stay ours)."""
    from edgecls.runtime.classifier import Classifier

    python = _mediapipe_python()
    rgb, image = _image(tmp_path)
    ours = Classifier(tiny_tflite["float32"], num_threads=1).probabilities(rgb)
    threshold = float(np.sort(ours)[-2] + np.sort(ours)[-1]) / 2  # between the top two: only the top-1 stays
    model = _with_metadata(tiny_tflite["float32"], tmp_path / "thresholded" / "model.tflite", score_threshold=threshold)
    plain = _with_metadata(tiny_tflite["float32"], tmp_path / "plain" / "model.tflite")
    got, without = _probe(python, [(model, image), (plain, image)], tmp_path)
    assert got["metadata"]["score_thresholds"] == [pytest.approx(threshold, abs=1e-6)]
    assert got["names"] == [LABELS[int(np.argmax(ours))]] and got["scores"][0] >= threshold
    assert without["metadata"]["score_thresholds"] == [] and without["names"] == LABELS  # no threshold: all three


@pytest.mark.slow
@pytest.mark.prebuild("tflite-support")
def test_tflite_support_reads_our_metadata(tiny_tflite, tmp_path):
    """The TFLite Support library: its displayer finds labels.txt packed, its own compiled helper
    says the fields we wrote need parser 1.0.0 (what we claim), its ImageClassifier names our labels."""
    from edgecls.runtime.classifier import Classifier

    python = named_venv("tflite-support")  # tflite-support==0.4.4
    rgb, image = _image(tmp_path)
    uint8 = _with_metadata(tiny_tflite["int8"], tmp_path / "uint8" / "model.tflite")
    float32 = _with_metadata(tiny_tflite["float32"], tmp_path / "float32" / "model.tflite")
    thresholded = _with_metadata(tiny_tflite["float32"], tmp_path / "thresholded" / "model.tflite",
                                 score_threshold=0.0001)  # the unknown rule's field: still parser 1.0.0
    got = _probe(python, [(uint8, image), (float32, image), (thresholded, image)], tmp_path, _TFLITE_SUPPORT_PROBE)
    assert got[2]["written_version"] == got[2]["needed_version"] == "1.0.0"
    for g, model in zip(got, (uint8, float32)):
        assert g["names"] == LABELS and g["packed_files"] == ["labels.txt"]
        assert g["written_version"] == g["needed_version"] == "1.0.0"
        # Its task library's float32 scores sit up to 0.0016 from ours even on a flat-colour image
        # (cause not found; MediaPipe's match to 1e-5). 0.01 still catches a wrong normalisation.
        assert np.allclose(g["scores"], Classifier(model, num_threads=1).probabilities(rgb), atol=0.01)


@pytest.mark.slow
def test_labels_are_embedded_and_read_by_our_runtime(exported_run, tmp_path):
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
def test_export_without_metadata_warns_and_records_it(exported_run, tmp_path, monkeypatch, capsys):
    from edgecls.optimize import metadata
    from edgecls.optimize.export import export_run

    def unavailable(model, name, data):
        raise metadata.MetadataUnavailable("the model keeps weights outside its flatbuffer (over 2 GB)")

    monkeypatch.setattr(metadata, "attach_model_metadata", unavailable)
    card = export_run(ExportConfig(run=str(exported_run.path), mode="float32", out=str(tmp_path)))
    assert card["metadata"] is False and "outside its flatbuffer" in card["metadata_missing_reason"]
    assert json.loads((tmp_path / "model_float32.card.json").read_text())["metadata"] is False
    assert embedded_labels((tmp_path / "model_float32.tflite").read_bytes()) is None
    assert "Warning: the model has no metadata" in capsys.readouterr().err


# -- what a user gets from `pip install ".[train]"` ---------------------------------------------
def _user_env() -> dict[str, str]:
    # The user's venv only: no PYTHONPATH pointing at this checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2")
    return env


@pytest.mark.slow
@pytest.mark.prebuild("mediapipe")
def test_pip_install_train_exports_a_model_mediapipe_names(tiny_run, tmp_path):
    """The product's own venv is a plain `pip install -e ".[dev]"` ([train] + test tools; no Makefile
    tricks, no --no-deps) that CI builds fresh: pip check is clean, mediapipe is not in it, and its
    `edgecls export` writes metadata that MediaPipe's ImageClassifier (in its own venv) reads.
    (A second, from-scratch `.[train]` venv would cost CI 8-9 minutes of downloads for the same proof.)"""
    python = Path(sys.executable)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    env = _user_env()
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=300, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = subprocess.run([*pip, "list", "--format=json"], capture_output=True, text=True, timeout=300, env=env)
    assert "mediapipe" not in {p["name"].lower() for p in json.loads(listed.stdout)}

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "logs", "cache", "plots", "export"))
    out = tmp_path / "out"
    edgecls = python.parent / "edgecls"
    # Parity is another test's subject (the tiny model is chance-level): skipped, not faked.
    proc = subprocess.run([str(edgecls), "export", str(run), "--int8", "--no-parity", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    card = json.loads((out / "model_int8.card.json").read_text())
    assert card["metadata"] is True

    labels = (run / "labels.txt").read_text().split()
    alone = tmp_path / "alone" / "model_int8.tflite"  # MediaPipe must get the names from the model
    alone.parent.mkdir()
    shutil.copy(out / "model_int8.tflite", alone)
    image = tmp_path / "image.npy"
    np.save(image, np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8))
    got = _probe(_mediapipe_python(), [(alone, image)], tmp_path)[0]
    # MediaPipe names the classes from the model and applies the run's unknown threshold by itself.
    threshold = card["unknown"]["threshold"]
    assert got["metadata"]["score_thresholds"] == [pytest.approx(threshold, abs=1e-6)]
    assert got["indices"] and got["names"] == [labels[i] for i in got["indices"]]
    assert all(s >= threshold - 1e-6 for s in got["scores"])
