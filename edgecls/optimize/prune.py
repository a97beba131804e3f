"""Magnitude pruning of a trained run with tensorflow-model-optimization (tfmot).

``prune_run(PruneConfig)`` loads ``RUN/model.keras``, wraps only the Conv2D and Dense layers in
``prune_low_magnitude`` (tfmot refuses ``Rescaling`` and does not prune DepthwiseConv2D), ramps
sparsity from 0 to the target with ``PolynomialDecay`` over a short fine-tune on the run's
training split, strips the wrappers and writes ``RUN/model_pruned.keras`` + ``RUN/pruning.json``.

The classifier calls its backbone with ``training=False`` (BatchNorm stays in inference mode), but
the pruning wrapper only updates its masks when ``training`` is true: while pruning the backbone is
called without that flag (:mod:`edgecls.optimize.prune_graph`) and its BatchNorm layers are frozen
instead (``trainable=False`` also means inference mode in Keras 2). The saved model gets the flag back.
Dropout inside the backbone (EfficientNet's stochastic depth) would turn on without the flag, so it
is set to rate 0 while pruning and given its rate back after: the backbone trains exactly as under
``edgecls train``. The fine-tune uses the run's label smoothing and class weights, like ``train`` does.

Pruning does not make XNNPACK faster; it makes the compressed file smaller (see BENCHMARKS.md).
"""

from __future__ import annotations

import gzip
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls.core.config import PruneConfig, TrainConfig
from edgecls.core.options import validate
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json
from edgecls.core.rundir import RunDir
from edgecls.optimize.prune_graph import (
    all_layers, build_pruning_model, is_prunable, measure_sparsity, restore_training_flag,
)

# Masks are recomputed every PRUNING_UPDATES_PER_RUN-th of the fine-tune (a sort per layer per
# update); tfmot's default of every 100 steps would never reach the target on a short fine-tune.
PRUNING_UPDATES_PER_RUN = 20
# Sparsity ramps up over this share of the fine-tune; the rest trains at the final sparsity so
# the surviving weights can recover (reaching the target on the very last step leaves no time
# to recover: 100% -> 56% test accuracy on the demo run).
RAMP_FRACTION = 0.6
EVAL_BATCH = 32


# -- measurements ---------------------------------------------------------------------------------


def gzip_weights_bytes(model: Any) -> int:
    """gzip size of all the model's weights as raw float32 (what pruning's zeros shrink)."""
    raw = b"".join(np.asarray(w, dtype=np.float32).tobytes() for w in model.get_weights())
    return len(gzip.compress(raw, compresslevel=9))


def accuracy(model: Any, images: np.ndarray, labels: np.ndarray) -> float:
    probs = model.predict(images.astype(np.float32), batch_size=EVAL_BATCH, verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == labels))


# -- the stage ------------------------------------------------------------------------------------


def prune_run(cfg: PruneConfig) -> dict[str, Any]:
    """Prune ``cfg.run``'s model to ``cfg.sparsity``; writes model_pruned.keras and pruning.json.

    Returns the report also written to pruning.json: measured sparsity (overall and per layer), accuracy
    and gzip size before and after, the fine-tune's settings, the new calibration. Raises EdgeclsError
    before any fine-tuning when the pruned model exists (without ``cfg.force``), the run has no trained
    model, or its split has no training images.
    """
    run = _open_run(cfg)
    from edgecls.core.keras import tf  # before tfmot: it must bind to tf_keras
    from edgecls.train.model_io import load_model, save_model
    import tensorflow_model_optimization as tfmot

    started = time.perf_counter()
    src = _load_run_data(run)
    model = load_model(run.model_path)
    held_out = _EvalImages.load(src, int(model.input_shape[1]))
    before = held_out.measure(model)
    flags = _TrainableFlags.of(model)
    pruning, tuned = _fine_tune(model, cfg, src)
    final = _strip(pruning, model, flags)
    final, calibration, unknown = _recalibrate(final, model, run, src)
    overall, per_layer = measure_sparsity(final)
    after = held_out.measure(final)
    save_model(final, run.pruned_model_path)
    report = {
        "target_sparsity": cfg.sparsity,
        "sparsity": round(overall, 4),
        "per_layer": per_layer,
        "pruned_layers": len(per_layer),
        **_comparison(src, before, after),
        "fine_tune": tuned.summary(),
        "calibration": calibration,
        "unknown": unknown,
        "elapsed_s": round(time.perf_counter() - started, 2),
        "model": run.pruned_model_path.name,
        "source_model": run.model_path.name,
        "config": asdict(cfg),
        "tensorflow_version": tf.__version__,
        "tfmot_version": getattr(tfmot, "__version__", "unknown"),
    }
    atomic_write_json(run.pruning_json, report)
    return report


@dataclass
class _RunData:
    """What pruning reads from the run besides its model: its training options and its split."""

    tcfg: TrainConfig
    """The run's own options: the fine-tune uses its label smoothing, balance and seed."""
    root: Path
    split: dict[str, Any]
    labels: list[str]
    train_items: list[tuple[str, int]]
    """The training split and its negatives, as pipeline items."""
    eval_split: str
    """Where accuracy is measured: test, or val when the run has no test images."""
    eval_items: list[Any]


@dataclass(frozen=True)
class _Steps:
    """The fine-tune's length in optimizer steps, and when the pruning masks are updated within it."""

    total: int
    end_step: int
    frequency: int


@dataclass(frozen=True)
class _Measure:
    """One model's accuracy on the held-out images (None without any) and its weights' gzip size."""

    accuracy: Optional[float]
    gzip_bytes: int


@dataclass(frozen=True)
class _EvalImages:
    """The held-out images that accuracy is measured on, before and after pruning (None: no test or val)."""

    x: Optional[np.ndarray]
    y: Optional[np.ndarray]

    @classmethod
    def load(cls, src: _RunData, size: int) -> _EvalImages:
        from edgecls import data

        return cls(*(data.load_images(src.root, src.eval_items, size) if src.eval_items else (None, None)))

    def measure(self, model: Any) -> _Measure:
        acc = accuracy(model, self.x, self.y) if self.x is not None else None
        return _Measure(accuracy=acc, gzip_bytes=gzip_weights_bytes(model))


@dataclass
class _FineTune:
    """What the fine-tune used and reached, as the report states it."""

    label_smoothing: float
    balance: str
    epochs: int
    steps: _Steps
    class_weight: Optional[dict[int, float]]
    history: Any

    def summary(self) -> dict[str, Any]:
        return {
            "label_smoothing": self.label_smoothing,
            "balance": self.balance,
            "class_weights": {str(k): v for k, v in self.class_weight.items()} if self.class_weight else None,
            "epochs": self.epochs,
            "steps": self.steps.total,
            "end_step": self.steps.end_step,
            "frequency": self.steps.frequency,
            "final_loss": float(self.history.history["loss"][-1]),
        }


@dataclass(frozen=True)
class _TrainableFlags:
    """The trained model's ``trainable`` flags (every leaf layer, and each top-level one), to put back."""

    leaves: dict[int, bool]
    top: dict[int, bool]

    @classmethod
    def of(cls, model: Any) -> _TrainableFlags:
        return cls(leaves={id(layer): layer.trainable for layer in all_layers(model)},
                   top={id(layer): layer.trainable for layer in model.layers})

    def restore(self, model: Any) -> None:
        """Top-level layers first, then every leaf: in Keras 2 setting a nested model's flag also sets all its
        layers', so the leaves' own flags (a backbone unfrozen only at the top) must come after."""
        for layer in model.layers:
            layer.trainable = self.top.get(id(layer), layer.trainable)
        for layer in all_layers(model):
            layer.trainable = self.leaves.get(id(layer), layer.trainable)


class _PruneWrapper:
    """The ``clone_function`` that makes the pruning model: prunable layers wrapped, the backbone's Dropout off.

    clone_model reuses a layer this returns, so a silenced Dropout is the trained model's own layer:
    ``restore_dropout()`` gives it its rate back once the fine-tune is over.
    """

    def __init__(self, schedule: Any, backbone_dropout: set[int]) -> None:
        import tensorflow_model_optimization as tfmot

        self._prune = tfmot.sparsity.keras.prune_low_magnitude
        self._schedule = schedule
        self._backbone_dropout = backbone_dropout
        self._quieted: list[tuple[Any, float]] = []

    def __call__(self, layer: Any) -> Any:
        if is_prunable(layer):
            return self._prune(layer, pruning_schedule=self._schedule)
        if id(layer) in self._backbone_dropout:
            self._quieted.append((layer, layer.rate))
            layer.rate = 0.0
        return layer

    def restore_dropout(self) -> None:
        for layer, rate in self._quieted:
            layer.rate = rate


def _open_run(cfg: PruneConfig) -> RunDir:
    """The run to prune, checked before anything heavy is imported; raises EdgeclsError saying what to do."""
    validate(cfg)  # a config changed after it was made
    run = RunDir.open(cfg.run)
    out = run.pruned_model_path
    if out.exists() and not cfg.force:
        raise EdgeclsError(f"{out} exists; pass --force to prune again and overwrite it")
    if not run.model_path.is_file():
        raise EdgeclsError(f"{run.model_path} is missing; train the run first ('edgecls train')")
    return run


def _load_run_data(run: RunDir) -> _RunData:
    """The run's options and split; raises EdgeclsError when there is nothing to fine-tune on."""
    from edgecls import data
    from edgecls.data.negatives import items_with_negatives

    tcfg = run.train_config()
    root, split = data.load_split(run)
    labels = run.read_labels()
    train_items = items_with_negatives(split, "train", labels)  # the unknown class keeps its training too
    if not split.get("train"):
        raise EdgeclsError(f"{run.split_json} has no training images to fine-tune on")
    eval_split = "test" if split.get("test") else "val"
    return _RunData(tcfg=tcfg, root=root, split=split, labels=labels, train_items=train_items,
                    eval_split=eval_split, eval_items=split.get(eval_split) or [])


def _plan_steps(n_train: int, cfg: PruneConfig) -> _Steps:
    """Steps of the fine-tune, and a mask update frequency that reaches the target within the ramp."""
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    ramp_steps = max(1, int(total_steps * RAMP_FRACTION))
    frequency = max(1, ramp_steps // PRUNING_UPDATES_PER_RUN)
    # The last mask update must land on end_step, or the final sparsity is never applied.
    end_step = max(1, ((ramp_steps - 1) // frequency) * frequency)
    return _Steps(total=total_steps, end_step=end_step, frequency=frequency)


def _backbone_dropouts(model: Any) -> set[int]:
    """ids of the Dropout layers inside nested models (EfficientNet's stochastic depth), not the head's."""
    from edgecls.core.keras import keras

    return {id(layer) for nested in model.layers if isinstance(nested, keras.Model)
            for layer in all_layers(nested) if isinstance(layer, keras.layers.Dropout)}


def _unfreeze_for_pruning(model: Any) -> None:
    """Every layer trainable except BatchNorm, which stays frozen so that it keeps running in inference mode."""
    from edgecls.core.keras import keras

    for layer in model.layers:
        layer.trainable = True
    for layer in all_layers(model):
        # Frozen BatchNorm runs in inference mode (Keras 2), as the backbone did with training=False.
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)


def _fine_tune(model: Any, cfg: PruneConfig, src: _RunData) -> tuple[Any, _FineTune]:
    """Fine-tune a pruning copy of ``model`` while its sparsity ramps to ``cfg.sparsity``: (copy, what it did).

    The copy trains as ``edgecls train`` trained the model: the run's label smoothing, imbalance remedy and
    seed, the backbone's BatchNorm frozen and its Dropout off. Leaves ``model``'s layers unfrozen (see
    :class:`_TrainableFlags`); the Dropout rates are back whether or not the fit succeeds.
    """
    from edgecls import data
    from edgecls.core.keras import keras, tf
    from edgecls.train.divergence import StopOnDivergence
    import tensorflow_model_optimization as tfmot

    tcfg = src.tcfg
    steps = _plan_steps(len(src.train_items), cfg)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=cfg.sparsity, begin_step=0, end_step=steps.end_step,
        frequency=steps.frequency,
    )
    wrap = _PruneWrapper(schedule, _backbone_dropouts(model))
    _unfreeze_for_pruning(model)
    pruning = build_pruning_model(model, wrap)
    n_classes = int(model.output_shape[-1])
    pruning.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        # As in train: one-hot labels so label smoothing applies.
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=tcfg.label_smoothing),
        metrics=["accuracy"],
    )
    # The run's own imbalance remedy, as training used it.
    class_weight = (data.class_weights([lbl for _, lbl in src.train_items], n_classes)
                    if tcfg.balance == "weights" else None)
    train_ds = data.build_dataset(
        src.root, src.train_items, image_size=int(model.input_shape[1]), batch_size=cfg.batch_size, training=True,
        seed=tcfg.seed, cache="auto", oversample=tcfg.balance == "oversample",
    ).map(lambda x, y: (x, tf.one_hot(y, n_classes)))
    try:
        history = pruning.fit(
            train_ds, epochs=cfg.epochs, class_weight=class_weight,
            callbacks=[StopOnDivergence("prune"), tfmot.sparsity.keras.UpdatePruningStep()], verbose=0,
        )
    finally:
        wrap.restore_dropout()
    return pruning, _FineTune(label_smoothing=tcfg.label_smoothing, balance=tcfg.balance, epochs=cfg.epochs,
                              steps=steps, class_weight=class_weight, history=history)


def _strip(pruning: Any, model: Any, flags: _TrainableFlags) -> Any:
    """The fine-tuned weights in the trained model's shape: no wrappers, backbone called with training=False
    again, the trained model's trainable flags back."""
    import tensorflow_model_optimization as tfmot

    final = restore_training_flag(tfmot.sparsity.keras.strip_pruning(pruning), model)
    flags.restore(final)
    return final


def _recalibrate(final: Any, model: Any, run: RunDir, src: _RunData) -> tuple[Any, Optional[dict], Any]:
    """(model, calibration, unknown rule): ``final`` calibrated again on val when ``model`` was calibrated.

    The fine-tune moved the weights under the run's temperature; refitting it makes the pruned model's
    scores (and its unknown threshold) mean what the trained model's did. Uncalibrated, or without val
    images, ``final`` is returned as is with no calibration and the trained model's unknown rule.
    """
    from edgecls import data
    from edgecls.data.negatives import unknown_index
    from edgecls.train.calibration import refit, temperature_of

    calibration, unknown = None, run.unknown_rule()
    if temperature_of(model) is not None and src.split.get("val"):
        val = data.load_images(src.root, src.split["val"], int(model.input_shape[1]))
        final, calibration, unknown = refit(final, val, keep=src.tcfg.keep, threshold=src.tcfg.unknown_threshold,
                                            unknown_class=unknown_index(src.labels, src.split))
    return final, calibration, unknown


def _comparison(src: _RunData, before: _Measure, after: _Measure) -> dict[str, Any]:
    """The report's before/after fields: where accuracy was measured, accuracy and gzip size, their ratio."""
    return {
        "eval_split": src.eval_split,
        "n_eval_images": len(src.eval_items),
        "accuracy_before": before.accuracy,
        "accuracy_after": after.accuracy,
        "gzip_bytes_before": before.gzip_bytes,
        "gzip_bytes_after": after.gzip_bytes,
        "gzip_of": "all model weights as raw float32, concatenated, gzip level 9",
        "gzip_ratio": round(before.gzip_bytes / after.gzip_bytes, 3) if after.gzip_bytes else None,
    }
