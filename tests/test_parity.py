"""Parity: figures from crafted probabilities, and the real path through the device runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecls.core.config import ParityConfig
from edgecls.core.errors import EdgeclsError

LABELS = ["a", "b", "c"]


def test_compare_figures_and_gates():
    from edgecls.optimize.parity import compare

    y = np.array([0, 0, 1, 1, 2])
    p_float = np.eye(3)[[0, 0, 1, 1, 2]] * 0.9 + 0.05          # all right
    p_lite = np.eye(3)[[0, 1, 1, 1, 2]] * 0.9 + 0.05           # one image of class a flips to b
    r = compare(p_float, p_lite, y, LABELS, max_drop=1.0, min_agreement=0.98)
    assert r["float_accuracy"] == 1.0 and r["tflite_accuracy"] == pytest.approx(0.8)
    assert r["accuracy_drop_points"] == pytest.approx(20.0) and r["agreement"] == pytest.approx(0.8)
    assert r["per_class"]["a"] == {"n": 2, "float_accuracy": 1.0, "tflite_accuracy": 0.5, "change_points": -50.0}
    assert r["per_class"]["b"]["change_points"] == 0.0
    assert r["max_abs_prob_diff"] == pytest.approx(0.9)
    assert r["passed"] is False
    assert "accuracy drop 20.00 points > --max-drop 1" in r["failure"]
    assert "agreement 0.8000 < --min-agreement 0.98" in r["failure"]
    assert "more representative samples" in r["failure"] and "backbone that quantizes better" in r["failure"]
    ok = compare(p_float, p_float, y, LABELS, max_drop=0.0, min_agreement=1.0)
    assert ok["passed"] is True and ok["failure"] is None and ok["mean_abs_prob_diff"] == 0.0


@pytest.mark.slow
def test_int8_parity_on_the_test_split(exported_run, tmp_path):
    from edgecls.optimize.parity import format_parity, run_parity

    out = tmp_path / "parity.json"
    model = exported_run.path / "export" / "model_int8.tflite"
    r = run_parity(ParityConfig(run=str(exported_run.path), model=str(model), json=str(out), threads=1,
                                max_drop=100.0, min_agreement=0.0))
    split = json.loads((exported_run.path / "split.json").read_text())
    assert r["n_images"] == len(split["test"]) == sum(c["n"] for c in r["per_class"].values())
    assert r["float_model"].endswith("model.keras") and r["runtime"]
    # Exact input quantization + calibration on every training image keep probabilities close
    # (measured 0.054 on this tiny, sharply trained model; 0.144 with only 30 calibration images).
    assert r["mean_abs_prob_diff"] < 0.1
    assert json.loads(out.read_text()) == r
    table = format_parity(r)
    assert "agreement" in table and "PASSED" in table


@pytest.mark.slow
def test_parity_takes_the_pruned_float_reference_from_the_card(exported_run):
    from edgecls.optimize.parity import run_parity

    model = exported_run.path / "export" / "model_pruned_int8.tflite"
    r = run_parity(ParityConfig(run=str(exported_run.path), model=str(model), max_drop=100.0, min_agreement=0.0))
    assert r["float_model"].endswith("model_pruned.keras")
    saved = json.loads((exported_run.path / "export" / "parity_pruned_int8.json").read_text())
    assert saved["float_model"] == r["float_model"] and saved["agreement"] == r["agreement"]


@pytest.fixture(scope="module")
def shifted_reference(exported_run, tmp_path_factory):
    """A float model whose classes are rotated by one: every top-1 disagrees with the tflite."""
    from edgecls.train.model_io import load_model, save_model

    model = load_model(exported_run.path / "model.keras")
    head = model.get_layer("predictions")
    kernel, bias = head.get_weights()
    head.set_weights([np.roll(kernel, 1, axis=1), np.roll(bias, 1)])
    path = tmp_path_factory.mktemp("shifted") / "shifted.keras"
    save_model(model, path)
    return path


@pytest.mark.slow
def test_parity_fails_its_gate_with_advice(exported_run, shifted_reference):
    from edgecls.optimize.parity import ParityFailed, run_parity

    model = exported_run.path / "export" / "model_int8.tflite"
    with pytest.raises(ParityFailed, match="agreement .* < --min-agreement 0.98.*representative samples") as e:
        run_parity(ParityConfig(run=str(exported_run.path), model=str(model), float_model=str(shifted_reference),
                                max_drop=100.0))
    assert e.value.report["agreement"] < 0.5 and e.value.report["passed"] is False


@pytest.mark.slow
def test_parity_on_a_data_folder_with_the_run_classes(exported_run):
    from edgecls.optimize.parity import run_parity

    root = json.loads((exported_run.path / "split.json").read_text())["root"]
    r = run_parity(ParityConfig(run=str(exported_run.path), model=str(exported_run.path / "export" / "model_int8.tflite"),
                                data=root, max_drop=100.0, min_agreement=0.0))
    split = json.loads((exported_run.path / "split.json").read_text())
    assert r["n_images"] == sum(len(split[s]) for s in ("train", "val", "test"))
    assert r["source"].startswith("folder")


def test_parity_rejects_impossible_gates(tmp_path):
    from edgecls.optimize.parity import run_parity

    with pytest.raises(EdgeclsError, match="min-agreement is a rate"):
        run_parity(ParityConfig(run=str(tmp_path), model="m.tflite", min_agreement=98))
