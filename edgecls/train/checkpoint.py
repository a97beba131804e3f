"""Training checkpoints: weights keyed by layer (stable across freezing) and the per-epoch state.

``RUN/checkpoints/last.weights.npz`` and ``best.weights.npz`` hold weights only (no optimizer);
``state.json`` holds the phase, the epochs done in it, the best val_loss and the history so far.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls.core.io import atomic_write_bytes, atomic_write_json
from edgecls.core.keras import keras

LAST_WEIGHTS = "last.weights.npz"
BEST_WEIGHTS = "best.weights.npz"


def _variables(model: "keras.Model") -> list[tuple[str, Any]]:
    """(key, variable) for every weight, keyed by layer name and creation order.

    ``model.get_weights()`` orders a nested model's weights trainable-first, so its order
    changes when layers are frozen or unfrozen; keys by layer keep a checkpoint valid across
    the head and fine-tune phases and between mixed and float32 copies of the same model.
    """
    out, seen = [], {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        n = seen[layer.name] = seen.get(layer.name, -1) + 1  # same name twice: still a unique key
        own = list(layer._trainable_weights) + list(layer._non_trainable_weights)
        out.extend((f"{layer.name}#{n}:{i}", w) for i, w in enumerate(own))
    return out


def save_weights_npz(model: "keras.Model", path: Path) -> None:
    """All weights (no optimizer state) in one atomically written .npz."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(w.numpy()) for k, w in _variables(model)})
    atomic_write_bytes(path, buf.getvalue())


def load_weights_npz(model: "keras.Model", path: Path) -> None:
    with np.load(path) as saved:
        for key, w in _variables(model):
            w.assign(saved[key])


def copy_weights(src: "keras.Model", dst: "keras.Model") -> None:
    """Copy weights between two builds of the same architecture, whatever is frozen in each."""
    values = {k: w.numpy() for k, w in _variables(src)}
    for key, w in _variables(dst):
        w.assign(values[key])


class Checkpointer(keras.callbacks.Callback):
    """After each epoch: last weights, best weights (by val_loss over both phases), state.json.

    Weights files are written atomically before ``state.json``, so a kill at any moment leaves
    a loadable checkpoint (at worst one epoch ahead of the state, which then repeats an epoch).
    Only weights are kept: a resumed phase starts a fresh Adam state.
    """

    def __init__(self, classifier: "keras.Model", folder: Path, state: dict[str, Any], phase: str):
        super().__init__()
        self.classifier, self.folder, self.state, self.phase = classifier, folder, state, phase

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        logs = dict(logs or {})
        row: dict[str, Any] = {"phase": self.phase, "epoch": len(self.state["rows"]) + 1, "phase_epoch": epoch + 1}
        row.update({k: float(v) for k, v in logs.items() if np.isscalar(v)})
        st = self.state
        save_weights_npz(self.classifier, self.folder / LAST_WEIGHTS)
        val_loss = logs.get("val_loss", logs.get("loss"))
        if val_loss is not None and (st.get("best_val_loss") is None or val_loss < st["best_val_loss"]):
            save_weights_npz(self.classifier, self.folder / BEST_WEIGHTS)
            st.update(best_val_loss=float(val_loss), best_epoch=row["epoch"])
        st["rows"].append(row)
        st.update(phase=self.phase, phase_epochs_done=epoch + 1)
        atomic_write_json(self.folder / "state.json", st)


def restore(classifier: "keras.Model", folder: Path, name: str) -> None:
    if (folder / name).is_file():
        load_weights_npz(classifier, folder / name)
