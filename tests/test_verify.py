"""edgecls verify: the device's runtime against the golden set export wrote on the host."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.runtime.golden import golden_path_for, read_golden_set, verify_model, write_golden_set


def _golden(tiny_tflite, tmp_path):
    model = tmp_path / "model_int8.tflite"
    shutil.copy(tiny_tflite["int8"], model)
    path = write_golden_set(model, tiny_tflite["images"], labels=[0, 1, 2, 0, 1, 2, 0, 1], label_names=["a", "b", "c"])
    return model, path


def _verify_in_a_fresh_process(model, tmp_path, threads: int = 3) -> dict:
    """``edgecls verify`` as the device runs it: a fresh process with its own interpreter and another thread
    count than the golden set's (1), so the agreement is the runtime's, not one object's with itself."""
    report = tmp_path / f"verify-{model.stem}.json"
    proc = subprocess.run([sys.executable, "-c", "from edgecls.cli import main; main()", "verify", str(model),
                           "--threads", str(threads), "--json", str(report)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text())


def test_golden_set_round_trip_and_same_runtime_is_bit_identical(tiny_tflite, tmp_path):
    model, path = _golden(tiny_tflite, tmp_path)
    assert path == golden_path_for(model) == tmp_path / "model_int8.golden.npz"
    g = read_golden_set(path)
    assert g["images"].shape == (8, 32, 32, 3) and g["raw"].dtype == np.uint8
    assert g["meta"]["label_names"] == ["a", "b", "c"]
    r = _verify_in_a_fresh_process(model, tmp_path)
    assert r["passed"] and r["bit_identical"] and r["top1_agreement"] == 1.0 and r["max_abs_raw_diff"] == 0
    assert r["threads"] == 3 and r["n_images"] == 8


def _tamper(path, fn):
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    fn(d)
    np.savez(path, **d)


def test_a_clear_prediction_that_changes_fails_with_exit_1(tiny_tflite, tmp_path):
    model, path = _golden(tiny_tflite, tmp_path)
    # Pretend the host saw a different, confident top-1 for image 0: the device now disagrees clearly.
    def flip(d):
        p = d["probabilities"]
        wrong = (int(p[0].argmax()) + 1) % p.shape[1]
        p[0] = 0.0
        p[0, wrong] = 1.0
    _tamper(path, flip)
    result = CliRunner().invoke(cli, ["verify", str(model), "--json", str(tmp_path / "v.json")])
    assert result.exit_code == 1, result.output
    assert "1 prediction(s) the host made with a clear margin" in result.output
    assert json.loads((tmp_path / "v.json").read_text())["flipped_clear"] == 1


def test_a_near_tie_that_flips_is_reported_not_failed(tiny_tflite, tmp_path):
    model, path = _golden(tiny_tflite, tmp_path)
    def near_tie(d):
        p = d["probabilities"]
        top = int(p[0].argmax())
        other = (top + 1) % p.shape[1]
        p[0] = 0.0
        p[0, top], p[0, other] = 0.49, 0.51  # host had 'other' by a hair
    _tamper(path, near_tie)
    r = verify_model(model)
    assert r["flipped"] == 1 and r["flipped_clear"] == 0 and r["passed"]


def test_another_model_file_fails(tiny_tflite, tmp_path):
    model, _ = _golden(tiny_tflite, tmp_path)
    other = tmp_path / "other.tflite"
    shutil.copy(tiny_tflite["float32"], other)
    result = CliRunner().invoke(cli, ["verify", str(other), "--golden", str(golden_path_for(model))])
    assert result.exit_code == 1
    assert "differs from the one the golden set was made with" in result.output


def test_missing_golden_set_is_one_clear_error(tiny_tflite, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(tiny_tflite["int8"], model)
    result = CliRunner().invoke(cli, ["verify", str(model)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no golden set at") and "Traceback" not in result.output


def _clear_flip(d):
    p = d["probabilities"]
    wrong = (int(p[0].argmax()) + 1) % p.shape[1]
    p[0] = 0.0
    p[0, wrong] = 1.0


# doctor --model runs verify when the golden set is beside the model: golden -> exit code -> line.
DOCTOR_CASES = [
    ("intact", 0, "ok verify: 8 golden images, bit-identical (max |raw diff| 0), top-1 agreement 1.0000"),
    ("clear flip", 1, "Error: verify failed: 1 prediction(s) the host made with a clear margin (>= 0.1) "
                      "changed on this runtime"),
    ("none", 0, "-- verify: no golden set beside the model (export writes one; copy it with the model)"),
]


@pytest.mark.parametrize("golden, code, line", DOCTOR_CASES)
def test_doctor_runs_verify_when_the_golden_set_is_beside_the_model(tiny_tflite, tmp_path, golden, code, line):
    model, path = _golden(tiny_tflite, tmp_path)
    if golden == "clear flip":
        _tamper(path, _clear_flip)
    elif golden == "none":
        path.unlink()
    result = CliRunner().invoke(cli, ["doctor", "--model", str(model)])
    assert result.exit_code == code, result.output
    assert line in result.output.splitlines()
    assert "Traceback" not in result.output


def test_ai_edge_litert_has_no_runtime_notice_and_tflite_runtime_has_one():
    from edgecls.runtime.interpreter import runtime_notice

    assert runtime_notice("ai_edge_litert", "2.3.0") is None
    note = runtime_notice("tflite_runtime", "2.14.0")
    assert note.startswith("tflite-runtime 2.14.0 is not the runtime export checked parity with")
    assert "pip install ai-edge-litert" in note


# -- 16x8 models (int16 activations): float32 or int16 in/out, never uint8 ----------------------


@pytest.fixture(scope="module")
def int16x8_models(tmp_path_factory):
    """A conv + depthwise + dense classifier converted to 16x8 (int16 activations, int8 weights)
    with float32 and with int16 in/out, its images and the Keras model's probabilities."""
    from edgecls.core.keras import keras
    from tflite_16x8 import convert_16x8

    root = tmp_path_factory.mktemp("int16x8")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.ReLU(6.0)(keras.layers.DepthwiseConv2D(3, padding="same")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    rng = np.random.default_rng(1)
    rep = rng.integers(0, 256, size=(32, 32, 32, 3)).astype(np.float32)
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    images[::2, :, :, 1] //= 3
    out = {"images": images, "keras_probs": model.predict(images.astype(np.float32), verbose=0)}
    for io in ("float32", "int16"):
        (root / io).mkdir()
        out[io] = root / io / "model_int8.tflite"
        out[io].write_bytes(convert_16x8(model, rep, io))
        (root / io / "labels.txt").write_text("a\nb\nc\n")
    return out


@pytest.mark.parametrize("io", ["float32", "int16"])
def test_a_16x8_model_runs_on_the_device_side_verify_and_bench(int16x8_models, io, tmp_path):
    from edgecls.optimize.checks import inspect_tflite
    from edgecls.runtime.bench import bench_one
    from edgecls.runtime.classifier import Classifier

    model = int16x8_models[io]
    info = inspect_tflite(model)
    assert (info.input.dtype, info.output.dtype) == (io, io)
    clf = Classifier(model, num_threads=1)
    assert clf.input_dtype == np.dtype(io) and clf.labels == ["a", "b", "c"]
    probs = np.stack([clf.probabilities(img) for img in int16x8_models["images"]])
    # Dequantized right (a wrong scale or zero point would be far off): close to the float model.
    np.testing.assert_allclose(probs, int16x8_models["keras_probs"], atol=1e-2)
    assert np.array_equal(probs.argmax(1), int16x8_models["keras_probs"].argmax(1))
    path = write_golden_set(model, int16x8_models["images"], label_names=["a", "b", "c"])
    assert read_golden_set(path)["raw"].dtype == np.dtype(io)
    r = _verify_in_a_fresh_process(model, tmp_path)
    assert r["passed"] and r["bit_identical"] and r["top1_agreement"] == 1.0
    b = bench_one(str(model), threads=1, xnnpack=True, runs=3, warmup=1, images=None, seed=0)
    assert b["input"] == f"32x32 {io}" and b["latency_ms"]["p50"] > 0
