"""Where a training run is: its phase, epochs, history, early-stopping counters and the choices it made.

:class:`TrainState` travels inside every checkpoint (``last.weights.npz``, with the weights of the
same moment) and is repeated in ``RUN/checkpoints/state.json`` for humans and for checks that run
before TensorFlow loads. It is the one place that reads and writes those keys: a run resumed by a
later edgecls reads what it knows and keeps the rest as it was (``extra``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from edgecls.core.io import atomic_write_json, read_json

PHASE_HEAD = "head"
PHASE_FINE_TUNE = "fine_tune"
PHASE_DONE = "done"
STATE_JSON = "state.json"


@dataclass
class TrainState:
    """A run's progress and the choices it made at its start (kept so a resume makes the same ones)."""

    phase: str = PHASE_HEAD
    """The phase in progress (or the last one, with all its epochs done; ``done`` once the run is written)."""
    phase_epochs_done: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    """One row per epoch run: phase, epoch, phase_epoch and Keras' logs (loss, accuracy, val_*)."""
    best_val_loss: Optional[float] = None
    best_epoch: Optional[int] = None
    early_stopping: Optional[dict[str, Any]] = None
    """The current phase's early-stopping counters (wait, best, best_epoch), for a resume mid-phase."""
    head_cache: Optional[str] = None
    """How the head phase met the backbone: features (cached) or none; chosen once at the start."""
    fine_tune_cut: Optional[str] = None
    """The layer the fine-tune phase trains from on cached features (None: on the images)."""
    cut_decided: bool = False
    """Whether the cut was decided at this run's start (a run from before the cut existed never did)."""
    class_weights: Optional[dict[str, float]] = None
    balance: Optional[dict[str, Any]] = None
    head_cache_record: Optional[dict[str, Any]] = None
    replaces: Optional[str] = None
    """The run a ``--force`` replacement will take the place of once complete."""
    rng: Optional[dict[str, Any]] = None
    """The random generators' state at the last epoch's end (augmentation, dropout, shuffling)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys of a state this version does not know, kept as they were."""

    @property
    def epochs_run(self) -> int:
        return len(self.rows)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "cut_decided")}
        if not self.cut_decided:
            out.pop("fine_tune_cut")  # "not decided" and "decided: images" must read back apart
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        if not isinstance(d, dict) or not isinstance(d.get("rows", []), list):
            raise ValueError("not a training state")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "cut_decided"}
        known = {k: v for k, v in d.items() if k in names}
        return cls(**known, cut_decided="fine_tune_cut" in d, extra={k: v for k, v in d.items() if k not in names})

    def save(self, folder: Path) -> None:
        atomic_write_json(folder / STATE_JSON, self.as_dict())

    @classmethod
    def read(cls, folder: Path) -> "TrainState":
        return cls.from_dict(read_json(folder / STATE_JSON))
