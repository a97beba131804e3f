"""Training end to end on tiny synthetic data: the run folder, the saved model, resume, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecls.core.config import TrainConfig
from edgecls.core.errors import EdgeclsError
from edgecls.train.report import classification_metrics
from edgecls.core.rundir import RunDir
from edgecls.train.checks import check_run_dir, check_train_config


# -- fast checks (no TensorFlow) --------------------------------------------------------------


def test_classification_metrics_by_hand():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.0, 0.1, 0.9]])
    m = classification_metrics([0, 0, 1, 2], probs, ["a", "b", "c"])
    assert m["accuracy"] == 0.75 and m["n"] == 4
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["b"]["precision"] == 0.5 and m["per_class"]["b"]["recall"] == 1.0
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.8, 0.9])))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(epochs=0), "--epochs must be an integer between 1 and 10000, got 0"),
        (dict(fine_tune_epochs=-1), "--fine-tune-epochs must be an integer between 0 and 10000, got -1"),
        (dict(fine_tune_fraction=0.0), "--fine-tune-fraction must be a finite number in (0, 1], got 0.0"),
        (dict(batch_size=0), "--batch-size must be an integer between 1 and 65536, got 0"),
        (dict(learning_rate=0.0), "--learning-rate must be a finite number in (0, 1], got 0.0"),
        (dict(learning_rate=float("nan")), "--learning-rate must be a finite number in (0, 1], got nan"),
        (dict(label_smoothing=1.0), "--label-smoothing must be a finite number in [0, 1), got 1.0"),
        (dict(dropout=1.0), "--dropout must be a finite number in [0, 1), got 1.0"),
        (dict(val_fraction=0.0), "--val-fraction must be a finite number in (0, 1), got 0.0"),
        (dict(test_fraction=-0.1), "--test-fraction must be a finite number in [0, 1), got -0.1"),
        (dict(cache="ram"), "--cache must be one of auto, memory, disk, none, got 'ram'"),
        (dict(strategy="tpu"), "--strategy must be one of auto, default, mirrored, multiworker, got 'tpu'"),
        (dict(mixed_precision="yes"), "--mixed-precision must be one of auto, on, off, got 'yes'"),
        (dict(prune=1.0), "--prune must be a finite number in (0, 1), got 1.0"),
        (dict(seed=2**64), "--seed must be an integer between 0 and 4294967295, got 18446744073709551616"),
        (dict(epochs=True), "--epochs must be an integer between 1 and 10000, got True"),
    ],
)
def test_a_train_config_out_of_bounds_is_refused_when_made(change, message):
    with pytest.raises(EdgeclsError) as e:
        TrainConfig(data="d", out="o", weights="none", **change)
    assert str(e.value) == message


@pytest.mark.parametrize("change, message", [
    (dict(val_fraction=0.5, test_fraction=0.4), "leaves too little to train on"),
    (dict(backbone="vgg"), "unknown backbone 'vgg'"),
])
def test_check_train_config_rejects(change, message):
    cfg = TrainConfig(data="d", out="o", weights="none", **change)
    with pytest.raises(EdgeclsError) as e:
        check_train_config(cfg)
    assert message in str(e.value)


def test_check_run_dir_never_overwrites_without_force_and_never_deletes_a_non_run(tmp_path):
    check_run_dir(str(tmp_path / "new"))  # absent: fine
    (tmp_path / "empty").mkdir()
    check_run_dir(str(tmp_path / "empty"))  # empty: fine
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(EdgeclsError, match="already exists; use --force"):
        check_run_dir(str(run))
    check_run_dir(str(run), force=True)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(EdgeclsError, match="not an edgecls run; refusing to delete it even with --force"):
        check_run_dir(str(other), force=True)
    with pytest.raises(EdgeclsError, match="has no checkpoint"):
        check_run_dir(str(run), resume=True)


# -- the shared tiny run ----------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_writes_the_whole_run_folder(tiny_run):
    run = RunDir.open(tiny_run)
    saved = run.read_config()
    assert saved["edgecls_version"]
    cfg = TrainConfig.from_dict(saved["train"])
    assert (cfg.backbone, cfg.alpha, cfg.size, cfg.weights, cfg.epochs) == ("mobilenet_v2", 0.35, 64, "none", 4)
    labels = run.read_labels()
    assert len(labels) == 3
    split = run.read_split()
    assert {"train", "val", "test"} <= set(split)
    assert run.scan_json.is_file()

    rows = json.loads(run.history_json.read_text())["epochs"]
    assert [r["phase"] for r in rows] == ["head"] * 4 + ["fine_tune"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert all({"loss", "accuracy", "val_loss", "val_accuracy"} <= set(r) for r in rows)

    m = json.loads(run.metrics_json.read_text())
    n_test = len(split["test"])
    assert m["n_test"] == n_test > 0 and m["evaluated_on"] == "test"
    assert 0.0 <= m["test_accuracy"] <= 1.0 and np.isfinite(m["test_loss"])
    assert set(m["per_class"]) == set(labels)
    assert sum(v["support"] for v in m["per_class"].values()) == n_test
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == n_test
    assert m["test_accuracy"] == pytest.approx(np.trace(cm) / n_test)
    assert m["precision_policy"] == "float32" and m["replicas"] == 1
    assert m["class_weights"] is None  # balanced classes: no weights

    for png in ("learning_curves.png", "confusion_matrix.png"):
        assert (run.plots / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if __import__("importlib").util.find_spec("tensorboard"):
        assert list(run.logs.glob("head/train/events.out.tfevents.*"))
        assert list(run.logs.glob("fine_tune/validation/events.out.tfevents.*"))
    # Finished: the decoded-image cache and checkpoint weights are gone, the state says so.
    assert not (run.path / "cache").exists()
    state = json.loads((run.checkpoints / "state.json").read_text())
    assert state["phase"] == "done"
    assert not list(run.checkpoints.glob("*.npz"))


@pytest.mark.slow
def test_saved_model_is_the_inference_graph_and_reproduces_the_metrics(tiny_run):
    from edgecls import data
    from edgecls.train.finish import evaluate
    from edgecls.train.model_io import load_model

    run = RunDir.open(tiny_run)
    model = load_model(run.model_path)
    # The calibrated head: logits, divided by the temperature fitted on val, then the softmax.
    assert [layer.name for layer in model.layers] == ["image", "backbone", "dropout", "predictions", "temperature",
                                                      "probabilities"]
    assert model.input_shape == (None, 64, 64, 3) and model.output.dtype == "float32"
    from edgecls.train.calibration import temperature_of

    assert temperature_of(model) == pytest.approx(json.loads(run.metrics_json.read_text())["calibration"]["temperature"],
                                                  rel=1e-5)

    root, split = data.load_split(run)
    ds = data.build_dataset(root, split["test"], image_size=64, batch_size=8, training=False)
    m = evaluate(model, ds, 3, run.read_labels())
    saved = json.loads(run.metrics_json.read_text())
    assert m["accuracy"] == pytest.approx(saved["test_accuracy"])
    assert m["confusion_matrix"] == saved["confusion_matrix"]
    # Non-degenerate outputs (parity needs a model whose scores differ between images).
    x, _ = data.load_images(root, split["test"], 64)
    probs = model.predict(x.astype(np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert probs.std(axis=0).max() > 1e-3


def test_load_model_missing_file_is_a_clear_error(tmp_path):
    from edgecls.train.model_io import load_model

    with pytest.raises(EdgeclsError, match="model not found"):
        load_model(tmp_path / "model.keras")


# -- resume -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_interrupted_run_resumes_where_it_stopped_then_prunes(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgecls.cli import cli
    from edgecls.core.keras import keras
    from edgecls.data.synth import write_synthetic_dataset
    from edgecls.train.fit import train
    from edgecls.train.model_io import load_model

    summary = write_synthetic_dataset(tmp_path / "data", classes=2, per_class=12, size=32, seed=1)
    minority = summary["classes"][1]
    for f in sorted((tmp_path / "data" / minority).iterdir())[:5]:  # 12 vs 7 images: imbalanced
        f.unlink()
    out = tmp_path / "run"
    # MobileNetV3-Small minimalistic: the cheapest backbone to trace; resume is backbone-agnostic.
    cfg = TrainConfig(data=str(tmp_path / "data"), out=str(out), backbone="mobilenet_v3_small", minimalistic=True,
                      alpha=0.35, size=32, weights="none", epochs=2,
                      fine_tune_epochs=1, batch_size=8, augment=True, cache="disk", seed=1,
                      prune=0.5, prune_epochs=1)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt  # what Ctrl-C does after the first epoch

    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[Interrupt()], verbose=0)
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert (state["phase"], state["phase_epochs_done"], len(state["rows"])) == ("head", 1, 1)
    assert not (out / "model.keras").exists()
    assert [p for p in (out / "cache").rglob("*") if p.is_file()]  # --cache disk writes inside the run
    first = state["rows"][0]
    # The epoch's checkpoint holds the weights that can change and names the file the frozen rest
    # was written to once for the phase.
    [frozen] = list((out / "checkpoints").glob("frozen-*.npz"))
    with np.load(out / "checkpoints" / "last.weights.npz") as last:
        assert str(last["frozen"]) == frozen.name
    assert (out / "checkpoints" / "last.weights.npz").stat().st_size < frozen.stat().st_size / 5

    # Not overwritten without --force; resumed from the CLI with the saved config.
    with pytest.raises(EdgeclsError, match="already exists"):
        train(cfg, verbose=0)
    # --prune SPARSITY (saved in the config) hands the finished run to the real prune stage.
    result = CliRunner().invoke(cli, ["train", "--resume", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Resuming" in result.output and "test accuracy" in result.output

    rows = json.loads((out / "history.json").read_text())["epochs"]
    assert [(r["phase"], r["epoch"], r["phase_epoch"]) for r in rows] == [
        ("head", 1, 1), ("head", 2, 2), ("fine_tune", 3, 1)
    ]
    assert rows[0] == first  # history continues, epoch 1 was not trained again
    assert not (out / "cache").exists()  # the decoded-image cache is dropped once the run is done
    assert not list((out / "checkpoints").glob("*.npz"))  # and the checkpoints with their frozen weights
    weights = json.loads((out / "metrics.json").read_text())["class_weights"]
    assert weights[minority] > 1.0 > weights[summary["classes"][0]]  # the minority class counts more
    # Trained with augmentation, saved without it: the model takes clean pixels.
    saved = load_model(out / "model.keras")
    kinds = {type(layer).__name__ for layer in saved.submodules if isinstance(layer, keras.layers.Layer)}
    assert "RandomFlip" not in kinds and not {k for k in kinds if k.startswith("Random")}, kinds
    assert "Conv2D" in kinds
    from edgecls.optimize.prune_graph import measure_sparsity

    pruning = json.loads((out / "pruning.json").read_text())
    assert (pruning["target_sparsity"], pruning["fine_tune"]["epochs"], pruning["config"]["batch_size"]) == (0.5, 1, 8)
    overall, _ = measure_sparsity(load_model(out / "model_pruned.keras"))
    assert overall == pytest.approx(0.5, abs=0.02)  # measured on the saved file, not taken from the report
    assert f"pruned:  {out / 'model_pruned.keras'}" in result.output
    with pytest.raises(EdgeclsError, match="already complete"):
        train(TrainConfig(out=str(out)), resume=True)


def test_checkpoints_write_the_frozen_weights_once_and_load_them_back(tmp_path):
    from edgecls.core.keras import keras
    from edgecls.train.checkpoint import FrozenWeights, load_weights_npz, save_checkpoint

    def build(seed: int) -> "keras.Model":
        keras.utils.set_random_seed(seed)
        inp = keras.Input((4,))
        return keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.Dense(64, name="body")(inp)))

    model = build(0)
    model.get_layer("body").trainable = False
    frozen = FrozenWeights(model, model.trainable_variables, tmp_path)
    save_checkpoint(tmp_path / "last.weights.npz", model, frozen=frozen)
    [body_file] = list(tmp_path.glob("frozen-*.npz"))
    written = body_file.stat().st_mtime_ns
    head = model.get_layer("head")
    head.set_weights([w + 1.0 for w in head.get_weights()])  # an epoch trains the head
    save_checkpoint(tmp_path / "last.weights.npz", model, frozen=FrozenWeights(model, model.trainable_variables,
                                                                              tmp_path))
    assert list(tmp_path.glob("frozen-*.npz")) == [body_file] and body_file.stat().st_mtime_ns == written

    other = build(1)  # another initialisation gets every weight back, the frozen ones from their file
    load_weights_npz(other, tmp_path / "last.weights.npz")
    for a, b in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    body_file.unlink()
    with pytest.raises(EdgeclsError, match=f"needs {body_file}, which is missing; start again with --force"):
        load_weights_npz(other, tmp_path / "last.weights.npz")


@pytest.mark.slow
def test_augmentation_runs_in_the_training_wrapper_only():
    from edgecls.train.backbones import BackboneChoice, build_classifier
    from edgecls.train.models import make_trainer

    classifier = build_classifier(BackboneChoice("mobilenet_v3_small", size=32, minimalistic=True, weights="none"), 2)
    assert make_trainer(classifier, augment=False, seed=0) is classifier
    trainer = make_trainer(classifier, augment=True, seed=0)
    augment = trainer.get_layer("augment")
    assert [type(layer).__name__ for layer in augment.layers] == [
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast"
    ]
    assert trainer.layers[-1] is classifier  # the classifier (what is saved) sits behind it, unchanged
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(augment(x, training=False).numpy(), x)
    moved = augment(x, training=True).numpy()
    assert not np.allclose(moved, x)
    assert moved.min() >= 0.0 and moved.max() <= 255.0  # still the model's 0..255 input range


def test_create_run_writes_the_small_files_into_the_staging_folder(tmp_path):
    from edgecls import data
    from edgecls.data.synth import write_synthetic_dataset
    from edgecls.train.runfolder import create_run as _create_run

    write_synthetic_dataset(tmp_path / "data", classes=2, per_class=6, size=32, seed=3)
    scan = data.scan_dataset(tmp_path / "data", decode=False)
    split = data.make_split(scan, val_fraction=0.2, test_fraction=0.2, seed=3)
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "model.keras").write_bytes(b"old model")
    cfg = TrainConfig(data=str(tmp_path / "data"), out=str(out), weights="none")
    staging = tmp_path / "run.new"
    staging.mkdir()
    run = _create_run(cfg, staging, scan, split)
    assert (out / "model.keras").read_bytes() == b"old model"  # untouched until the new run is complete
    saved = run.read_config()
    assert saved["train"] == TrainConfig.from_dict(saved["train"]).__dict__ == cfg.__dict__
    assert run.read_labels() == scan.classes
    assert sorted(map(tuple, run.read_split()["train"])) == sorted(map(tuple, split["train"]))
