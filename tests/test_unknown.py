"""Calibrated confidence and the unknown answer: from the training run, through export, to the camera loop."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from conftest import write_colour_video


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- the pure parts ------------------------------------------------------------------------------------------


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_the_calibration_error():
    from edgecls.train.calibration import ece, fit_temperature, scaled

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2.0, (4000, 5))
    y = np.array([rng.choice(5, p=p) for p in _softmax(z)])  # labels drawn from softmax(z): calibrated at T = 1
    overconfident = _softmax(3.0 * z)  # what a model with logits 3 z reports
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.08)
    before, after = ece(overconfident, y), ece(scaled(overconfident, t), y)
    assert before > 0.15 and after < 0.03, (before, after)
    assert np.array_equal(scaled(overconfident, t).argmax(1), overconfident.argmax(1))  # no top-1 moves


def test_ece_is_the_image_weighted_gap_between_score_and_accuracy_per_bin():
    from edgecls.train.calibration import ece

    # Bin [0.866, 0.933): 2 images, mean score 0.9, one right -> gap 0.4. Bin [0.6, 0.667): 2 images at 0.6, both
    # right -> gap 0.4. ECE = (2 * 0.4 + 2 * 0.4) / 4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    assert ece(probs, np.array([0, 1, 0, 0])) == pytest.approx(0.4)
    assert ece(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0.0


@pytest.mark.parametrize("keep, expected", [(1.0, 0.5), (0.75, 0.6), (0.5, 0.7), (0.25, 0.9)])
def test_the_threshold_keeps_the_asked_share_of_correct_answers(keep, expected):
    from edgecls.core.unknown import threshold_for_keep

    probs = np.array([[0.5, 0.5], [0.6, 0.4], [0.7, 0.3], [0.9, 0.1], [0.99, 0.01]])
    y = np.array([0, 0, 0, 0, 1])  # the 0.99 answer is wrong: it does not count
    t = threshold_for_keep(probs, y, keep)
    assert t == pytest.approx(expected)
    right = probs.argmax(1) == y
    assert (probs.max(1)[right] >= t).mean() >= keep


# -- through training and export ------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_puts_its_temperature_inside_the_model_and_export_keeps_it(tiny_run, tmp_path):
    """A run's model.keras holds the temperature it recorded; export's files compute softmax(logits / T), and
    carry the unknown rule where both our runtime and the ecosystem's readers look for it."""
    from edgecls.core.config import ExportConfig
    from edgecls.core.keras import keras
    from edgecls.core.rundir import RunDir
    from edgecls.optimize.export import export_run
    from edgecls.optimize.parity import tflite_scores
    from edgecls.runtime.classifier import Classifier
    from edgecls.train.calibration import temperature_of, with_temperature
    from edgecls.train.model_io import load_model, save_model

    metrics = json.loads((tiny_run / "metrics.json").read_text())
    model = load_model(tiny_run / "model.keras")
    assert temperature_of(model) == pytest.approx(metrics["calibration"]["temperature"], rel=1e-5)
    # A copy with a temperature far from 1, so that a file which dropped it could not pass.
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "logs", "cache", "plots", "export"))
    save_model(with_temperature(model, 2.5), run / "model.keras")
    card = export_run(ExportConfig(run=str(run), mode="float32", golden_images=0))
    assert card["temperature"] == pytest.approx(2.5) and card["unknown"]["threshold"] == metrics["unknown"]["threshold"]
    from edgecls import data

    root, split = data.load_split(RunDir.open(run))
    x, _ = data.load_images(root, split["test"] + split["val"], 64)
    logits = keras.Model(model.input, model.get_layer("predictions").output).predict(x.astype(np.float32), verbose=0)
    file = run / "export" / "model_float32.tflite"
    p = tflite_scores(file, x)
    np.testing.assert_allclose(p, _softmax(logits / 2.5), atol=2e-5)
    assert np.abs(p - _softmax(logits)).max() > 0.01  # the check can tell T = 2.5 from no temperature
    assert Classifier(file, num_threads=1).unknown_threshold == pytest.approx(metrics["unknown"]["threshold"])
    int8 = export_run(ExportConfig(run=str(run), mode="int8", golden_images=0, max_drop=100.0, min_clear_agreement=0.0))
    assert int8["temperature"] == pytest.approx(2.5)
    p8 = tflite_scores(run / "export" / "model_int8.tflite", x)
    assert np.abs(p8 - _softmax(logits / 2.5)).mean() < np.abs(p8 - _softmax(logits)).mean()


def _colour_model_with_rule(colour_model, tmp_path, threshold: float):
    """The suite's colour model (red ~1.0, blue ~1.0, grey 0.5/0.5) with an unknown rule packed as export packs it."""
    from edgecls.core.unknown import RULE_FILE, rule_file
    from edgecls.optimize.metadata import pack_files

    dest = tmp_path / "ruled" / "colour.tflite"
    dest.parent.mkdir()
    dest.write_bytes(pack_files(colour_model.read_bytes(), {RULE_FILE: rule_file(threshold, keep=0.95, temperature=1.0,
                                                                                  chosen_on="test")}))
    shutil.copy(colour_model.with_name("labels.txt"), dest.with_name("labels.txt"))
    return dest


@pytest.mark.parametrize("extra, grey_label", [
    ([], "unknown"),                                 # the model's own rule (0.7)
    (["--unknown-label", "none-of-these"], "none-of-these"),
    (["--unknown-threshold", "0"], "red"),           # off: grey's 0.5/0.5 tie answers the first class
])
def test_the_loop_answers_unknown_under_the_models_threshold(colour_model, tmp_path, extra, grey_label):
    model = _colour_model_with_rule(colour_model, tmp_path, 0.7)
    video = write_colour_video(tmp_path / "v.mp4", [("red", 4), ("grey", 4), ("blue", 4)])
    jsonl = tmp_path / "log.jsonl"
    res = CliRunner().invoke(cli, ["camera", "-m", str(model), "-s", str(video), "--threads", "1", "--headless",
                                   "--jsonl", str(jsonl), *extra])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["label"] for r in rows] == ["red"] * 4 + [grey_label] * 4 + ["blue"] * 4
    assert [r["unknown"] for r in rows] == [False] * 4 + [grey_label not in ("red",)] * 4 + [False] * 4
    # The model's own scores stay in the row: what a person needs to decide what it was.
    assert all(r["top_k"][0]["label"] in ("red", "blue") for r in rows)


def test_uncertain_capture_keeps_unknown_frames_in_their_own_folder(colour_model, tmp_path):
    model = _colour_model_with_rule(colour_model, tmp_path, 0.7)
    video = write_colour_video(tmp_path / "v.mp4", [("red", 3), ("grey", 3)])
    res = CliRunner().invoke(cli, ["camera", "-m", str(model), "-s", str(video), "--threads", "1", "--headless",
                                   "--save-uncertain", str(tmp_path / "unsure"), "--below", "0.3"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "unsure").iterdir()) == ["unknown"]
    assert len(list((tmp_path / "unsure" / "unknown").glob("*.jpg"))) == 3


# -- negatives ----------------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "data" / cls / f"{i}.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a photo")
    (tmp_path / "cats").mkdir()  # named like a class
    shutil.copy(tmp_path / "data" / "dogs" / "0.png", tmp_path / "cats" / "x.png")
    (tmp_path / "copies").mkdir()
    shutil.copy(tmp_path / "data" / "dogs" / "1.png", tmp_path / "copies" / "renamed.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "copies" / "new.png")
    return tmp_path


@pytest.mark.parametrize("negatives, message", [
    ("{t}/empty", "--negatives {t}/empty holds no usable image"),
    ("{t}/notes", "--negatives {t}/notes holds no usable image"),
    ("{t}/cats", "--negatives {t}/cats is named like the class 'cats' of {t}/data"),
    ("{t}/copies", "1 photo(s) in --negatives {t}/copies are also in {t}/data (e.g. renamed.png)"),
    ("{t}/data/dogs", "--negatives {t}/data/dogs overlaps the image folder {t}/data"),
    ("{t}/missing", "negatives folder not found: {t}/missing"),
])
def test_bad_negatives_are_one_clear_error_before_training(folders, negatives, message):
    t = str(folders.resolve())
    args = ["data", "check", f"{t}/data", "--no-decode", "--negatives", negatives.format(t=t)]
    res = CliRunner().invoke(cli, args)
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert res.exit_code in (1, 2) and len(errors) == 1 and message.format(t=t) in errors[0], res.output
    res = CliRunner().invoke(cli, ["train", f"{t}/data", "-o", f"{t}/run", "--weights", "none", "--size", "32",
                                   "--negatives", negatives.format(t=t)])
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message.format(t=t) in errors[0] and "Traceback" not in res.output, res.output
    assert not (folders / "run").exists()  # nothing half-made


def test_a_class_named_like_the_unknown_class_is_one_error_with_negatives(folders):
    t = folders.resolve()
    shutil.copytree(t / "data" / "dogs", t / "data_u" / "unknown")
    shutil.copytree(t / "data" / "cats", t / "data_u" / "cats")
    res = CliRunner().invoke(cli, ["data", "check", f"{t}/data_u", "--no-decode", "--negatives", f"{t}/copies"])
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert res.exit_code == 1 and errors == [
        f"Error: {t}/data_u has a class named 'unknown', the name --negatives gives the photos that are none of the "
        "classes: rename that class folder, or move its photos into the negatives"], res.output


@pytest.mark.slow
def test_negatives_become_the_unknown_class_from_training_to_the_camera_loop(tmp_path):
    """Two runs on the same red/blue photos, one with grey and green photos as negatives. The negatives' run has a
    third class, 'unknown', last in labels.txt; its rule rejects most held-out look-alikes that the plain run's rule
    accepts, the classes are still told apart, and the exported file carries the class to the device: the camera
    loop answers "unknown" for a grey frame by the class, with no threshold at all. Measured (MobileNetV2 0.35,
    32 px, random init, head only): look-alikes accepted 18 of 20 without negatives, 11 of 20 with."""
    from PIL import Image

    from edgecls.core.config import ExportConfig, TrainConfig
    from edgecls.core.unknown import UnknownRule
    from edgecls.optimize.export import export_run
    from edgecls.runtime.classifier import Classifier
    from edgecls.train.fit import train
    from edgecls.train.model_io import load_model

    rng = np.random.default_rng(0)

    def photos(folder, colour, n):
        folder.mkdir(parents=True)
        for i in range(n):
            px = np.clip(np.array(colour) + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(folder / f"{i}.png")

    photos(tmp_path / "data" / "red", (220, 30, 30), 30)
    photos(tmp_path / "data" / "blue", (30, 30, 220), 30)
    photos(tmp_path / "negatives" / "grey", (128, 128, 128), 20)
    photos(tmp_path / "negatives" / "green", (30, 200, 30), 20)
    photos(tmp_path / "unseen" / "grey", (110, 110, 110), 10)
    photos(tmp_path / "unseen" / "green", (40, 180, 40), 10)
    unseen = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "unseen").rglob("*.png"))])
    accepted, runs = {}, {}
    for name, extra in (("plain", {}), ("negatives", {"negatives": str(tmp_path / "negatives")})):
        cfg = TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / f"run-{name}"), backbone="mobilenet_v2",
                          alpha=0.35, size=32, weights="none", epochs=15, fine_tune_epochs=0,
                          batch_size=16, learning_rate=3e-2, augment=False, cache="memory", seed=0, **extra)
        run = runs[name] = train(cfg, verbose=0)
        m = json.loads(run.metrics_json.read_text())
        assert m["test_accuracy"] >= 0.6, name
        p = load_model(run.model_path).predict(unseen.astype(np.float32), verbose=0)
        rule = UnknownRule(m["unknown"]["threshold"], class_index=m["unknown"]["class_index"])
        accepted[name] = int((~rule.rejects_rows(p)).sum())
    plain, neg = runs["plain"], runs["negatives"]
    assert plain.labels_txt.read_text().split() == ["blue", "red"]
    assert neg.labels_txt.read_text().split() == ["blue", "red", "unknown"]
    m = json.loads(neg.metrics_json.read_text())
    assert m["unknown"]["class_index"] == 2 and json.loads(plain.metrics_json.read_text())["unknown"]["class_index"] is None
    assert m["unknown"]["negatives_test"]["n"] > 0 and m["unknown"]["negatives_test"]["accepted"] <= 0.5
    assert json.loads((neg.path / "split.json").read_text())["negatives"]["train"]
    assert accepted["negatives"] <= accepted["plain"] - 4, accepted
    # Export carries the class to the device; the loop applies it even with the threshold off.
    export_run(ExportConfig(run=str(neg.path), mode="float32", golden_images=0))
    file = neg.path / "export" / "model_float32.tflite"
    assert Classifier(file, num_threads=1).unknown_class == 2
    out = tmp_path / "rows.jsonl"
    res = CliRunner().invoke(cli, ["camera", "-m", str(file), "--source", str(tmp_path / "negatives" / "grey"),
                                   "--headless", "--unknown-threshold", "0", "--jsonl", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_class = [r["top_k"][0]["label"] == "unknown" for r in rows]
    assert len(rows) == 20 and sum(by_class) >= 5, by_class  # trained on them (random features: 10 of 20 here)
    assert all(r["unknown"] is c and r["label"] == ("unknown" if c else r["top_k"][0]["label"])
               for r, c in zip(rows, by_class))


def test_verify_holds_a_device_to_the_hosts_unknown_class_decisions():
    from edgecls.runtime.golden import _unknown_decisions

    # class 2 is the unknown class: rows 0 and 3 are unknown on the host (row 3 by a near-tie), 1 and 2 are not
    host = np.array([[0.05, 0.05, 0.90], [0.80, 0.10, 0.10], [0.10, 0.70, 0.20], [0.44, 0.10, 0.46]], np.float32)
    same = _unknown_decisions(host, host.copy(), None, unknown_class=2)
    assert (same["unknown_host"], same["unknown_changed"], same["unknown_changed_clear"]) == (2, 0, 0)
    device = host[:, [2, 1, 0]]  # classes 0 and 2 swap places: every row but 2 changes side
    moved = _unknown_decisions(host, device, None, unknown_class=2)
    # the near-tie (row 3, margin 0.02) may land on either side; rows 0 and 1 were clear (margins 0.85, 0.70)
    assert moved["unknown_changed"] == 3 and moved["unknown_changed_clear"] == 2
    # with a threshold as well, a top-1 far above it that moves to the unknown class still counts
    both = _unknown_decisions(host, device, 0.3, unknown_class=2)
    assert both["unknown_changed_clear"] == 2 and both["unknown_class"] == 2


def test_a_gate_folder_may_leave_out_the_unknown_class_but_no_other(folders):
    from edgecls.core.errors import EdgeclsError
    from edgecls.optimize.parity import check_data

    t = folders.resolve()
    assert check_data(f"{t}/data", ["cats", "dogs", "unknown"], decode=False).classes == ["cats", "dogs"]
    with pytest.raises(EdgeclsError, match=r"missing class folder\(s\) birds"):
        check_data(f"{t}/data", ["birds", "cats", "dogs"], decode=False)
    with pytest.raises(EdgeclsError, match=r"missing class folder\(s\) unknown"):  # only as the run's last class
        check_data(f"{t}/data", ["unknown", "cats", "dogs"], decode=False)
