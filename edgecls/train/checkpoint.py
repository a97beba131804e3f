"""Training checkpoints: weights keyed by structure, plus what an exact resume needs.

``RUN/checkpoints/last.weights.npz`` is one atomically written file holding the classifier's
weights (``w/...``), the optimizer's variables (``opt/...``: Adam's step count and moments) and
the training state (``state``: phase, epochs done, history, early-stopping counters) and the
random generators' states (``rng/<layer>``: dropout, augmentation) of the same moment, so a kill
can never pair weights of one epoch with a state of another, and a resumed run draws the same
dropout masks and augmentations as an uninterrupted one.
``best.weights.npz`` holds the best weights only. ``state.json`` repeats the state for humans
and for checks that run before TensorFlow loads.

While a phase trains, most weights cannot change (the frozen backbone, BatchNorm statistics):
they are written once per phase to ``frozen-<digest>.npz`` and each epoch's files hold only the
weights that can change plus that file's name (``frozen``). Writing the whole MobileNetV2 (9 MB,
fsynced) twice per epoch was most of the head phase on cached features. A frozen file is named by
its content and never rewritten, so every checkpoint that names it stays valid; the finished run
drops them with the checkpoints.

Weights are keyed by their position in the model's structure (layer index, layer type,
weight index), never by generated names: a model rebuilt in the same process (the float32
copy of a mixed-precision model) gets new automatic names (``normalization_1``), the same
structure.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes
from edgecls.core.keras import keras

if TYPE_CHECKING:
    from edgecls.train.state import TrainState

LAST_WEIGHTS = "last.weights.npz"
BEST_WEIGHTS = "best.weights.npz"
FROZEN_GLOB = "frozen-*.npz"
_W, _OPT, _STATE, _FROZEN, _RNG = "w/", "opt/", "state", "frozen", "rng/"


def _variables(model: "keras.Model") -> list[tuple[str, Any]]:
    """(key, variable) for every weight, keyed by structure: ``<layer index>.<layer type>.<weight index>``.

    ``model.get_weights()`` orders a nested model's weights trainable-first, so its order
    changes when layers are frozen or unfrozen; walking the layers keeps a key valid across
    the head and fine-tune phases and between mixed and float32 builds of the same model.
    """
    out = []
    for n, layer in enumerate(model._flatten_layers(include_self=False, recursive=True)):
        own = list(layer._trainable_weights) + list(layer._non_trainable_weights)
        out.extend((f"{n:04d}.{type(layer).__name__}.{i}", w) for i, w in enumerate(own))
    return out


def _generators(model: "keras.Model") -> dict[str, Any]:
    """Layer name -> the state variable of its ``tf.random.Generator``, for every random layer in ``model``.

    Keyed by name, not position: the dropout layer is shared by the models each phase fits (the
    trainer, the head on cached features), so its state carries from phase to phase. A generator
    is created lazily on the layer's first call; this creates it now (inside the caller's strategy
    scope) so a restored state is there before the first draw.
    """
    out: dict[str, Any] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        rng = getattr(layer, "_random_generator", None)
        if rng is None:
            continue
        rng._maybe_init()
        gen = getattr(rng, "_generator", None)
        if gen is None:
            continue  # a legacy stateful op: nothing a checkpoint can hold
        if layer.name in out:
            raise EdgeclsError(f"two random layers named {layer.name!r}: their generators cannot be checkpointed apart")
        out[layer.name] = gen.state
    return out


def rng_states(model: "keras.Model") -> dict[str, np.ndarray]:
    """The current state of every random layer's generator in ``model`` (see :func:`_generators`)."""
    return {name: _local_value(state) for name, state in _generators(model).items()}


def restore_rng(model: "keras.Model", path: Path) -> None:
    """Put back the generator states ``path`` holds for the random layers of ``model``.

    A layer the checkpoint has no state for has not drawn yet in the interrupted run either (the
    trainer's augmentation when the head phase ran on cached features): it starts from its seed.
    """
    held = read_rng(path)
    for name, state in _generators(model).items():
        if name in held:
            _assign(state, held[name], _RNG + name, path)


def read_rng(path: Path) -> dict[str, np.ndarray]:
    """The generator states a checkpoint holds (empty for a weights-only file or none at all)."""
    if not path.is_file():
        return {}
    with np.load(path) as saved:
        return {k[len(_RNG):]: saved[k] for k in saved.files if k.startswith(_RNG)}


def _local_value(var: Any) -> np.ndarray:
    """A weight's value on this worker, read without a cross-worker collective.

    Under a multi-worker strategy, reading a SyncOnRead variable (BatchNorm's moving
    statistics) averages it over every worker: a collective all of them must join, in the same
    order. edgecls keeps BatchNorm frozen, so every copy holds the same value: read our own.
    """
    copies = getattr(var, "values", None)  # a distributed variable's per-device components
    return np.asarray((copies[0] if isinstance(copies, (tuple, list)) and copies else var).numpy())


def _optimizer_variables(optimizer: Any) -> list[Any]:
    v = optimizer.variables
    return list(v() if callable(v) else v)


@dataclass(frozen=True)
class ResumeState:
    """What a checkpoint holds besides the weights so a run continues exactly where it stopped.

    ``optimizer``: its variables (slots, iteration count); ``state``: the run's
    :class:`~edgecls.train.state.TrainState` as a dict; ``rng``: :func:`rng_states` of the model being fitted.
    """

    optimizer: Any = None
    state: Optional[dict[str, Any]] = None
    rng: Optional[dict[str, np.ndarray]] = None


def save_checkpoint(path: Path, model: "keras.Model", resume: ResumeState = ResumeState(), *,
                    frozen: Optional["FrozenWeights"] = None) -> None:
    """Weights (+ what ``resume`` holds) in one atomically written .npz.

    ``frozen``: a snapshot of the weights that cannot change during the current ``fit`` (read
    once instead of every epoch: most of a backbone, and all of it in the head phase).
    """
    optimizer, state, rng = resume.optimizer, resume.state, resume.rng
    arrays = frozen.arrays() if frozen is not None else {_W + k: _local_value(w) for k, w in _variables(model)}
    if optimizer is not None:
        arrays.update({f"{_OPT}{i:05d}": _local_value(v) for i, v in enumerate(_optimizer_variables(optimizer))})
    if state is not None:
        arrays[_STATE] = np.array(json.dumps(state))
    arrays.update({_RNG + name: value for name, value in (rng or {}).items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_weights_npz(model: "keras.Model", path: Path, frozen: Optional["FrozenWeights"] = None) -> None:
    """All weights (no optimizer state) in one atomically written .npz."""
    save_checkpoint(path, model, frozen=frozen)


class FrozenWeights:
    """The classifier's weights with those outside ``trainable`` read once (they cannot change while it trains).

    Reading ~260 variables of a MobileNetV2 and walking its layers took 0.3-1.2 s per checkpoint
    on a busy 2-core machine; in the head phase on cached features that was most of an epoch.
    Weights outside the fitted model's trainable variables stay fixed for the whole ``fit``:
    frozen layers, and BatchNorm statistics (always in inference mode).

    With ``folder``, the fixed weights are written there once (``frozen-<digest>.npz``) and
    :meth:`arrays` returns only the live ones plus that file's name.
    """

    def __init__(self, model: "keras.Model", trainable: list, folder: Optional[Path] = None) -> None:
        live = {id(v) for v in trainable}
        self._variables = _variables(model)
        self._fixed = {k: _local_value(w) for k, w in self._variables if id(w) not in live}
        self.file: Optional[str] = None
        if folder is not None and self._fixed:
            self.file = _write_frozen(folder, {_W + k: v for k, v in self._fixed.items()})

    def arrays(self) -> dict[str, np.ndarray]:
        if self.file is not None:
            live = {_W + k: _local_value(w) for k, w in self._variables if k not in self._fixed}
            return {**live, _FROZEN: np.array(self.file)}
        return {_W + k: self._fixed[k] if k in self._fixed else _local_value(w) for k, w in self._variables}


def _write_frozen(folder: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` once under a name that is their digest; an existing file of that name holds them already."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    name = f"frozen-{digest.hexdigest()[:16]}.npz"
    if not (folder / name).is_file():
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(folder / name, buf.getvalue())
    return name


def _saved_weights(saved: Any, path: Path) -> dict[str, Any]:
    """The weights a checkpoint holds, with those it keeps in its frozen file merged in."""
    weights = {k: saved[k] for k in saved.files if k.startswith(_W)}
    if _FROZEN in saved.files:
        frozen = path.parent / str(saved[_FROZEN])
        if not frozen.is_file():
            raise EdgeclsError(f"checkpoint {path} needs {frozen}, which is missing; start again with --force")
        with np.load(frozen) as fixed:
            weights.update({k: fixed[k] for k in fixed.files})
    return weights


def _assign(var: Any, value: np.ndarray, key: str, path: Path) -> None:
    if tuple(var.shape) != value.shape:
        raise EdgeclsError(f"checkpoint {path} does not fit this model ({key}: {value.shape} vs {tuple(var.shape)}); "
                           "it was made by another model or edgecls version: start again with --force")
    var.assign(value)


def load_weights_npz(model: "keras.Model", path: Path) -> None:
    with np.load(path) as saved:
        weights = _saved_weights(saved, path)
    for key, w in _variables(model):
        if _W + key not in weights:
            raise EdgeclsError(f"checkpoint {path} does not fit this model (no {key}); start again with --force")
        _assign(w, weights[_W + key], key, path)


def read_checkpoint_state(path: Path) -> Optional[dict[str, Any]]:
    """The training state stored with the weights, or None (a weights-only file)."""
    with np.load(path) as saved:
        return json.loads(str(saved[_STATE])) if _STATE in saved else None


def has_optimizer_state(path: Path) -> bool:
    with np.load(path) as saved:
        return any(k.startswith(_OPT) for k in saved.files)


def load_optimizer(optimizer: Any, trainable: list, path: Path) -> None:
    """Build ``optimizer`` for ``trainable`` and load its variables (step count, moments) from ``path``."""
    inner = getattr(optimizer, "inner_optimizer", None)  # mixed precision: LossScaleOptimizer
    (inner if inner is not None else optimizer).build(trainable)
    variables = _optimizer_variables(optimizer)
    with np.load(path) as saved:
        keys = sorted(k for k in saved.files if k.startswith(_OPT))
        if len(keys) != len(variables):
            raise EdgeclsError(
                f"cannot resume exactly: the optimizer state in {path} has {len(keys)} variables, "
                f"this model's optimizer {len(variables)}; start again with --force"
            )
        for key, var in zip(keys, variables):
            _assign(var, saved[key], key, path)


def copy_weights(src: "keras.Model", dst: "keras.Model") -> None:
    """Copy weights between two builds of the same architecture, whatever is frozen in each."""
    values = dict(_variables(src))
    theirs = _variables(dst)
    if set(values) != {k for k, _ in theirs}:
        raise EdgeclsError("cannot copy weights: the two models differ in structure")
    for key, w in theirs:
        w.assign(_local_value(values[key]))


class Checkpointer(keras.callbacks.Callback):
    """After each epoch: last checkpoint (weights + optimizer + state), best weights, state.json.

    Placed after EarlyStopping in the callback list, so the state carries its counters too.
    The best weights are written before the last checkpoint that mentions them.
    """

    def __init__(self, classifier: "keras.Model", folder: Path, state: "TrainState", phase: str,
                 early_stopping: Optional["keras.callbacks.EarlyStopping"] = None):
        super().__init__()
        self.classifier, self.folder, self.state, self.phase = classifier, folder, state, phase
        self.early_stopping = early_stopping
        self.frozen: Optional[FrozenWeights] = None

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self.frozen = FrozenWeights(self.classifier, self.model.trainable_variables, self.folder)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        logs = dict(logs or {})
        st = self.state
        row: dict[str, Any] = {"phase": self.phase, "epoch": st.epochs_run + 1, "phase_epoch": epoch + 1}
        row.update({k: float(v) for k, v in logs.items() if np.isscalar(v)})
        val_loss = logs.get("val_loss", logs.get("loss"))
        if val_loss is not None and (st.best_val_loss is None or val_loss < st.best_val_loss):
            save_weights_npz(self.classifier, self.folder / BEST_WEIGHTS, frozen=self.frozen)
            st.best_val_loss, st.best_epoch = float(val_loss), row["epoch"]
        st.rows.append(row)
        st.phase, st.phase_epochs_done = self.phase, epoch + 1
        es = self.early_stopping
        if es is not None:
            st.early_stopping = {"wait": int(es.wait), "best": float(es.best), "best_epoch": int(es.best_epoch)}
        resume = ResumeState(self.model.optimizer, st.as_dict(), rng_states(self.model))
        save_checkpoint(self.folder / LAST_WEIGHTS, self.classifier, resume, frozen=self.frozen)
        st.save(self.folder)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that continues counting where an interrupted phase left off."""

    def __init__(self, *args: Any, resume_from: Optional[dict[str, Any]] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.resume_from = resume_from

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        super().on_train_begin(logs)
        if self.resume_from:
            self.wait = self.resume_from["wait"]
            self.best = self.resume_from["best"]
            self.best_epoch = self.resume_from["best_epoch"]


def restore(classifier: "keras.Model", folder: Path, name: str) -> None:
    if (folder / name).is_file():
        load_weights_npz(classifier, folder / name)
