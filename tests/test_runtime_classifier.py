"""Interpreter loading and the Classifier on real tiny .tflite models."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgecls.core.errors import EdgeclsError
from edgecls.runtime import interpreter as interp_mod
from edgecls.runtime.classifier import Classifier, labels_from_metadata, resize_squash
from edgecls.runtime.interpreter import load_interpreter

pytestmark = pytest.mark.slow  # converts a model (session fixture)


def test_float32_matches_keras(tiny_tflite):
    clf = Classifier(tiny_tflite["float32"], num_threads=1)
    assert clf.input_size == (32, 32)
    assert clf.input_dtype == np.float32
    assert clf.labels == ["cat", "dog", "bird"]  # labels.txt beside the model
    assert clf.runtime == "ai_edge_litert"
    for img, ref in zip(tiny_tflite["images"], tiny_tflite["keras_probs"]):
        probs = clf.probabilities(img)
        assert probs.dtype == np.float32 and probs.shape == (3,)
        np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_int8_dequantizes_and_mostly_agrees_with_keras(tiny_tflite):
    clf = Classifier(tiny_tflite["int8"], num_threads=1)
    assert clf.input_dtype == np.uint8
    assert clf.labels == ["class_0", "class_1", "class_2"]  # no labels anywhere
    probs = np.stack([clf.probabilities(img) for img in tiny_tflite["images"]])
    ref = tiny_tflite["keras_probs"]
    assert probs.min() >= 0 and probs.max() <= 1.0
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=0.03)
    np.testing.assert_allclose(probs, ref, atol=0.08)  # 8-bit softmax of a tiny random model
    agree = np.mean(probs.argmax(1) == ref.argmax(1))
    assert agree >= 0.75


def test_int8_input_is_quantized_by_the_tensor_parameters(tiny_tflite):
    clf = Classifier(tiny_tflite["int8"], num_threads=1)
    img = tiny_tflite["images"][0]
    t = clf.preprocess(img)
    assert t.dtype == np.uint8 and t.shape == (1, 32, 32, 3)
    expect = np.clip(np.rint(img / clf.input_scale + clf.input_zero_point), 0, 255)
    np.testing.assert_array_equal(t[0], expect)


def test_preprocess_resizes_any_frame_and_keeps_right_size_untouched(tiny_tflite):
    clf = Classifier(tiny_tflite["float32"], num_threads=1)
    img = tiny_tflite["images"][1]
    np.testing.assert_array_equal(clf.preprocess(img)[0], img.astype(np.float32))
    big = np.repeat(np.repeat(img, 4, axis=0), 2, axis=1)  # 128x64: squash back to 32x32
    t = clf.preprocess(big)
    assert t.shape == (1, 32, 32, 3)
    small = resize_squash(img, 8, 8)
    assert small.shape == (8, 8, 3)
    assert clf.preprocess(small).shape == (1, 32, 32, 3)
    # Gray and RGBA frames are accepted.
    assert clf.preprocess(img[:, :, 0]).shape == (1, 32, 32, 3)
    assert clf.preprocess(np.dstack([img, img[:, :, :1]])).shape == (1, 32, 32, 3)
    with pytest.raises(EdgeclsError, match="expected an RGB image"):
        clf.preprocess(np.zeros((4, 4, 5), np.uint8))


def test_classify_top_k_and_labels_argument(tiny_tflite):
    clf = Classifier(tiny_tflite["float32"], num_threads=1, labels=["x", "y", "z"])
    img = tiny_tflite["images"][2]
    cats = clf.classify(img, k=2)
    ref = tiny_tflite["keras_probs"][2]
    assert [c.index for c in cats] == list(np.argsort(-ref)[:2])
    assert cats[0].label == "xyz"[cats[0].index]
    assert clf.classify(img, k=3, threshold=1.01) == []
    with pytest.raises(EdgeclsError, match="2 labels"):
        Classifier(tiny_tflite["float32"], num_threads=1, labels=["a", "b"])


def test_labels_from_model_metadata_zip(tiny_tflite, tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("labels.txt", "red\ngreen\nblue\n")
    model = tmp_path / "with_meta.tflite"
    model.write_bytes(tiny_tflite["int8"].read_bytes() + buf.getvalue())
    assert labels_from_metadata(model.read_bytes()) == ["red", "green", "blue"]
    clf = Classifier(model, num_threads=1)
    assert clf.labels == ["red", "green", "blue"] and clf.labels_source == "model metadata"
    assert labels_from_metadata(tiny_tflite["int8"].read_bytes()) is None


def test_xnnpack_off_gives_same_answers(tiny_tflite):
    on = Classifier(tiny_tflite["float32"], num_threads=1)
    off = Classifier(tiny_tflite["float32"], num_threads=1, xnnpack=False)

    def ops(clf):  # the XNNPACK delegate replaces the ops it takes with DELEGATE nodes
        return {o["op_name"] for o in clf.interpreter._get_ops_details()}

    assert "DELEGATE" in ops(on) and "DELEGATE" not in ops(off)
    img = tiny_tflite["images"][3]
    np.testing.assert_allclose(on.probabilities(img), off.probabilities(img), atol=1e-5)


def test_missing_and_corrupt_models(tmp_path, tiny_tflite):
    with pytest.raises(EdgeclsError, match=r"^model not found: .*nope.tflite$"):
        load_interpreter(tmp_path / "nope.tflite", num_threads=1)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(EdgeclsError, match=r"junk.tflite is not a valid .tflite model \("):
        load_interpreter(junk, num_threads=1)
    # A right header on a truncated body is caught by the runtime's verifier.
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(tiny_tflite["float32"].read_bytes()[:200])
    with pytest.raises(EdgeclsError, match=r"cut.tflite is not a valid .tflite model \("):
        load_interpreter(cut, num_threads=1)


def test_runtime_falls_back_in_order(monkeypatch):
    # None in sys.modules makes the import raise ImportError: ai_edge_litert "missing".
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setattr(interp_mod, "RUNTIME_ORDER", interp_mod.RUNTIME_ORDER[:2])
    with pytest.raises(EdgeclsError, match="no TFLite runtime found .*ai_edge_litert: not installed"):
        interp_mod.import_runtime()


def test_tflite_runtime_numpy2_is_detected(monkeypatch):
    import importlib.metadata
    import importlib.util

    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "tflite_runtime" else real_find(n, *a))
    monkeypatch.setattr(importlib.metadata, "version", lambda n: "2.14.0")
    monkeypatch.setattr(interp_mod, "_numpy_major", lambda: 2)
    problem = interp_mod._tflite_runtime_numpy_problem()
    assert problem and "needs numpy<2" in problem
    monkeypatch.setattr(interp_mod, "_numpy_major", lambda: 1)
    assert interp_mod._tflite_runtime_numpy_problem() is None
