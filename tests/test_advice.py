"""The line ``edgecls train`` ends with: what would raise this run's accuracy, read from its own history."""

import json

import pytest

from edgecls.train.advice import next_gain


def _rows(phase, losses, start=1):
    return [{"phase": phase, "epoch": start + i, "val_loss": v} for i, v in enumerate(losses)]


HEAD_FLAT = _rows("head", [1.0, 0.8, 0.7, 0.7])
CASES = [
    # fine-tune ran its whole budget and its loss still fell at the end: more fine-tune epochs, priced per epoch
    (HEAD_FLAT + _rows("fine_tune", [0.69, 0.6, 0.5, 0.4], 5), 4, {"fine_tune": 20.0},
     "--fine-tune-epochs 8 would likely raise accuracy, about 20 s more (5.0 s per fine-tune epoch"),
    # the last fine-tune epoch was worse than the one before: levelled off
    (HEAD_FLAT + _rows("fine_tune", [0.69, 0.6, 0.5, 0.55], 5), 4, {"fine_tune": 20.0},
     "validation stopped improving before the fine-tune phase's last epoch"),
    # a fall under 1 % is noise, not a trend
    (HEAD_FLAT + _rows("fine_tune", [0.69, 0.6, 0.5, 0.498], 5), 4, {"fine_tune": 20.0},
     "validation stopped improving"),
    # early stopping ended the fine-tune phase before its budget
    (HEAD_FLAT + _rows("fine_tune", [0.69, 0.6], 5), 4, {"fine_tune": 20.0}, "validation stopped improving"),
]


@pytest.mark.parametrize("rows, fine_tune_epochs, seconds, expected", CASES)
def test_the_fine_tune_phase_decides_the_advice(rows, fine_tune_epochs, seconds, expected):
    line = next_gain(rows, epochs=4, fine_tune_epochs=fine_tune_epochs, stage_seconds=seconds, fewest=("cat", 12))
    assert expected in line
    if "stopped" in expected:
        assert line.endswith("more training photos per class (fewest: cat, 12) would")


def test_without_fine_tuning_a_head_still_improving_at_its_cap_asks_for_more_epochs():
    rows = _rows("head", [1.0, 0.8, 0.6, 0.5])
    line = next_gain(rows, epochs=4, fine_tune_epochs=0, stage_seconds={"head": 2.0})
    assert line.startswith("validation loss still falling at the last epoch: --epochs 8 ")
    assert "about 2 s more (0.5 s per epoch" in line
    # stopped early by patience: not at its cap, so more epochs would not be used
    assert "stopped improving before the head phase" in next_gain(rows[:3], epochs=4, fine_tune_epochs=0,
                                                                  stage_seconds={"head": 2.0})


def test_no_history_gives_no_advice():
    assert next_gain([], epochs=4, fine_tune_epochs=4, stage_seconds={}) is None


@pytest.mark.slow
def test_the_train_summary_ends_with_the_runs_own_advice(tiny_run):
    from edgecls.core.rundir import RunDir
    from edgecls.train.fit import summary

    run = RunDir.open(tiny_run)
    text = summary(run)
    better = [line for line in text.splitlines() if line.startswith("better:  ")]
    assert len(better) == 1
    rows = json.loads(run.history_json.read_text())["epochs"]
    tune = [r["val_loss"] for r in rows if r["phase"] == "fine_tune"]
    config = json.loads(run.config_json.read_text())["train"]
    still_falling = (len(tune) >= config["fine_tune_epochs"] >= 2 and tune[-1] <= min(tune)
                     and (tune[-2] - tune[-1]) / tune[-2] >= 0.01)
    assert ("--fine-tune-epochs" in better[0]) is still_falling
    assert text.splitlines()[-1].startswith("next:    edgecls export")
