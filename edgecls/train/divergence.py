"""A run whose loss stops being a number has failed: it ends at once, with one line saying what to lower.

Without this, a learning rate of ``inf`` (or just far too high) trains to a NaN loss, early stopping
restores "best" weights that are NaN too, and the run is saved as if it were a model. Raised before
the epoch's checkpoint is written, so nothing diverged is ever saved as the run's progress.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from edgecls.core.errors import EdgeclsError
from edgecls.core.keras import keras

OPTION_OF_PHASE = {"head": "--learning-rate", "fine_tune": "--fine-tune-learning-rate", "prune": "--learning-rate",
                   "qat": "--qat-learning-rate"}


class TrainingDiverged(EdgeclsError):
    """The loss became NaN or infinite."""


def _bad(logs: Optional[dict], keys: tuple[str, ...]) -> Optional[tuple[str, float]]:
    for key in keys:
        value = (logs or {}).get(key)
        if value is not None and not math.isfinite(float(value)):
            return key, float(value)
    return None


class StopOnDivergence(keras.callbacks.Callback):
    """Raise :class:`TrainingDiverged` at the end of the first epoch whose loss is not finite.

    ``phase`` names the option to lower in the message. Checked per epoch, not per batch: reading
    each batch's loss would make Keras hand every callback numpy logs, a device sync per batch that
    cost more than the batch itself on cached features; a NaN in any batch makes the epoch's mean NaN."""

    def __init__(self, phase: str) -> None:
        super().__init__()
        self.phase = phase
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._check(_bad(logs, ("loss", "val_loss")))

    def _check(self, bad: Optional[tuple[str, Any]]) -> None:
        if bad is None:
            return
        option = OPTION_OF_PHASE.get(self.phase, "the learning rate")
        raise TrainingDiverged(
            f"training diverged: the {bad[0].replace('_', ' ')} became {bad[1]} in epoch {self.epoch + 1} of the "
            f"{self.phase.replace('_', '-')} phase; nothing was saved as a model: lower {option} and start again "
            "with --force")
