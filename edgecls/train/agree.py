"""Cluster workers start from the same checkpoint, or refuse.

Every worker saves its own checkpoint after each epoch, and a kill can land between two
workers' saves: the chief may hold epoch 3 while a worker still holds epoch 2. Resuming them as
they are would run different epochs against each other's collectives (a hang, or silently
different weights). So each worker also keeps the save before its last one
(``previous.weights.npz``), and at start-up every worker tells the others how far it got (one
all-gather); those one save ahead step back to their previous save. Workers further apart
than that, some resuming while others start fresh, or workers given different options or
data are refused with one line.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from edgecls.core.config import TrainConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes
from edgecls.core.keras import keras, tf
from edgecls.train.checkpoint import LAST_WEIGHTS, read_checkpoint_state
from edgecls.train.state import PHASE_FINE_TUNE, PHASE_HEAD, TrainState

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.train.runfolder import Start

PREVIOUS_WEIGHTS = "previous.weights.npz"
_PER_MACHINE = ("out", "data", "cache", "cache_budget_mb", "strategy")  # paths and local choices: same model either way
_PHASE_ORDER = (PHASE_HEAD, PHASE_FINE_TUNE)


def progress(state: Optional[TrainState]) -> tuple[int, int, int]:
    """How far a saved state got, ordered like the saves: (epochs, phase, epochs done in it); fresh = zeros.

    The end-of-phase save keeps the epoch count and moves to the next phase, so it sorts after
    the last epoch's save and before the next phase's first.
    """
    if state is None:
        return (0, 0, 0)
    return (state.epochs_run, _PHASE_ORDER.index(state.phase), int(state.phase_epochs_done))


class KeepPrevious(keras.callbacks.Callback):
    """Copy the last save aside before the next one can replace it (at each epoch's start and each phase's end)."""

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = folder

    def _keep(self) -> None:
        last = self.folder / LAST_WEIGHTS
        if last.is_file():
            atomic_write_bytes(self.folder / PREVIOUS_WEIGHTS, last.read_bytes())

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._keep()

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        self._keep()  # the end-of-phase save comes next


def _gather(strategy: "tf.distribute.Strategy", mine: tuple[int, ...]) -> np.ndarray:
    """Every worker's ``mine``, one row per worker in task order (a collective: every worker must call it)."""
    local = tf.constant([mine], dtype=tf.int64)
    per_replica = strategy.run(lambda: tf.identity(local))
    return np.asarray(strategy.gather(per_replica, axis=0))


def barrier(strategy: "tf.distribute.Strategy") -> None:
    """Return when every worker has called it: the other workers wait while the chief writes the run,
    so none exits early (TensorFlow's coordination service reports a worker that leaves first as crashed)."""
    _gather(strategy, (0,))


def fingerprint(cfg: TrainConfig, split: dict[str, Any]) -> tuple[int, int]:
    """Checksums of the options and of the split: workers given different ones would train different models
    against each other's gradients (or wait forever for an epoch the others never run)."""
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _PER_MACHINE}
    parts = (options, {name: split.get(name) for name in ("train", "val", "test")})
    return tuple(zlib.crc32(json.dumps(p, sort_keys=True).encode()) for p in parts)  # type: ignore[return-value]


def agree(strategy: "tf.distribute.Strategy", start: "Start", checkpoints: Path, split: dict) -> TrainState:
    """The state every worker continues from: this worker's (``start``'s), or its previous save's in
    ``checkpoints``; see the module docstring.

    The options and ``split`` (see :func:`fingerprint`) must be the same on every worker, or all of them refuse.
    """
    from edgecls.train import cluster

    resume, state, task_name = start.run is not None, start.state, cluster.task_for(start.cfg.strategy).name
    mine = progress(state if resume else None)
    everyone = [tuple(int(v) for v in row) for row in _gather(strategy, (*mine, *fingerprint(start.cfg, split)))]
    if len({row[len(mine):] for row in everyone}) > 1:
        raise EdgeclsError(
            "the cluster's workers were started with different options or see different data (the split of DATA "
            "differs): give every worker the same command and the same image folder"
        )
    target = decide([row[:len(mine)] for row in everyone], mine, resume=resume, task_name=task_name)
    return state if target is None else step_back(checkpoints, target, task_name)


def decide(everyone: list[tuple[int, ...]], mine: tuple[int, ...], *, resume: bool,
           task_name: str) -> Optional[tuple[int, ...]]:
    """None when this worker continues from its own last save, else the progress to step back to."""
    target = min(everyone)
    if target == (0, 0, 0) and max(everyone) != target:
        raise EdgeclsError(
            "the cluster's workers disagree: some start fresh, others resume a run "
            f"({task_name} {'resumes' if resume else 'starts fresh'}); start every worker with --resume, "
            "or every worker with --force"
        )
    return None if mine == target else target  # behind or level: the others step back to this save


def step_back(folder: Path, target: tuple[int, ...], task_name: str) -> TrainState:
    """Make the previous save the last one (weights, optimizer state and counters together), or refuse."""
    previous = folder / PREVIOUS_WEIGHTS
    raw = read_checkpoint_state(previous) if previous.is_file() else None
    saved = TrainState.from_dict(raw) if raw is not None else None
    if saved is None or progress(saved) != target:
        raise EdgeclsError(
            f"cannot resume: {task_name} saved more than one save after another worker (which stopped at epoch "
            f"{target[0]}); restart every worker with --force"
        )
    atomic_write_bytes(folder / LAST_WEIGHTS, previous.read_bytes())
    saved.save(folder)
    print(f"{task_name}: another worker stopped one save earlier; continuing with it from epoch {target[0]}",
          flush=True)
    return saved
