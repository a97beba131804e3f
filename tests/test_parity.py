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
    # 5 images cannot decide anything: the intervals are wide and cross the gates.
    assert r["conclusive"] is False and ok["conclusive"] is False
    lo, hi = r["agreement_ci95"]
    assert lo < 0.5 < 0.8 < hi < 1.0
    dlo, dhi = r["accuracy_drop_ci95_points"]
    assert dlo < 0.0 < 20.0 < dhi


def test_compare_tells_near_tie_flips_from_clear_ones():
    """A flip among images the float model barely decides is reported apart from a flip of a clear one."""
    from edgecls.optimize.parity import compare, format_parity

    y = np.array([0, 1, 2, 0, 1, 2])
    p_float = np.array([[0.50, 0.46, 0.04],    # near-tie (margin 0.04)
                        [0.30, 0.65, 0.05],    # clear (margin 0.35)
                        [0.05, 0.15, 0.80],    # clear
                        [0.44, 0.40, 0.16],    # near-tie (0.04)
                        [0.10, 0.80, 0.10],    # clear
                        [0.10, 0.10, 0.80]])   # clear
    near = p_float.copy()
    near[[0, 3]] = near[[0, 3]][:, [1, 0, 2]]  # both near-ties swap their top two
    r = compare(p_float, near, y, LABELS, max_drop=100.0, min_agreement=0.9)
    t = r["near_ties"]
    assert (t["flipped"], t["flipped_clear"], t["n_clear"], t["agreement_clear"]) == (2, 0, 4, 1.0)
    assert t["agreement_clear_ci95"][1] == 1.0 and t["agreement_clear_ci95"][0] < 0.6  # 4 images decide little
    assert "every changed top-1 (2) was a near-tie (float margin < 0.1)" in r["failure"]
    assert "2, 0 of them on the 4 images the float model decides with a margin >= 0.1" in format_parity(r)
    assert t["output_ties"] == 0 and "exact ties" not in r["failure"] and "output ties" not in format_parity(r)

    # A uint8 softmax (steps of 1/256) rounds a 0.46 / 0.50 near-tie to two equal scores; argmax takes
    # the first class, so the top-1 changes although the file ranks neither class above the other.
    f2 = p_float.copy()
    f2[0] = [0.46, 0.50, 0.04]
    tied = near.copy()
    tied[0] = np.round(np.array([0.48, 0.48, 0.04]) * 256) / 256
    r = compare(f2, tied, y, LABELS, max_drop=100.0, min_agreement=0.9)
    assert (r["near_ties"]["flipped"], r["near_ties"]["output_ties"]) == (2, 1)
    assert "1 of them are exact ties in the model's own output" in r["failure"]
    assert "output ties   : 1 of the changed top-1s" in format_parity(r)

    clear = p_float.copy()
    clear[1] = [0.65, 0.30, 0.05]  # a clear decision changes
    r = compare(p_float, clear, y, LABELS, max_drop=100.0, min_agreement=0.9)
    assert (r["near_ties"]["flipped"], r["near_ties"]["flipped_clear"]) == (1, 1)
    assert r["near_ties"]["agreement_clear"] == pytest.approx(0.75)
    assert "near-tie" not in r["failure"]


@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 10, 0.0, 0.2775),      # the textbook "0 of 10" upper bound
    (8, 10, 0.4902, 0.9433),   # Wilson (1927) score interval, as tabulated
    (10, 10, 0.7225, 1.0),
    (98, 100, 0.9300, 0.9945),
])
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    from edgecls.optimize.parity import wilson_interval

    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=5e-4) and got[1] == pytest.approx(hi, abs=5e-4)


def test_paired_drop_interval_shrinks_with_n_and_respects_pairing():
    from edgecls.optimize.parity import paired_difference_interval, wilson_interval

    # Same proportions (2% of images lose their right answer), 100 vs 10 000 images.
    small = paired_difference_interval(80, 2, 0, 18)
    large = paired_difference_interval(8000, 200, 0, 1800)
    assert small[0] < 0.02 < small[1] and large[0] < 0.02 < large[1]
    assert (large[1] - large[0]) < (small[1] - small[0]) / 5
    assert large[0] > 0.0  # 10 000 images prove the drop; 100 do not
    assert small[0] < 0.005
    # Identical predictions: a paired interval is far narrower than two unpaired Wilson intervals.
    lo, hi = paired_difference_interval(900, 0, 0, 100)
    w = wilson_interval(900, 1000)
    assert lo <= 0.0 <= hi and (hi - lo) < (w[1] - w[0])


@pytest.mark.parametrize("n, conclusive", [(12, False), (400, True)])
def test_gate_is_conclusive_only_with_enough_images(n, conclusive):
    """All top-1s agree: 12 images cannot show agreement >= 0.98, 400 can (Wilson lower bound 0.9905)."""
    from edgecls.optimize.parity import compare, format_parity

    y = np.arange(n) % 3
    p = np.eye(3)[y] * 0.9 + 0.05
    r = compare(p, p, y, LABELS, max_drop=1.0, min_agreement=0.98)
    assert r["passed"] is True and r["conclusive"] is conclusive
    table = format_parity(r)
    assert "95% CI" in table
    assert ("inconclusive" in table) is (not conclusive)


@pytest.mark.parametrize("n, wrong_to_wrong, right_to_wrong, could", [
    (100, 4, 0, True),     # agreement 0.96, interval 0.902-0.984 reaches the 0.98 gate
    (1000, 40, 0, False),  # agreement 0.96, interval 0.946-0.971: more such images would fail too
    (100, 0, 0, False),    # passed: nothing to decide
    (100, 0, 2, True),     # drop 2 points, interval -2.0..7.0 reaches the 1-point gate (agreement 0.98 passes)
    (400, 0, 12, False),   # agreement undecided (0.948-0.983) but the drop is not (3 points, 1.4..5.2)
    (1000, 0, 15, True),   # both failed, both intervals reach their gates
])
def test_more_images_could_pass_only_when_every_failed_gate_is_undecided(n, wrong_to_wrong, right_to_wrong, could):
    """What export's failure advises (--parity-data): only when more images could change the verdict."""
    from edgecls.optimize.parity import compare, more_images_could_pass

    y = np.arange(n) % 3
    top_f, top_l = y.copy(), y.copy()
    k = wrong_to_wrong  # float wrong, int8 wrong differently: agreement falls, accuracy does not
    top_f[:k], top_l[:k] = (y[:k] + 1) % 3, (y[:k] + 2) % 3
    top_l[k:k + right_to_wrong] = (y[k:k + right_to_wrong] + 1) % 3  # float right, int8 wrong
    r = compare(np.eye(3)[top_f] * 0.9 + 0.05, np.eye(3)[top_l] * 0.9 + 0.05, y, LABELS, max_drop=1.0,
                min_agreement=0.98)
    assert more_images_could_pass(r) is could


@pytest.mark.slow
def test_int8_parity_on_the_held_out_images(exported_run, tmp_path):
    from edgecls.optimize.parity import format_parity, run_parity

    out = tmp_path / "parity.json"
    model = exported_run.path / "export" / "model_int8.tflite"
    r = run_parity(ParityConfig(run=str(exported_run.path), model=str(model), json=str(out), threads=1),
                   raise_on_fail=False)
    split = json.loads((exported_run.path / "split.json").read_text())
    # The default gates decide on the point estimate; its ~two dozen held-out images can never be conclusive.
    assert r["gates"] == {"max_drop": 1.0, "min_agreement": 0.98}
    assert r["passed"] is (r["agreement"] >= 0.98 and r["accuracy_drop_points"] <= 1.0)
    assert r["conclusive"] is False and r["agreement_ci95"][0] < 0.98
    # The int8 file was diagnosed: worst tensors first, rmse/scale near rounding noise (0.29) or above.
    qe = r["quant_error"]
    worst = [e["rmse_scale"] for e in qe["worst"]]
    assert worst == sorted(worst, reverse=True) and len(worst) == 5 and qe["n_tensors"] > 50
    assert 0.25 < worst[-1] <= worst[0] < 5.0
    assert r["n_images"] == len(split["test"]) + len(split["val"]) == sum(c["n"] for c in r["per_class"].values())
    assert r["float_model"].endswith("model.keras") and r["runtime"]
    # Exact input quantization + calibration on every training image keep probabilities close
    # (measured 0.054 on this tiny random-weight model's 12 test images, 0.122 on its test + val
    # images; 0.144 on the test images with only 30 calibration images; 0.204 on test + val once
    # its head trained on cached features, fresh-clone CI 2026-11-28). A wrong input scale or an
    # uncalibrated activation range moves whole probability vectors (the bound is for that, not measured here).
    assert r["mean_abs_prob_diff"] < 0.3
    assert json.loads(out.read_text()) == r
    table = format_parity(r)
    assert "agreement" in table and ("PASSED" in table or "FAILED" in table) and "worst int8 tensors" in table
    assert qe["worst"][0]["tensor"].split(";")[0][-40:] in table


@pytest.mark.slow
def test_a_float32_file_passes_the_default_gates(exported_run, tmp_path):
    """A real gate that must pass: the float32 .tflite classifies like its Keras model."""
    from edgecls.core.config import ExportConfig
    from edgecls.optimize.export import export_run
    from edgecls.optimize.parity import run_parity

    export_run(ExportConfig(run=str(exported_run.path), mode="float32", out=str(tmp_path)))
    r = run_parity(ParityConfig(run=str(exported_run.path), model=str(tmp_path / "model_float32.tflite")))
    assert r["passed"] is True and r["agreement"] == 1.0 and r["mean_abs_prob_diff"] < 1e-4
    assert r["quant_error"] is None  # nothing quantized, nothing to diagnose


@pytest.mark.slow
def test_parity_takes_the_pruned_float_reference_from_the_card(exported_run):
    from edgecls.optimize.parity import run_parity

    model = exported_run.path / "export" / "model_pruned_int8.tflite"
    r = run_parity(ParityConfig(run=str(exported_run.path), model=str(model), diagnose=False), raise_on_fail=False)
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
                                data=root, diagnose=False), raise_on_fail=False)
    split = json.loads((exported_run.path / "split.json").read_text())
    assert r["n_images"] == sum(len(split[s]) for s in ("train", "val", "test"))
    assert r["source"].startswith("folder")


def test_parity_rejects_impossible_gates(tmp_path):
    from edgecls.optimize.parity import run_parity

    with pytest.raises(EdgeclsError, match="min-agreement is a rate"):
        run_parity(ParityConfig(run=str(tmp_path), model="m.tflite", min_agreement=98))
