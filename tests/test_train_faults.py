"""SIGKILL during training loses nothing, --resume is exact, --force swaps, one writer per run.

Real ``edgecls train`` subprocesses (the CLI a user runs), killed with SIGKILL at chosen moments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from train_procs import WAIT_S, kill_after_checkpoints, log_tail, old_exported_run, run, start, tree, weights

# Tiny and deterministic: one CPU thread pool, TF's deterministic ops. MobileNetV3-Small
# minimalistic at alpha 0.35: 109 layers to MobileNetV2's 160, so each process's first epoch
# traces in ~60% of the CPU time (13.5 s to 22.2 s measured); resume does not care which backbone.
TINY = ["--backbone", "mobilenet_v3_small", "--minimalistic", "--alpha", "0.35", "--size", "32", "--weights", "none",
        "--batch-size", "8", "--cache", "memory", "--seed", "7",
        "--fine-tune-epochs", "1", "--patience", "10"]
HEAD_EPOCHS = 3
KILL_AFTER_EPOCHS = 1  # head epochs 2-3 and the fine-tune epoch run after the resume


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from edgecls.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("faults") / "data"
    write_synthetic_dataset(root, classes=2, per_class=20, size=32, seed=5)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("where", [
    [],  # the defaults: head on cached (augmented) features, dropout drawing in every phase
    ["--head-cache", "none"],  # every phase on the images: augmentation draws too
], ids=["defaults", "on-images"])
def test_sigkill_then_resume_ends_with_the_weights_of_an_uninterrupted_run(data_dir, tmp_path, where):
    """With augmentation and dropout on: the generators' states travel with the checkpoint, so the resumed
    epochs draw what the uninterrupted run drew (checked: without restoring them, every epoch after the kill
    differs in loss)."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # The uninterrupted run trains beside the killed one: it reads nothing of it, and
    # TF_DETERMINISTIC_OPS makes its result independent of what else the CPU is doing.
    reference = start(tmp_path / "straight.log", "train", str(data_dir), "-o", str(straight),
                      "--epochs", str(HEAD_EPOCHS), *TINY, *where)
    try:
        proc = start(tmp_path / "killed.log", "train", str(data_dir), "-o", str(killed),
                     "--epochs", str(HEAD_EPOCHS), *TINY, *where)
        [state] = kill_after_checkpoints([proc], [killed / "checkpoints" / "state.json"], KILL_AFTER_EPOCHS)
        assert state["phase"] == "head" and not (killed / "model.keras").exists()  # really interrupted mid-phase
        r = run("train", "--resume", "--out", str(killed))
        assert r.returncode == 0, r.stderr
        assert reference.wait(WAIT_S) == 0, log_tail(reference)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()

    # Same seed, same data order, Adam state restored: the same weights. The tolerance covers
    # float32 summation order only (TF_DETERMINISTIC_OPS makes it repeatable run to run).
    for a, b in zip(weights(straight), weights(killed), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # model.keras holds the best-val_loss weights, which can come from an epoch before the kill;
    # the per-epoch losses after the kill are what a resume without the optimizer state gets
    # wrong (checked: without load_optimizer, head epochs 2-3 differ by up to 0.20 in loss).
    hist_a = json.loads((straight / "history.json").read_text())["epochs"]
    hist_b = json.loads((killed / "history.json").read_text())["epochs"]
    assert [row["loss"] for row in hist_a] == pytest.approx([row["loss"] for row in hist_b], abs=1e-6)


@pytest.mark.slow
def test_force_killed_midway_keeps_the_old_run_then_swaps_and_keeps_its_export(data_dir, tmp_path):
    out = tmp_path / "my run"
    before = old_exported_run(out)

    proc = start(tmp_path / "force.log", "train", str(data_dir), "-o", str(out), "--force", "--epochs", "40", *TINY)
    staging = tmp_path / "my run.new"
    kill_after_checkpoints([proc], [staging / "checkpoints" / "state.json"], 1)
    assert tree(out) == before  # the kill cost nothing: the old run is intact, byte for byte

    # A second writer while one holds the run folder gets one clear line (the lock file is real).
    import fcntl

    with open(out / ".edgecls.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 1: edgecls train --out x\n")
        held.flush()
        res = CliRunner().invoke(cli, ["train", str(data_dir), "-o", str(out), "--force", *TINY])
    assert res.exit_code == 1
    assert "is in use by another edgecls process" in res.output and "Traceback" not in res.output
    assert tree(out) == before

    # No fine-tune phase: what is checked here is the swap, not a second trace.
    r = run("train", str(data_dir), "-o", str(out), "--force", "--epochs", "1", *TINY, "--fine-tune-epochs", "0")
    assert r.returncode == 0, r.stderr
    assert not staging.exists()  # the killed attempt's staging folder was replaced, then swapped in
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 1
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("my run.replaced-")]
    assert len(aside) == 1
    assert (aside[0] / "export" / "model_int8.tflite").read_bytes() == b"the old deployed model"
    assert str(aside[0]) in r.stdout


def test_swap_in_removes_an_old_run_of_train_outputs_only_and_keeps_anything_else(tmp_path):
    from edgecls.core.rundir import swap_in

    for name, extra, kept in (("plain", None, False), ("exported", "export", True), ("mine", "notes.txt", True)):
        old, new = tmp_path / name, tmp_path / f"{name}.new"
        for folder, tag in ((old, b"old"), (new, b"new")):
            (folder / "checkpoints").mkdir(parents=True)
            (folder / "config.json").write_bytes(tag)
        if extra:
            (old / extra).mkdir() if extra == "export" else (old / extra).write_text("keep me")
        aside = swap_in(new, old)
        assert (old / "config.json").read_bytes() == b"new" and not new.exists()
        assert (aside is not None) == kept
        if kept:
            assert (aside / "config.json").read_bytes() == b"old" and (aside / extra).exists()
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(name)) == (
            sorted([name, aside.name]) if kept else [name])


def test_resume_refuses_without_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "labels.txt").write_text("a\nb\n")
    (run / "checkpoints" / "state.json").write_text('{"phase": "head", "phase_epochs_done": 1, "rows": []}')
    res = CliRunner().invoke(cli, ["train", "--resume", "--out", str(run)])
    assert res.exit_code == 1
    assert res.output.strip() == (f"Error: cannot resume: {run}/checkpoints/last.weights.npz is missing, so the run "
                                  "cannot continue where it stopped; start again with --force")


@pytest.mark.slow
def test_a_loss_that_stops_being_a_number_ends_the_run_and_saves_nothing_diverged(data_dir, tmp_path):
    """The head's weights blow up to NaN at the start of epoch 2 (what far too high a learning rate does): the
    run stops in that epoch with one line naming it and the option to lower, the checkpoint keeps epoch 1's
    finite weights, and no model is saved."""
    from edgecls.core.config import TrainConfig
    from edgecls.core.keras import keras
    from edgecls.train.checkpoint import LAST_WEIGHTS
    from edgecls.train.divergence import TrainingDiverged
    from edgecls.train.fit import train

    class BlowUp(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                layer = self.model.get_layer("predictions")
                layer.set_weights([np.full_like(w, np.nan) for w in layer.get_weights()])

    out = tmp_path / "run"
    cfg = TrainConfig(data=str(data_dir), out=str(out), backbone="mobilenet_v3_small", minimalistic=True, alpha=0.35,
                      size=32, weights="none", batch_size=8, epochs=3, fine_tune_epochs=0, cache="memory", seed=7)
    with pytest.raises(TrainingDiverged) as info:
        train(cfg, callbacks=[BlowUp()], verbose=0)
    assert str(info.value).startswith("training diverged: the loss became nan in epoch 2 of the head phase; "
                                      "nothing was saved as a model: lower --learning-rate")
    assert not (out / "model.keras").exists()
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["phase_epochs_done"] == 1
    with np.load(out / "checkpoints" / LAST_WEIGHTS) as saved:
        assert all(np.isfinite(saved[k]).all() for k in saved.files if k.startswith("w/"))
