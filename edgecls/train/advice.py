"""What would most likely raise this run's accuracy, read from its own history, and what it would cost.

A pure function of the run's per-epoch history, its epoch budgets and its stage seconds, so the
line ``edgecls train`` ends with is a measurement of *this* run, not a general tip:

- the fine-tune phase's validation loss was still falling at its last epoch: more fine-tune epochs
  (on the sharp photo sets of ``tools/bench_train_grid.py``, 15 fine-tune epochs were never less
  accurate than 4 and gained one point on average);
- the head phase ran to its cap still improving and there was no fine-tune phase: more epochs;
- otherwise validation stopped improving before the budget ran out, so longer training will not
  help; the training photos will (the class with the fewest is named).

The cost is the phase's measured seconds per epoch times the extra epochs.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

STILL_FALLING = 0.01
"""Relative fall of the validation loss over a phase's last two epochs that counts as still improving:
below it, a phase has levelled off (run-to-run noise in val_loss on tens of images is about this size)."""


def _phase(rows: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("phase") == name and r.get("val_loss") is not None]


def _still_falling(rows: list[dict[str, Any]]) -> bool:
    """The phase's best validation loss is its last epoch's, clearly below the one before."""
    if len(rows) < 2:
        return False
    losses = [float(r["val_loss"]) for r in rows]
    last, before = losses[-1], losses[-2]
    return last <= min(losses) and before > 0 and (before - last) / before >= STILL_FALLING


def next_gain(
    rows: Sequence[dict[str, Any]],
    *,
    epochs: int,
    fine_tune_epochs: int,
    stage_seconds: dict[str, float],
    fewest: Optional[tuple[str, int]] = None,
) -> Optional[str]:
    """One line naming what would likely raise accuracy and its time cost, or None when nothing was learned.

    ``rows``: history.json's epochs (``phase`` "head" or "fine_tune", ``val_loss``); ``epochs`` and
    ``fine_tune_epochs``: the run's budgets; ``stage_seconds``: metrics.json's ``timings.stages_s``;
    ``fewest``: (class, training images) of the smallest class."""
    head, tune = _phase(rows, "head"), _phase(rows, "fine_tune")
    if not head:
        return None
    if tune and len(tune) >= fine_tune_epochs and _still_falling(tune):
        extra = fine_tune_epochs
        per_epoch = stage_seconds.get("fine_tune", 0.0) / len(tune)
        return (f"validation loss still falling at the last fine-tune epoch: --fine-tune-epochs {fine_tune_epochs + extra} "
                f"would likely raise accuracy, about {per_epoch * extra:.0f} s more ({per_epoch:.1f} s per fine-tune "
                "epoch in this run)")
    if not tune and len(head) >= epochs and _still_falling(head):
        extra = epochs
        per_epoch = stage_seconds.get("head", 0.0) / len(head)
        return (f"validation loss still falling at the last epoch: --epochs {epochs + extra} would likely raise "
                f"accuracy, about {per_epoch * extra:.0f} s more ({per_epoch:.1f} s per epoch in this run)")
    where = "fine-tune" if tune else "head"
    more = f" (fewest: {fewest[0]}, {fewest[1]})" if fewest else ""
    return (f"validation stopped improving before the {where} phase's last epoch, so longer training would not help; "
            f"more training photos per class{more} would")
