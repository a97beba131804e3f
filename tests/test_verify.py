"""edgecls verify: the device's runtime against the golden set export wrote on the host."""

from __future__ import annotations

import json
import shutil

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


def test_golden_set_round_trip_and_same_runtime_is_bit_identical(tiny_tflite, tmp_path):
    model, path = _golden(tiny_tflite, tmp_path)
    assert path == golden_path_for(model) == tmp_path / "model_int8.golden.npz"
    g = read_golden_set(path)
    assert g["images"].shape == (8, 32, 32, 3) and g["raw"].dtype == np.uint8
    assert g["meta"]["label_names"] == ["a", "b", "c"]
    r = verify_model(model)
    assert r["passed"] and r["bit_identical"] and r["top1_agreement"] == 1.0 and r["max_abs_raw_diff"] == 0


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
