"""Magnitude pruning of a trained run with tensorflow-model-optimization (tfmot).

``prune_run(PruneConfig)`` loads ``RUN/model.keras``, wraps only the Conv2D and Dense layers in
``prune_low_magnitude`` (tfmot refuses ``Rescaling`` and does not prune DepthwiseConv2D), ramps
sparsity from 0 to the target with ``PolynomialDecay`` over a short fine-tune on the run's
training split, strips the wrappers and writes ``RUN/model_pruned.keras`` + ``RUN/pruning.json``.

Two traps handled here:

- ``clone_model`` does not recurse into the nested backbone model, so the backbone is cloned
  with the wrapping function on its own and the outer chain (input -> backbone -> dropout ->
  predictions) is rebuilt around it.
- The classifier calls its backbone with ``training=False`` (BatchNorm stays in inference mode).
  The pruning wrapper only updates its masks when ``training`` is true, so while pruning the
  backbone is called without that flag and its BatchNorm layers are frozen instead
  (``trainable=False`` also means inference mode in Keras 2). The saved model gets the flag back.
  Dropout inside the backbone (EfficientNet's stochastic depth) would turn on without the flag,
  so it is set to rate 0 while pruning and given its rate back after: the backbone trains
  exactly as under ``edgecls train``. The fine-tune uses the run's label smoothing and class
  weights, like ``train`` does.

Pruning does not make XNNPACK faster; it makes the compressed file smaller (see BENCHMARKS.md).
"""

from __future__ import annotations

import gzip
import math
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from edgecls.core.config import PruneConfig
from edgecls.core.options import validate
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json
from edgecls.core.rundir import RunDir

# Masks are recomputed every PRUNING_UPDATES_PER_RUN-th of the fine-tune (a sort per layer per
# update); tfmot's default of every 100 steps would never reach the target on a short fine-tune.
PRUNING_UPDATES_PER_RUN = 20
# Sparsity ramps up over this share of the fine-tune; the rest trains at the final sparsity so
# the surviving weights can recover (reaching the target on the very last step leaves no time
# to recover: 100% -> 56% test accuracy on the demo run).
RAMP_FRACTION = 0.6
EVAL_BATCH = 32


def is_prunable(layer: Any) -> bool:
    """Conv2D (incl. pointwise 1x1) and Dense kernels; never DepthwiseConv2D, BatchNorm, Rescaling."""
    from edgecls.core.keras import keras

    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(
        layer, keras.layers.DepthwiseConv2D
    )


# -- graph surgery ------------------------------------------------------------------------------


def _chain(model: Any) -> list[tuple[Any, dict]]:
    """The outer model as a chain [(layer, call kwargs)], or an error when it is not one."""
    cfg = model.get_config()
    layers = cfg.get("layers", [])
    if not layers or len(cfg.get("input_layers", [])) != 1 or len(cfg.get("output_layers", [])) != 1:
        raise EdgeclsError("pruning supports single-input, single-output models made by 'edgecls train'")
    chain = []
    prev = layers[0]["name"]
    for lc in layers[1:]:
        nodes = lc.get("inbound_nodes") or []
        if len(nodes) != 1 or len(nodes[0]) != 1 or nodes[0][0][0] != prev:
            raise EdgeclsError(
                f"cannot prune this model: layer {lc['name']!r} is not in a simple chain; "
                "pruning supports models made by 'edgecls train'"
            )
        kwargs = dict(nodes[0][0][3]) if len(nodes[0][0]) > 3 else {}
        chain.append((model.get_layer(lc["name"]), kwargs))
        prev = lc["name"]
    return chain


def _rebuild(model: Any, layer_fn: Callable[[Any], Any], keep_training_flag: bool) -> Any:
    """Same chain as ``model`` with each layer mapped by ``layer_fn`` (nested models cloned too)."""
    from edgecls.core.keras import keras

    inp = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name=model.layers[0].name)
    x = inp
    for layer, kwargs in _chain(model):
        if not keep_training_flag:
            kwargs = {k: v for k, v in kwargs.items() if k != "training"}
        if isinstance(layer, keras.Model):
            new = keras.models.clone_model(layer, clone_function=layer_fn)
            new._name = layer.name  # the contract finds it by name ("backbone")
        else:
            new = layer_fn(layer)
        x = new(x, **kwargs)
    return keras.Model(inp, x, name=model.name)


def _all_layers(model: Any):
    from edgecls.core.keras import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


# -- measurements ---------------------------------------------------------------------------------


def measure_sparsity(model: Any) -> tuple[float, dict[str, dict[str, float]]]:
    """(overall, per layer) share of exact zeros in every Conv2D/Dense kernel, measured from weights."""
    per_layer: dict[str, dict[str, float]] = {}
    zeros = total = 0
    for layer in _all_layers(model):
        if not is_prunable(layer):
            continue
        k = np.asarray(layer.kernel.numpy())
        z = int(np.count_nonzero(k == 0))
        per_layer[layer.name] = {"sparsity": round(z / k.size, 4), "weights": int(k.size)}
        zeros += z
        total += k.size
    return (zeros / total if total else 0.0), per_layer


def gzip_weights_bytes(model: Any) -> int:
    """gzip size of all the model's weights as raw float32 (what pruning's zeros shrink)."""
    raw = b"".join(np.asarray(w, dtype=np.float32).tobytes() for w in model.get_weights())
    return len(gzip.compress(raw, compresslevel=9))


def accuracy(model: Any, images: np.ndarray, labels: np.ndarray) -> float:
    probs = model.predict(images.astype(np.float32), batch_size=EVAL_BATCH, verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == labels))


# -- the stage ------------------------------------------------------------------------------------


def prune_run(cfg: PruneConfig) -> dict[str, Any]:
    """Prune ``cfg.run``'s model to ``cfg.sparsity``; writes model_pruned.keras and pruning.json."""
    validate(cfg)  # a config changed after it was made
    run = RunDir.open(cfg.run)
    out = run.pruned_model_path
    if out.exists() and not cfg.force:
        raise EdgeclsError(f"{out} exists; pass --force to prune again and overwrite it")
    if not run.model_path.is_file():
        raise EdgeclsError(f"{run.model_path} is missing; train the run first ('edgecls train')")

    from edgecls import data
    from edgecls.core.keras import keras, tf  # before tfmot: it must bind to tf_keras
    from edgecls.data.negatives import items_with_negatives, unknown_index
    from edgecls.train.calibration import refit, temperature_of
    from edgecls.train.divergence import StopOnDivergence
    from edgecls.train.model_io import load_model, save_model
    import tensorflow_model_optimization as tfmot

    started = time.perf_counter()
    tcfg = run.train_config()
    root, split = data.load_split(run)
    labels = run.read_labels()
    train_items = items_with_negatives(split, "train", labels)  # the unknown class keeps its training too
    if not split.get("train"):
        raise EdgeclsError(f"{run.split_json} has no training images to fine-tune on")
    eval_split = "test" if split.get("test") else "val"
    eval_items = split.get(eval_split) or []

    model = load_model(run.model_path)
    size = int(model.input_shape[1])
    eval_x, eval_y = data.load_images(root, eval_items, size) if eval_items else (None, None)
    acc_before = accuracy(model, eval_x, eval_y) if eval_x is not None else None
    gzip_before = gzip_weights_bytes(model)
    trainable_before = {id(layer): layer.trainable for layer in _all_layers(model)}
    nested_trainable = {id(layer): layer.trainable for layer in model.layers}

    n_train = len(train_items)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    ramp_steps = max(1, int(total_steps * RAMP_FRACTION))
    frequency = max(1, ramp_steps // PRUNING_UPDATES_PER_RUN)
    # The last mask update must land on end_step, or the final sparsity is never applied.
    end_step = max(1, ((ramp_steps - 1) // frequency) * frequency)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=cfg.sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )

    backbone_dropout = {id(layer): layer.rate for nested in model.layers if isinstance(nested, keras.Model)
                        for layer in _all_layers(nested) if isinstance(layer, keras.layers.Dropout)}
    quiet_dropouts: list[tuple[Any, float]] = []

    def wrap(layer: Any) -> Any:
        if is_prunable(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        if id(layer) in backbone_dropout:
            quiet_dropouts.append((layer, layer.rate))  # clone_model reuses it (clone_function returned it)
            layer.rate = 0.0
        return layer

    for layer in model.layers:
        layer.trainable = True
    for layer in _all_layers(model):
        # Frozen BatchNorm runs in inference mode (Keras 2), as the backbone did with training=False.
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    pruning = build_pruning_model(model, wrap)
    n_classes = int(model.output_shape[-1])
    pruning.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        # As in train: one-hot labels so label smoothing applies.
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=tcfg.label_smoothing),
        metrics=["accuracy"],
    )
    # The run's own imbalance remedy, as training used it.
    class_weight = (data.class_weights([lbl for _, lbl in train_items], n_classes)
                    if tcfg.balance == "weights" else None)
    train_ds = data.build_dataset(
        root, train_items, image_size=size, batch_size=cfg.batch_size, training=True, seed=tcfg.seed,
        cache="auto", oversample=tcfg.balance == "oversample",
    ).map(lambda x, y: (x, tf.one_hot(y, n_classes)))
    try:
        history = pruning.fit(
            train_ds, epochs=cfg.epochs, class_weight=class_weight,
            callbacks=[StopOnDivergence("prune"), tfmot.sparsity.keras.UpdatePruningStep()], verbose=0,
        )
    finally:
        for layer, rate in quiet_dropouts:
            layer.rate = rate

    stripped = tfmot.sparsity.keras.strip_pruning(pruning)
    # Back to the trained model's shape: backbone called with training=False, original trainable flags.
    final = _restore_training_flag(stripped, model)
    for layer in _all_layers(final):
        layer.trainable = trainable_before.get(id(layer), layer.trainable)
    for layer in final.layers:
        layer.trainable = nested_trainable.get(id(layer), layer.trainable)

    calibration, unknown = None, run.unknown_rule()  # uncalibrated: the trained model's rule stands
    if temperature_of(model) is not None and split.get("val"):
        # The fine-tune moved the weights under the run's temperature: fit it again on val, so the pruned
        # model's scores (and its unknown threshold) mean what the trained model's did.
        val = data.load_images(root, split["val"], size)
        final, calibration, unknown = refit(final, val, keep=tcfg.keep, threshold=tcfg.unknown_threshold,
                                            unknown_class=unknown_index(labels, split))
    overall, per_layer = measure_sparsity(final)
    acc_after = accuracy(final, eval_x, eval_y) if eval_x is not None else None
    gzip_after = gzip_weights_bytes(final)
    save_model(final, out)
    report = {
        "target_sparsity": cfg.sparsity,
        "sparsity": round(overall, 4),
        "per_layer": per_layer,
        "pruned_layers": len(per_layer),
        "eval_split": eval_split,
        "n_eval_images": len(eval_items),
        "accuracy_before": acc_before,
        "accuracy_after": acc_after,
        "gzip_bytes_before": gzip_before,
        "gzip_bytes_after": gzip_after,
        "gzip_of": "all model weights as raw float32, concatenated, gzip level 9",
        "gzip_ratio": round(gzip_before / gzip_after, 3) if gzip_after else None,
        "fine_tune": {
            "label_smoothing": tcfg.label_smoothing,
            "balance": tcfg.balance,
            "class_weights": {str(k): v for k, v in class_weight.items()} if class_weight else None,
            "epochs": cfg.epochs,
            "steps": total_steps,
            "end_step": end_step,
            "frequency": frequency,
            "final_loss": float(history.history["loss"][-1]),
        },
        "calibration": calibration,
        "unknown": unknown,
        "elapsed_s": round(time.perf_counter() - started, 2),
        "model": out.name,
        "source_model": run.model_path.name,
        "config": asdict(cfg),
        "tensorflow_version": tf.__version__,
        "tfmot_version": getattr(tfmot, "__version__", "unknown"),
    }
    atomic_write_json(run.pruning_json, report)
    return report


def build_pruning_model(model: Any, layer_fn: Callable[[Any], Any]) -> Any:
    """The chain rebuilt for pruning: backbone called without ``training=False`` (masks update only in training)."""
    return _rebuild(model, layer_fn, keep_training_flag=False)


def _restore_training_flag(model: Any, original: Any) -> Any:
    """Rebuild ``model`` with the call kwargs (``training=False``) the original chain had."""
    from edgecls.core.keras import keras

    kwargs_by_name = {layer.name: kw for layer, kw in _chain(original)}
    inp = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name=model.layers[0].name)
    x = inp
    for layer, _ in _chain(model):
        if isinstance(layer, keras.Model):
            layer._name = next(o.name for o, _ in _chain(original) if isinstance(o, keras.Model))
        x = layer(x, **kwargs_by_name.get(layer.name, {}))
    return keras.Model(inp, x, name=original.name)
