"""`edgecls verify` with the real runtimes: ai-edge-litert (the host's) and tflite-runtime 2.14.

tflite-runtime 2.14 (its last release: CPython <= 3.11, numpy<2) is installed the way a Pi user
would, in a venv the test builds (tests/isolated_venv.py) with edgecls from this source tree and
its core dependencies only: no TensorFlow, no ai-edge-litert, so the loader must pick
tflite_runtime. The golden sets are written here, on the host, by ai-edge-litert.
"""

from __future__ import annotations

import importlib.util
import json
import re
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecls.runtime.golden import write_golden_set
from isolated_venv import named_venv, python_at_most_311

ROOT = Path(__file__).resolve().parents[1]
N_GOLDEN = 48


@pytest.fixture(scope="module")
def tflite_runtime_venv() -> Path:
    # tflite-runtime==2.14.0, numpy<2, opencv-python-headless and this tree, editable (tests/isolated_venv.py).
    if python_at_most_311() is None:
        pytest.skip("tflite-runtime 2.14 needs CPython <= 3.11 and none is installed")
    exe = named_venv("tflite-runtime")
    return exe.parent


@pytest.fixture(scope="module")
def golden_models(tmp_path_factory):
    """Two small real int8 exports with golden sets from ai-edge-litert.

    ``mobilenet``: MobileNetV2 alpha 0.35 at 48 px, random weights (BatchNorm calibrated), barely
    separable outputs: where the two runtimes' rounding matters most. ``tiny``: one conv + dense,
    where they differ by a single 1/255 step at most.
    """
    from edgecls.core.keras import keras
    from edgecls.optimize.convert import convert_model
    from edgecls.train.backbones import BackboneChoice, build_classifier, calibrate_batchnorm, get_backbone

    root = tmp_path_factory.mktemp("verify_runtimes")
    rng = np.random.default_rng(0)
    out = {}

    keras.utils.set_random_seed(0)
    m = build_classifier(BackboneChoice("mobilenet_v2", size=48, alpha=0.35, weights="none"), 3)
    calib = rng.integers(0, 256, size=(32, 48, 48, 3)).astype(np.float32)
    calibrate_batchnorm(get_backbone(m), calib)
    (root / "mobilenet").mkdir()
    out["mobilenet"] = root / "mobilenet" / "model_int8.tflite"
    out["mobilenet"].write_bytes(convert_model(m, "int8", representative=calib))
    images = rng.integers(0, 256, size=(N_GOLDEN, 48, 48, 3), dtype=np.uint8)
    write_golden_set(out["mobilenet"], images, labels=rng.integers(0, 3, N_GOLDEN), label_names=["a", "b", "c"])
    (root / "mobilenet" / "labels.txt").write_text("a\nb\nc\n")

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    tiny = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    images = rng.integers(0, 256, size=(N_GOLDEN + 16, 32, 32, 3), dtype=np.uint8)
    images[::2, :, :, 0] //= 4
    (root / "tiny").mkdir()
    out["tiny"] = root / "tiny" / "model_int8.tflite"
    out["tiny"].write_bytes(convert_model(tiny, "int8", representative=images[N_GOLDEN:].astype(np.float32)))
    write_golden_set(out["tiny"], images[:N_GOLDEN], label_names=["a", "b", "c"])
    (root / "tiny" / "labels.txt").write_text("a\nb\nc\n")
    return out


def _device(venv: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's own edgecls only
    return subprocess.run([str(venv / "edgecls"), *args], capture_output=True, text=True, timeout=300, env=env)


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("which", ["mobilenet", "tiny"])
def test_ai_edge_litert_reproduces_the_golden_set_bit_for_bit(golden_models, which, tmp_path):
    """In a fresh process with another thread count than the golden set's: the runtime's own agreement."""
    if importlib.util.find_spec("ai_edge_litert") is None and os.environ.get("CI") != "true":
        pytest.skip("ai-edge-litert is not installed here (the device extra installs it)")
    report = tmp_path / "verify.json"
    proc = subprocess.run([sys.executable, "-c", "from edgecls.cli import main; main()", "verify",
                           str(golden_models[which]), "--threads", "3", "--json", str(report)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(report.read_text())
    assert r["device_runtime"].startswith("ai_edge_litert") and r["threads"] == 3
    assert r["passed"] and r["bit_identical"] and r["top1_agreement"] == 1.0 and r["runtime_notice"] is None


@pytest.mark.prebuild("tflite-runtime")
def test_the_venv_has_tflite_runtime_and_neither_tensorflow_nor_ai_edge_litert(tflite_runtime_venv):
    code = ("import importlib.util as u, numpy, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
            "('tflite_runtime', 'ai_edge_litert', 'tensorflow')} | {'numpy': numpy.__version__}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = json.loads(subprocess.run([str(tflite_runtime_venv / "python"), "-c", code], capture_output=True,
                                      text=True, check=True, env=env).stdout)
    assert found["tflite_runtime"] and not found["ai_edge_litert"] and not found["tensorflow"]
    assert found["numpy"].startswith("1.")


@pytest.mark.prebuild("tflite-runtime")
def test_tflite_runtime_differences_are_reported_and_clear_flips_fail(tflite_runtime_venv, golden_models, tmp_path):
    report = tmp_path / "v.json"
    proc = _device(tflite_runtime_venv, "verify", str(golden_models["mobilenet"]), "--json", str(report))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    r = json.loads(report.read_text())
    assert r["device_runtime"] == "tflite_runtime 2.14.0" and r["host_runtime"].startswith("ai_edge_litert")
    assert not r["bit_identical"] and r["max_abs_raw_diff"] >= 2
    assert r["flipped_clear"] >= 1 and r["top1_agreement"] < 1.0
    assert "changed on this runtime" in r["failure"]
    out = proc.stdout
    assert "outputs        : differ" in out and "flipped (host margin):" in out
    assert "Note: tflite-runtime 2.14.0 is not the runtime export checked parity with" in out
    assert "pip install ai-edge-litert" in out


@pytest.mark.prebuild("tflite-runtime")
def test_tflite_runtime_small_differences_are_reported_but_pass(tflite_runtime_venv, golden_models, tmp_path):
    report = tmp_path / "v.json"
    proc = _device(tflite_runtime_venv, "verify", str(golden_models["tiny"]), "--json", str(report))
    r = json.loads(report.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert r["passed"] and r["flipped_clear"] == 0
    assert r["device_runtime"] == "tflite_runtime 2.14.0"
    assert not r["bit_identical"] and r["max_abs_raw_diff"] == 1  # one rounding step, reported not hidden
    assert "Note: tflite-runtime 2.14.0" in proc.stdout


@pytest.mark.prebuild("tflite-runtime")
def test_doctor_on_tflite_runtime_tells_the_user_and_runs_verify(tflite_runtime_venv, golden_models):
    proc = _device(tflite_runtime_venv, "doctor", "--model", str(golden_models["mobilenet"]))
    assert proc.returncode == 1
    out = proc.stdout
    assert re.search(r"ok tflite_runtime +2\.14\.0", out) and "-- ai_edge_litert  not installed" in out
    assert "runtime tflite_runtime" in out
    assert "-- verify: 48 golden images, outputs differ" in out
    assert "Note: tflite-runtime 2.14.0 is not the runtime export checked parity with" in out
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: verify failed: ")
    ok = _device(tflite_runtime_venv, "doctor", "--model", str(golden_models["tiny"]))
    assert ok.returncode == 0 and "ok verify: 48 golden images, outputs differ (max |raw diff| 1)" in ok.stdout


@pytest.fixture(scope="module")
def golden_16x8(tmp_path_factory):
    """MobileNetV2 alpha 0.35 at 48 px (random weights, BatchNorm calibrated) as 16x8 (int16
    activations, int8 weights) with int16 in/out, and a golden set from ai-edge-litert."""
    from edgecls.core.keras import keras
    from edgecls.train.backbones import BackboneChoice, build_classifier, calibrate_batchnorm, get_backbone
    from tflite_16x8 import convert_16x8

    root = tmp_path_factory.mktemp("verify_16x8")
    rng = np.random.default_rng(1)
    keras.utils.set_random_seed(0)
    m = build_classifier(BackboneChoice("mobilenet_v2", size=48, alpha=0.35, weights="none"), 3)
    calib = rng.integers(0, 256, size=(32, 48, 48, 3)).astype(np.float32)
    calibrate_batchnorm(get_backbone(m), calib)
    model = root / "model_int8.tflite"
    model.write_bytes(convert_16x8(m, calib, "int16"))
    images = rng.integers(0, 256, size=(16, 48, 48, 3), dtype=np.uint8)
    write_golden_set(model, images, label_names=["a", "b", "c"])
    (root / "labels.txt").write_text("a\nb\nc\n")
    return model


@pytest.mark.prebuild("tflite-runtime")
def test_tflite_runtime_runs_a_16x8_model_with_int16_in_out(tflite_runtime_venv, golden_16x8, tmp_path):
    """tflite-runtime 2.14 has the int16 kernels: the device side quantizes the pixels into the int16
    input and dequantizes the int16 output, and agrees with ai-edge-litert's golden outputs."""
    report = tmp_path / "v.json"
    proc = _device(tflite_runtime_venv, "verify", str(golden_16x8), "--json", str(report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(report.read_text())
    assert r["device_runtime"] == "tflite_runtime 2.14.0" and r["passed"] and r["flipped_clear"] == 0
    assert r["max_abs_prob_diff"] < 0.01  # int16 outputs: steps of 1/32768
