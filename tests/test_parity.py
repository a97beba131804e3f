"""Parity: the gate's figures from crafted probabilities, and the real path through the device runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecls.core.config import ParityConfig
from edgecls.core.errors import EdgeclsError
from edgecls.optimize.gate import Gates, ParityReport, compare, format_parity

LABELS = ["a", "b", "c"]
CLEAR = np.array([0.9, 0.05, 0.05])


def _onehot(top: np.ndarray, sure: float = 0.9) -> np.ndarray:
    """Probabilities whose top-1 is ``top`` with a clear margin."""
    rest = (1.0 - sure) / 2
    return np.eye(3)[top] * (sure - rest) + rest


def test_compare_figures_and_gates():
    y = np.array([0, 0, 1, 1, 2])
    p_float = _onehot(np.array([0, 0, 1, 1, 2]))        # all right, all clear
    p_lite = _onehot(np.array([0, 1, 1, 1, 2]))         # one image of class a flips to b
    r = compare(p_float, p_lite, y, LABELS)
    assert r.float_accuracy == 1.0 and r.tflite_accuracy == pytest.approx(0.8)
    assert r.accuracy_drop_points == pytest.approx(20.0) and r.agreement == pytest.approx(0.8)
    assert (r.n_clear, r.clear_agreement) == (5, pytest.approx(0.8))
    assert r.per_class["a"] == {"n": 2, "float_accuracy": 1.0, "tflite_accuracy": 0.5, "changed_top1": 1,
                                "change_points": -50.0}
    assert r.per_class["b"]["change_points"] == 0.0 and r.per_class["b"]["changed_top1"] == 0
    assert r.max_abs_prob_diff == pytest.approx(0.85)
    assert r.passed is False and [c.gate for c in r.failed] == ["accuracy_drop", "clear_agreement"]
    assert "accuracy drop 20.00 points > 1 (--max-drop)" in r.failure()
    assert "clear-decision agreement 0.8000 < 0.99 (--min-clear-agreement)" in r.failure()
    ok = compare(p_float, p_float, y, LABELS, Gates(max_drop=0.0, min_clear_agreement=1.0, min_agreement=1.0))
    assert ok.passed is True and ok.failure() is None and ok.mean_abs_prob_diff == 0.0
    # 5 images cannot decide anything: the intervals are wide and cross the gates.
    assert r.conclusive is False and ok.conclusive is False
    lo, hi = r.agreement_ci95
    assert lo < 0.5 < 0.8 < hi < 1.0
    dlo, dhi = r.accuracy_drop_ci95_points
    assert dlo < 0.0 < 20.0 < dhi


def test_the_default_gate_passes_near_tie_flips_and_fails_clear_ones():
    """The decision the gate encodes: near-ties may flip, clear decisions may not; all-image agreement is reported."""
    y = np.array([0, 1, 2, 0, 1, 2])
    p_float = np.array([[0.50, 0.46, 0.04],    # near-tie (margin 0.04)
                        [0.30, 0.65, 0.05],    # clear (margin 0.35)
                        [0.05, 0.15, 0.80],    # clear
                        [0.44, 0.40, 0.16],    # near-tie (0.04)
                        [0.10, 0.80, 0.10],    # clear
                        [0.10, 0.10, 0.80]])   # clear
    near = p_float.copy()
    near[[0, 3]] = near[[0, 3]][:, [1, 0, 2]]  # both near-ties swap their top two
    r = compare(p_float, near, y, LABELS, Gates(max_drop=100.0))
    assert r.changed == {"all": 2, "clear": 0, "near_ties": 2, "output_ties": 0}
    assert (r.n_clear, r.clear_agreement, r.agreement) == (4, 1.0, pytest.approx(4 / 6))
    assert r.passed is True  # all-image agreement 0.67 is not gated by default
    assert r.clear_agreement_ci95[1] == 1.0 and r.clear_agreement_ci95[0] < 0.6  # 4 images decide little
    table = format_parity(r)
    assert "changed top-1            : 2: 0 clear decisions, 2 near-ties" in table
    assert "top-1 agreement, all     : 0.6667" in table and "(reported, not gated)" in table
    # --min-agreement makes all-image agreement a gate again, and the failure says what kind of error is left.
    strict = compare(p_float, near, y, LABELS, Gates(max_drop=100.0, min_agreement=0.9))
    assert strict.passed is False and [c.gate for c in strict.failed] == ["agreement"]
    assert "every changed top-1 (2) was a near-tie (float margin < 0.1)" in strict.failure()

    # A uint8 softmax (steps of 1/256) rounds a 0.46 / 0.50 near-tie to two equal scores; argmax takes
    # the first class, so the top-1 changes although the file ranks neither class above the other.
    f2 = p_float.copy()
    f2[0] = [0.46, 0.50, 0.04]
    tied = near.copy()
    tied[0] = np.round(np.array([0.48, 0.48, 0.04]) * 256) / 256
    r = compare(f2, tied, y, LABELS, Gates(max_drop=100.0, min_agreement=0.9))
    assert (r.changed["all"], r.changed["output_ties"]) == (2, 1)
    assert "1 changed top-1s score exactly equal in the file's own output" in r.failure()
    assert "1 of them exact ties in the file's 8-bit output" in format_parity(r)

    clear = p_float.copy()
    clear[1] = [0.65, 0.30, 0.05]  # a clear decision changes
    r = compare(p_float, clear, y, LABELS, Gates(max_drop=100.0))
    assert r.changed["clear"] == 1 and r.clear_agreement == pytest.approx(0.75)
    assert r.passed is False and "near-tie" not in r.failure()


def test_a_set_without_clear_decisions_has_nothing_to_gate_and_says_so():
    y = np.array([0, 1])
    p = np.array([[0.40, 0.35, 0.25], [0.30, 0.36, 0.34]])
    r = compare(p, p[:, [1, 0, 2]], y, LABELS)
    assert r.n_clear == 0 and r.clear_agreement is None and r.passed is False  # the drop still gates
    assert [c.gate for c in r.failed] == ["accuracy_drop"] and r.conclusive is False
    assert "no image is clearly decided" in format_parity(r)


def test_the_report_round_trips_through_its_json():
    y = np.arange(30) % 3
    r = compare(_onehot(y), _onehot((y + (np.arange(30) == 0)) % 3), y, LABELS, Gates(min_agreement=0.5))
    r.source, r.quant_error = "run test+val splits", {"worst": [], "n_tensors": 0, "rounding_noise": 0.29}
    back = ParityReport.from_json(json.loads(json.dumps(r.as_json())))
    assert back == r and back.as_json() == r.as_json()
    assert r.as_json()["passed"] is False and r.as_json()["failure"] == r.failure()


@pytest.mark.parametrize("k, n, lo, hi", [
    (0, 10, 0.0, 0.2775),      # the textbook "0 of 10" upper bound
    (8, 10, 0.4902, 0.9433),   # Wilson (1927) score interval, as tabulated
    (10, 10, 0.7225, 1.0),
    (98, 100, 0.9300, 0.9945),
])
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    from edgecls.optimize.gate import wilson_interval

    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=5e-4) and got[1] == pytest.approx(hi, abs=5e-4)


def test_paired_drop_interval_shrinks_with_n_and_respects_pairing():
    from edgecls.optimize.gate import paired_difference_interval, wilson_interval

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
    """All top-1s agree: 12 clear images cannot show clear-decision agreement >= 0.99, 400 can (Wilson lower
    bound 0.9905)."""
    y = np.arange(n) % 3
    p = _onehot(y)
    r = compare(p, p, y, LABELS)
    assert r.passed is True and r.conclusive is conclusive
    table = format_parity(r)
    assert "95% CI" in table
    assert ("inconclusive" in table) is (not conclusive)


@pytest.mark.parametrize("n, wrong_to_wrong, right_to_wrong, could", [
    (100, 2, 0, True),     # clear agreement 0.98, interval 0.930-0.995 reaches the 0.99 gate
    (1000, 40, 0, False),  # clear agreement 0.96, interval 0.946-0.971: more such images would fail too
    (100, 0, 0, False),    # passed: nothing to decide
    (100, 0, 2, True),     # drop 2 points (interval reaches 1) and clear agreement 0.98 (0.930-0.995): both undecided
    (400, 0, 12, False),   # clear agreement undecided (0.948-0.983) but the drop is not (3 points, 1.4..5.2)
    (1000, 0, 15, True),   # both failed, both intervals reach their gates
])
def test_more_images_could_pass_only_when_every_failed_gate_is_undecided(n, wrong_to_wrong, right_to_wrong, could):
    """What export's failure advises (--parity-data): only when more images could change the verdict."""
    y = np.arange(n) % 3
    top_f, top_l = y.copy(), y.copy()
    k = wrong_to_wrong  # float wrong, int8 wrong differently: agreement falls, accuracy does not
    top_f[:k], top_l[:k] = (y[:k] + 1) % 3, (y[:k] + 2) % 3
    top_l[k:k + right_to_wrong] = (y[k:k + right_to_wrong] + 1) % 3  # float right, int8 wrong
    r = compare(_onehot(top_f), _onehot(top_l), y, LABELS)
    assert r.more_images_could_pass() is could


@pytest.mark.slow
def test_int8_parity_on_the_held_out_images(exported_run, tmp_path):
    out = tmp_path / "parity.json"
    model = exported_run.path / "export" / "model_int8.tflite"
    r = run_parity_(ParityConfig(run=str(exported_run.path), model=str(model), json=str(out), threads=1))
    split = json.loads((exported_run.path / "split.json").read_text())
    assert r.gates == Gates(max_drop=1.0, min_clear_agreement=0.99, min_agreement=None)
    assert r.passed is (r.accuracy_drop_points <= 1.0 and (r.clear_agreement is None or r.clear_agreement >= 0.99))
    # ~two dozen held-out images can never be conclusive.
    assert r.conclusive is False and r.agreement_ci95[0] < 0.98
    # The int8 file was diagnosed: worst tensors first, rmse/scale near rounding noise (0.29) or above.
    qe = r.quant_error
    worst = [e["rmse_scale"] for e in qe["worst"]]
    assert worst == sorted(worst, reverse=True) and len(worst) == 5 and qe["n_tensors"] > 50
    assert 0.25 < worst[-1] <= worst[0] < 5.0
    assert r.n_images == len(split["test"]) + len(split["val"]) == sum(c["n"] for c in r.per_class.values())
    assert r.float_model.endswith("model.keras") and r.runtime
    # Exact input quantization + calibration on every training image keep probabilities close
    # (measured 0.054 on this tiny random-weight model's 12 test images, 0.204 on test + val once its
    # head trained on cached features). A wrong input scale or an uncalibrated activation range moves
    # whole probability vectors (the bound is for that, not measured here).
    assert r.mean_abs_prob_diff < 0.3
    assert ParityReport.from_json(json.loads(out.read_text())) == r
    table = format_parity(r)
    assert "clear-decision agreement" in table and ("PASSED" in table or "FAILED" in table)
    assert "worst int8 tensors" in table and qe["worst"][0]["tensor"].split(";")[0][-40:] in table


def run_parity_(cfg: ParityConfig) -> ParityReport:
    from edgecls.optimize.parity import run_parity

    return run_parity(cfg, raise_on_fail=False)


@pytest.mark.slow
def test_a_float32_file_passes_the_default_gates(exported_run, tmp_path):
    """A real gate that must pass: the float32 .tflite classifies like its Keras model."""
    from edgecls.core.config import ExportConfig
    from edgecls.optimize.export import export_run

    export_run(ExportConfig(run=str(exported_run.path), mode="float32", out=str(tmp_path)))
    r = run_parity_(ParityConfig(run=str(exported_run.path), model=str(tmp_path / "model_float32.tflite"),
                                 min_agreement=1.0))
    assert r.passed is True and r.agreement == 1.0 and r.mean_abs_prob_diff < 1e-4
    assert r.quant_error is None  # nothing quantized, nothing to diagnose


@pytest.mark.slow
def test_parity_takes_the_pruned_float_reference_from_the_card(exported_run):
    model = exported_run.path / "export" / "model_pruned_int8.tflite"
    r = run_parity_(ParityConfig(run=str(exported_run.path), model=str(model), diagnose=False))
    assert r.float_model.endswith("model_pruned.keras")
    saved = json.loads((exported_run.path / "export" / "parity_pruned_int8.json").read_text())
    assert saved["float_model"] == r.float_model and saved["agreement"] == r.agreement


@pytest.fixture(scope="module")
def shifted_reference(exported_run, tmp_path_factory):
    """A float model whose classes are rotated by one and made sure: every top-1 disagrees with the tflite,
    and every image is a clear decision."""
    from edgecls.train.model_io import load_model, save_model

    model = load_model(exported_run.path / "model.keras")
    head = model.get_layer("predictions")
    kernel, bias = head.get_weights()
    head.set_weights([np.roll(kernel, 1, axis=1) * 50.0, np.roll(bias, 1) * 50.0])
    path = tmp_path_factory.mktemp("shifted") / "shifted.keras"
    save_model(model, path)
    return path


@pytest.mark.slow
def test_parity_fails_its_gate_with_advice(exported_run, shifted_reference):
    from edgecls.optimize.parity import ParityFailed, run_parity

    model = exported_run.path / "export" / "model_int8.tflite"
    with pytest.raises(ParityFailed, match=r"clear-decision agreement 0\.\d+ < 0.99 \(--min-clear-agreement\)") as e:
        run_parity(ParityConfig(run=str(exported_run.path), model=str(model), float_model=str(shifted_reference),
                                max_drop=100.0))
    r = e.value.report
    assert r.clear_agreement < 0.5 and r.passed is False and r.n_clear > 0.8 * r.n_images


@pytest.mark.slow
def test_parity_on_a_data_folder_with_the_run_classes(exported_run):
    from edgecls import data
    from edgecls.optimize.parity import tflite_scores
    from edgecls.train.model_io import load_model

    split = json.loads((exported_run.path / "split.json").read_text())
    model = exported_run.path / "export" / "model_int8.tflite"
    r = run_parity_(ParityConfig(run=str(exported_run.path), model=str(model), data=split["root"], diagnose=False))
    labels = (exported_run.path / "labels.txt").read_text().split()
    items = [it for s in ("train", "val", "test") for it in split[s]]
    per_class = {name: sum(1 for _, lab in items if lab == i) for i, name in enumerate(labels)}
    assert {name: c["n"] for name, c in r.per_class.items()} == per_class
    assert r.n_images == len(items) and r.source == f"folder {split['root']}"
    # The figures, recomputed here from the same images through both models (order does not matter).
    x, y = data.load_images(split["root"], items, 64)
    p_float = load_model(exported_run.path / "model.keras").predict(x.astype(np.float32), verbose=0)
    p_lite = tflite_scores(model, x)
    assert r.float_accuracy == pytest.approx(float(np.mean(p_float.argmax(1) == y)))
    assert r.tflite_accuracy == pytest.approx(float(np.mean(p_lite.argmax(1) == y)))
    assert r.agreement == pytest.approx(float(np.mean(p_float.argmax(1) == p_lite.argmax(1))))


def test_parity_rejects_impossible_gates(tmp_path):
    with pytest.raises(EdgeclsError, match=r"--min-agreement must be a finite number between 0 and 1, got 98"):
        ParityConfig(run=str(tmp_path), model="m.tflite", min_agreement=98)
    with pytest.raises(EdgeclsError, match=r"--max-drop must be a finite number between 0 and 100 points, got nan"):
        ParityConfig(run=str(tmp_path), model="m.tflite", max_drop=float("nan"))
