"""Training: an image folder -> a run folder with the best float model, metrics and plots.

Two phases: the new head on a frozen backbone (``epochs`` at ``learning_rate``), then the
top ``fine_tune_fraction`` of the backbone unfrozen (``fine_tune_epochs`` at the much lower
``fine_tune_learning_rate``). BatchNorm stays in inference mode and frozen throughout (the
backbone is called with ``training=False``), which keeps small datasets from wrecking the
pretrained statistics. Augmentation lives in a training-only wrapper model, so ``model.keras``
and everything exported from it take clean raw pixels.

Every epoch writes a checkpoint (``RUN/checkpoints``: last and best weights + ``state.json``
with phase, epoch and history) so ``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import functools
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgecls.train.backbones import build_classifier, calibrate_batchnorm, get_backbone, is_pretrained
from edgecls.core.config import TrainConfig
from edgecls.core.errors import EdgeclsError
from edgecls.train.checkpoint import (
    BEST_WEIGHTS, FROZEN_GLOB, LAST_WEIGHTS, STATE_JSON, Checkpointer, ResumableEarlyStopping, copy_weights,
    has_optimizer_state, load_optimizer, restore, save_checkpoint,
)
from edgecls.core.io import atomic_write_json, read_json
from edgecls.core.keras import keras, tf
from edgecls.train.report import classification_metrics, plot_confusion_matrix, plot_learning_curves
from edgecls.core.rundir import RunDir
from edgecls.train.checks import check_train_config
from edgecls.train.cut import first_trainable
from edgecls.train.model_io import save_model
from edgecls.train import cluster, runfolder
from edgecls.train.agree import PREVIOUS_WEIGHTS, KeepPrevious, agree, barrier, fingerprint
from edgecls.train.runfolder import PHASE_DONE, PHASE_FINE_TUNE, PHASE_HEAD

FINE_TUNE_SEED_OFFSET = 1  # the fine-tune phase's epoch draws on cached features (see _feature_datasets)


# -- models -----------------------------------------------------------------------------------


def make_augmentation(seed: int) -> "keras.Sequential":
    """Random flip/rotation/zoom/translation/contrast, active only when ``training=True``.

    Mild settings: photos of objects tolerate small geometric changes; vertical flips or big
    rotations would teach the model views the camera never sees. float32 so mixed precision
    does not round pixel values.
    """
    L = keras.layers
    return keras.Sequential(
        [
            L.RandomFlip("horizontal", seed=seed, dtype="float32"),
            L.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1, dtype="float32"),
            L.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2, dtype="float32"),
            L.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed + 3, dtype="float32"),
            L.RandomContrast(0.1, seed=seed + 4, dtype="float32"),  # clips to [0, 255] itself
        ],
        name="augment",
    )


def make_trainer(classifier: "keras.Model", *, augment: bool, seed: int) -> "keras.Model":
    """The model ``fit`` sees: augmentation (training only) in front of the classifier."""
    if not augment:
        return classifier
    inp = keras.Input(classifier.input_shape[1:], dtype="float32", name="image")
    out = classifier(make_augmentation(seed)(inp))
    return keras.Model(inp, out, name="trainer")


def set_phase(classifier: "keras.Model", phase: str, fine_tune_fraction: float) -> None:
    """Freeze the whole backbone (head phase) or unfreeze its top share except BatchNorm."""
    base = get_backbone(classifier)
    if phase == PHASE_HEAD:
        base.trainable = False
        return
    base.trainable = True
    cut = first_trainable(len(base.layers), fine_tune_fraction)
    for i, layer in enumerate(base.layers):
        if i < cut or isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def compile_for(trainer: "keras.Model", lr: float, label_smoothing: float) -> None:
    trainer.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )


def evaluate(
    model: "keras.Model", ds: "tf.data.Dataset", n_classes: int, labels: Optional[Sequence[str]] = None
) -> dict[str, Any]:
    """Accuracy, loss, per-class figures and confusion matrix of ``model`` on ``ds``.

    ``ds`` yields ``(images, labels)`` batches with integer or one-hot labels.
    """
    names = list(labels) if labels is not None else [str(i) for i in range(n_classes)]
    ys, ps = [], []
    for x, y in ds:
        ps.append(np.asarray(model(x, training=False), dtype=np.float32))
        y = np.asarray(y)
        ys.append(y.argmax(axis=-1) if y.ndim == 2 else y)
    if not ys:
        return classification_metrics(np.zeros(0, np.int64), np.zeros((0, n_classes)), names)
    return classification_metrics(np.concatenate(ys), np.concatenate(ps), names)


# -- the run ----------------------------------------------------------------------------------


def _tensorboard(folder: Path) -> list:
    """TensorBoard logging when the package is installed (TF 2.21 no longer pulls it in)."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return []
    return [keras.callbacks.TensorBoard(str(folder), profile_batch=0)]


def _verbose() -> int:
    return 1 if sys.stdout.isatty() else 2  # progress bars only for humans; one line per epoch in logs


def _datasets(cfg: TrainConfig, root: Path, split: dict, n_classes: int, cache_root: Path,
              features: bool = False) -> dict[str, Any]:
    from edgecls import data

    out: dict[str, Any] = {"sizes": {name: len(split.get(name) or []) for name in ("train", "val", "test")}}
    out["n_classes"] = n_classes
    if features:
        # The head-phase feature cache reads the training images in a fixed order, without
        # oversampling (it keeps every image's label beside its features and resamples itself).
        (cache_root / "features").mkdir(parents=True, exist_ok=True)
        out["train_features"] = data.build_dataset(
            root, split["train"], image_size=cfg.size, batch_size=cfg.batch_size, training=False, seed=cfg.seed,
            cache=cfg.cache, cache_budget_mb=cfg.cache_budget_mb, cache_dir=cache_root / "features")
    for name in ("train", "val", "test"):
        items = split.get(name) or []
        if not items:
            out[name] = None
            continue
        cache_dir = cache_root / name
        cache_dir.mkdir(parents=True, exist_ok=True)
        ds = data.build_dataset(
            root, items, image_size=cfg.size, batch_size=cfg.batch_size, training=(name == "train"),
            seed=cfg.seed, cache=cfg.cache, cache_budget_mb=cfg.cache_budget_mb, cache_dir=cache_dir,
            oversample=(name == "train" and balance_mode(cfg) == "oversample"),
        )
        # One-hot labels: CategoricalCrossentropy is the loss that supports label smoothing.
        ds = ds.map(lambda x, y: (x, tf.one_hot(y, n_classes)), num_parallel_calls=tf.data.AUTOTUNE)
        # The pipeline starts from a list of paths, not files per worker: shard by element on a cluster.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        out[name] = ds.with_options(options)
    return out


def balance_mode(cfg: TrainConfig) -> str:
    """The imbalance remedy asked for (see :func:`edgecls.data.split.balance_mode`)."""
    from edgecls import data

    return data.balance_mode(cfg.balance, cfg.class_weights)


def _float32_config(obj: Any) -> Any:
    """A model config with every layer's dtype policy (``mixed_float16``) replaced by float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("Policy", "DTypePolicy"):
            return "float32"
        return {k: _float32_config(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    return obj


def float32_copy(model: "keras.Model", cfg: TrainConfig, n_classes: int) -> "keras.Model":
    """The same model and weights in a float32 graph: a mixed-precision model must not leak float16 into export.

    Rebuilt from the model's own config, not from the backbone builder, so every layer it has
    is kept (EfficientNet's extra ImageNet-only Rescaling exists only when built with ImageNet
    weights); weights are copied by structure (the copy gets new automatic layer names).
    """
    if keras.mixed_precision.global_policy().name == "float32":
        return model
    prev = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clean = keras.Model.from_config(_float32_config(model.get_config()))
    finally:
        keras.mixed_precision.set_global_policy(prev)
    copy_weights(model, clean)
    return clean


def local_copy(model: "keras.Model") -> "keras.Model":
    """The model with plain variables: calling a cluster-trained model reads its BatchNorm statistics
    through a collective every worker must join, so the chief evaluates and saves a copy."""
    clean = keras.Model.from_config(model.get_config())
    copy_weights(model, clean)
    return clean


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    callbacks: Sequence["keras.callbacks.Callback"] = (),
    verbose: Optional[int] = None,
    worker_dir: Optional[str] = None,
) -> RunDir:
    """Train a classifier and write its run folder; returns the :class:`RunDir`.

    ``resume=True`` continues ``cfg.out`` from its last checkpoint with the run's *saved*
    config (other fields of ``cfg`` are ignored): weights, optimizer state, epoch, history,
    early-stopping counters and the data order are restored, or it refuses with a reason.
    ``force=True`` over an existing run builds the new run in ``OUT.new`` and swaps it in only
    when it is complete (see :func:`edgecls.core.rundir.swap_in`). The run folder is locked
    for the whole run: a second writer gets an error. ``callbacks`` are extra Keras callbacks.
    Only the chief writes the run under a multi-worker cluster; every other worker keeps its
    checkpoints and cache in its own worker folder under ``worker_dir`` (default and naming:
    :mod:`edgecls.train.cluster`) and returns the run's path, which it never opens.
    """
    with runfolder.opened(cfg, resume=resume, force=force, worker_dir=worker_dir) as start:
        return _train(start.cfg, start.run, start.state, folder=start.folder, worker=start.worker,
                      callbacks=callbacks, verbose=verbose)


def _train(cfg: TrainConfig, run: Optional[RunDir], state: dict[str, Any], *, folder: Optional[Path] = None,
           worker: Optional[cluster.Task] = None, callbacks: Sequence["keras.callbacks.Callback"] = (),
           verbose: Optional[int] = None) -> RunDir:
    from edgecls import data
    from edgecls.train import feature_cache
    from edgecls.train.distribute import make_strategy, precision
    from edgecls.train.profile import Timings

    timings = Timings(resumed=run is not None)
    resume = run is not None
    check_train_config(cfg)
    # Before any other TF op: multi-worker collectives must be configured at start-up.
    strategy = make_strategy(cfg.strategy)
    with timings.stage("scan"):
        if run is not None:
            root, split = data.load_split(run)
            labels = run.read_labels()
        else:
            scan, split = runfolder.scan_and_split(cfg)
            root, labels = Path(scan.root), list(scan.classes)
    if not resume:
        reason = feature_cache.fallback_reason(cfg, strategy)
        if reason:
            print(f"Head phase on the full path (no feature cache): {reason}", flush=True)
        state["head_cache"] = "features" if cfg.head_cache == "features" and reason is None else "none"
    head_on_features = state.get("head_cache") == "features"  # a run from before the cache: "none"
    n_classes = len(labels)
    verbose = _verbose() if verbose is None else verbose

    keras.utils.set_random_seed(cfg.seed)
    with precision(cfg.mixed_precision) as policy:
        with timings.stage("build_model"), strategy.scope():
            # Built before the run's files exist: a weights file that does not fit leaves nothing behind.
            classifier = build_classifier(cfg.backbone, num_classes=n_classes, size=cfg.size, alpha=cfg.alpha,
                                          minimalistic=cfg.minimalistic, weights=cfg.weights, dropout=cfg.dropout)
        # Built when a phase first trains on the images: on cached features (the default) it is
        # never needed, and wrapping the classifier re-traces every backbone layer (1-3 s).
        trainer = functools.cache(lambda: make_trainer(classifier, augment=cfg.augment, seed=cfg.seed))
        if run is None:
            run = runfolder.create_run(cfg, folder, scan, split)
        ckpt = run.checkpoints  # a non-chief worker's run is its own worker folder
        ckpt.mkdir(parents=True, exist_ok=True)
        task = cluster.task_for(cfg.strategy)
        if task is not None:
            state = agree(strategy, ckpt, state, resume=resume, task_name=task.name, same=fingerprint(cfg, split))
            callbacks = [KeepPrevious(ckpt), *callbacks]
        ds = _datasets(cfg, root, split, n_classes, run.path / "cache", features=head_on_features)
        weights = None
        if balance_mode(cfg) == "weights":
            weights = data.class_weights([lbl for _, lbl in split["train"]], n_classes)
        state["class_weights"] = {labels[i]: w for i, w in weights.items()} if weights else None
        state["balance"] = data.balance_record(balance_mode(cfg), weights, split["train"])
        if resume:
            restore(classifier, ckpt, LAST_WEIGHTS)
            # The shuffle order of epoch k comes from the k-th iterator over the training set:
            # replay the iterators the interrupted run made (BatchNorm calibration + each epoch
            # that ran on images; head epochs on cached features draw their own order).
            on_images = [r for r in state["rows"] if not (head_on_features and r["phase"] == PHASE_HEAD)]
            for _ in range((0 if is_pretrained(cfg.weights) else 1) + len(on_images)):
                iter(ds["train"])
        elif not is_pretrained(cfg.weights):
            images, _ = next(iter(ds["train"]))
            calibrate_batchnorm(get_backbone(classifier), images)
        cache, cut = _run_phases(cfg, strategy, classifier, trainer, ds, weights, state, ckpt, run, verbose,
                                 callbacks, resume=resume, timings=timings)
        final = float32_copy(classifier, cfg, n_classes) if worker is None else None
        if task is not None and final is classifier:
            final = local_copy(classifier)
        # A float32 run's model *is* its cached features + the layers above them: evaluate on those.
        features = None
        if cache is not None and final is classifier and (cut is not None or cfg.fine_tune_epochs == 0):
            features = (cache, cut)

    if worker is not None:
        print(f"{worker.name}: done; waiting for the chief to write the run {cfg.out}", flush=True)
        barrier(strategy)  # kept until then: should the chief fail writing the run, both can still resume
        runfolder.drop_worker_folder(run.path)
        return RunDir(Path(cfg.out))
    _finish(run, cfg, final, ds, state, labels, policy, strategy.num_replicas_in_sync, timings=timings,
            features=features)
    if task is None:
        return runfolder.put_in_place(run, state)
    (run.checkpoints / PREVIOUS_WEIGHTS).unlink(missing_ok=True)
    run = runfolder.put_in_place(run, state)
    barrier(strategy)
    return run


def _run_phases(cfg: TrainConfig, strategy, classifier, trainer, ds: dict, weights, state: dict, ckpt: Path,
                run: RunDir, verbose: int, callbacks: Sequence, *, resume: bool = False, timings=None):
    """Head then fine-tune, skipping what a resumed run already finished.

    ``trainer()`` gives the model that trains on the images (augmentation + classifier), built on first use.
    Returns the head phase's feature cache when this process trained on one (else None)."""
    from edgecls.train.profile import Timings

    timings = timings or Timings()
    phases = [(PHASE_HEAD, cfg.epochs, cfg.learning_rate)]
    if cfg.fine_tune_epochs > 0:
        phases.append((PHASE_FINE_TUNE, cfg.fine_tune_epochs, cfg.fine_tune_learning_rate))
    order = [p[0] for p in phases]
    current = order.index(state["phase"])
    cut = _fine_tune_cut(cfg, classifier, state, resume)
    cache = None
    for i, (phase, epochs, lr) in enumerate(phases):
        if i < current:
            continue  # finished before the interruption
        start = state["phase_epochs_done"] if i == current else 0
        on_features = state.get("head_cache") == "features" and start < epochs and (
            phase == PHASE_HEAD or cut is not None)
        model, train_data, val_data, steps = None, ds["train"], ds["val"], None
        if on_features:
            if cache is None:  # built in the head phase, or reloaded by a run resumed in the fine-tune phase
                with timings.stage("feature_cache"):
                    cache = _feature_cache(cfg, classifier, ds, run, cut)
            with strategy.scope():
                set_phase(classifier, phase, cfg.fine_tune_fraction)  # frozen before the model is traced
                model = _head_model(classifier, cache) if phase == PHASE_HEAD else \
                    _tail_model(classifier, cut, cache)
            train_data, steps, val_data = _feature_datasets(cfg, cache, ds, start, epochs, at_cut=phase != PHASE_HEAD)
        with strategy.scope():
            set_phase(classifier, phase, cfg.fine_tune_fraction)
            if model is None:  # this phase trains on the images
                model = trainer()
            compile_for(model, lr, cfg.label_smoothing)
            mid_phase = resume and i == current and start > 0
            if mid_phase:
                # Adam's moments and step count: without them the resumed epochs take different steps.
                if not has_optimizer_state(ckpt / LAST_WEIGHTS):
                    raise EdgeclsError(f"cannot resume exactly: {ckpt / LAST_WEIGHTS} has no optimizer state; "
                                       "start again with --force")
                load_optimizer(model.optimizer, model.trainable_variables, ckpt / LAST_WEIGHTS)
        if start < epochs and verbose:
            what = "new head, backbone frozen" if phase == PHASE_HEAD else (
                f"top {cfg.fine_tune_fraction:.0%} of the backbone unfrozen, BatchNorm frozen")
            if on_features:
                what += ", on cached backbone features" if phase == PHASE_HEAD else (
                    f", on cached features at {cut.layer}")
            print(f"Phase {i + 1}/{len(phases)}: {phase} ({what}), epochs {start + 1}-{epochs} at lr {lr:g}",
                  flush=True)
        if start < epochs:
            early = ResumableEarlyStopping(
                monitor="val_loss", patience=cfg.early_stopping_patience, restore_best_weights=True,
                resume_from=state.get("early_stopping") if mid_phase else None,
            )
            rows_before = len(state["rows"])
            with timings.stage(phase):
                t0 = time.perf_counter()
                model.fit(
                    train_data, validation_data=val_data, epochs=epochs, initial_epoch=start, steps_per_epoch=steps,
                    class_weight=weights, verbose=verbose,
                    callbacks=[
                        early,
                        Checkpointer(classifier, ckpt, state, phase, early_stopping=early),
                        *_tensorboard(run.logs / phase),
                        *callbacks,
                    ],
                )
            if on_features and phase == PHASE_HEAD:
                _report_feature_cache(cfg, cache, state, time.perf_counter() - t0, len(state["rows"]) - rows_before,
                                      steps, verbose)
        # The next phase starts from the best weights so far, and a crash right here resumes there.
        restore(classifier, ckpt, BEST_WEIGHTS)
        state.pop("early_stopping", None)
        if i + 1 < len(order):
            state.update(phase=order[i + 1], phase_epochs_done=0)
        else:
            state.update(phase=phase, phase_epochs_done=epochs)
        save_checkpoint(ckpt / LAST_WEIGHTS, classifier, state=state)
        atomic_write_json(ckpt / STATE_JSON, state)
    return cache, cut


# -- the head phase on cached backbone features (edgecls.train.feature_cache) -------------------


def _fine_tune_cut(cfg: TrainConfig, classifier, state: dict, resume: bool):
    """Where the fine-tune phase trains on cached features (:mod:`edgecls.train.cut`), or None (on the images).

    Decided when the run starts and kept in its state: a run resumed from before this existed
    (no ``fine_tune_cut``) fine-tunes on the images, as it would have."""
    from edgecls.train.cut import find_cut

    if state.get("head_cache") != "features" or cfg.fine_tune_epochs <= 0:
        return None
    cut = find_cut(classifier, cfg.fine_tune_fraction)
    if not resume and "fine_tune_cut" not in state:
        state["fine_tune_cut"] = cut.layer if cut is not None else None
    if not state.get("fine_tune_cut"):
        return None
    if cut is None or cut.layer != state["fine_tune_cut"]:
        raise EdgeclsError(f"cannot resume: this run fine-tunes from the cut at {state['fine_tune_cut']}, this "
                           "edgecls version finds another; start again with --force")
    return cut


def _feature_cache(cfg: TrainConfig, classifier, ds: dict, run: RunDir, cut=None):
    """The run's cached features (a resumed run reloads its own, so it trains on the same views), or a new cache."""
    from edgecls.train import feature_cache as fc

    path = run.path / "cache" / fc.FEATURES_FILE
    cache = fc.load(path, views=fc.views_for(cfg), n_train=ds["sizes"]["train"], n_val=ds["sizes"]["val"],
                    n_test=ds["sizes"]["test"], cut_layer=None if cut is None else cut.layer)
    if cache is None:
        augment = make_augmentation(cfg.seed + fc.VIEW_SEED_OFFSET) if cfg.augment else None
        cache = fc.build(classifier, ds["train_features"], ds["val"], views=fc.views_for(cfg), augment=augment,
                         test_ds=ds["test"], cut=cut)
        fc.save(cache, path)
    return cache


def _head_model(classifier, cache):
    from edgecls.train import feature_cache as fc

    return fc.head_model(classifier, cache.train.dtype.name)


def _tail_model(classifier, cut, cache):
    from edgecls.train import feature_cache as fc

    return fc.tail_model(classifier, cut, cache.cut_train.dtype.name)


def _feature_datasets(cfg: TrainConfig, cache, ds: dict, start: int, epochs: int, at_cut: bool = False):
    from edgecls.train import feature_cache as fc

    # The fine-tune phase draws its own epoch orders (another seed), not a replay of the head's.
    return fc.datasets(cache, n_classes=ds["n_classes"], batch_size=cfg.batch_size,
                       seed=cfg.seed + (FINE_TUNE_SEED_OFFSET if at_cut else 0), start_epoch=start, epochs=epochs,
                       oversample=balance_mode(cfg) == "oversample", at_cut=at_cut)


def _report_feature_cache(cfg: TrainConfig, cache, state: dict, head_s: float, epochs_run: int, steps: int,
                          verbose: int) -> None:
    from edgecls.train import feature_cache as fc

    draws = len(fc.epoch_order(cache.train_labels, cache.views, 0, cfg.seed,
                               oversample=balance_mode(cfg) == "oversample"))
    record = fc.describe(cache, head_s=head_s, epochs_run=epochs_run, n_epoch_draws=draws, dtype=cache.train.dtype.name)
    state["head_cache_record"] = record
    if verbose:
        print(fc.summary_line(record), flush=True)


def _finish(run: RunDir, cfg: TrainConfig, model: "keras.Model", ds: dict, state: dict, labels: list[str],
            policy: str, replicas: int, timings=None, features=None) -> None:
    """Write model.keras, metrics, history, plots; drop the cache and the checkpoint weights.

    ``features``: the head phase's feature cache, when ``model`` is exactly its backbone + head
    (a float32 run without fine-tuning): val and test are then scored from their cached clean
    features instead of running the backbone over the images once more.
    """
    from edgecls.train.profile import Timings

    timings = timings or Timings()
    # Plots off the hot path: one worker thread renders them (matplotlib, mostly Python) while
    # this thread saves and evaluates (TensorFlow, which releases the GIL); only that thread
    # touches pyplot.
    run.plots.mkdir(parents=True, exist_ok=True)
    plotter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgecls-plots")
    curves = plotter.submit(_timed, plot_learning_curves, list(state["rows"]), run.plots / "learning_curves.png")
    with timings.stage("save_model"):
        save_model(model, run.model_path)
    with timings.stage("evaluate"):
        from_features = features is not None and (features[0].test is not None) == (ds["test"] is not None)
        if from_features:
            val = _evaluate_features(model, *features, "val", labels)
            test = _evaluate_features(model, *features, "test", labels) if ds["test"] is not None else None
        else:
            val = evaluate(model, ds["val"], len(labels), labels)
            test = evaluate(model, ds["test"], len(labels), labels) if ds["test"] is not None else None
    shown = test if test is not None else val
    metrics = {
        "test_accuracy": test["accuracy"] if test else None,
        "test_loss": test["loss"] if test else None,
        "n_test": test["n"] if test else 0,
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "n_val": val["n"],
        "evaluated_on": "test" if test else "val",
        "evaluated_from": "cached backbone features" if from_features else "images",
        "per_class": shown["per_class"],
        "confusion_matrix": shown["confusion_matrix"],
        "best_epoch": state.get("best_epoch"),
        "class_weights": state.get("class_weights"),
        "balance": state.get("balance"),
        "precision_policy": policy,
        "replicas": replicas,
        "head_cache": state.get("head_cache_record"),
    }
    run.write_json(run.history_json, {"epochs": state["rows"], "head_cache": state.get("head_cache_record")})
    matrix = plotter.submit(_timed, plot_confusion_matrix, shown["confusion_matrix"], labels,
                            run.plots / "confusion_matrix.png")
    with timings.stage("plots_wait"):  # what the plots still cost after saving and evaluating
        plotter.shutdown(wait=True)
        timings.overlapped["plots"] = curves.result() + matrix.result()
    metrics["timings"] = timings.record()
    run.write_json(run.metrics_json, metrics)
    # The decoded-image cache can be as big as the dataset: it only served this run.
    shutil.rmtree(run.path / "cache", ignore_errors=True)
    for name in (LAST_WEIGHTS, BEST_WEIGHTS):
        (run.checkpoints / name).unlink(missing_ok=True)
    for frozen in run.checkpoints.glob(FROZEN_GLOB):
        frozen.unlink()
    state.update(phase=PHASE_DONE)
    atomic_write_json(run.checkpoints / "state.json", state)


def _evaluate_features(model: "keras.Model", cache, cut, split: str, labels: list[str]) -> dict[str, Any]:
    from edgecls.train import feature_cache as fc

    y = np.asarray(getattr(cache, f"{split}_labels"))
    return classification_metrics(y, fc.predict_clean(model, cache, split, cut), list(labels))


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def _recall_line(m: dict) -> list[str]:
    """Per-class recall: where imbalance shows (a rare class the model never predicts)."""
    per = m.get("per_class") or {}
    if not per:
        return []
    bal = (m.get("balance") or {}).get("used")
    shown = ", ".join(f"{name} {v['recall']:.2f}" for name, v in per.items())
    return [f"recall:  {shown}" + (f" (balance: {bal})" if bal else "")]


def summary(run: RunDir) -> str:
    """A few lines for the end of ``edgecls train``."""
    from shlex import quote as q

    m = read_json(run.metrics_json)
    where = m["evaluated_on"]
    acc = m["test_accuracy"] if where == "test" else m["val_accuracy"]
    n = m["n_test"] if where == "test" else m["n_val"]
    lines = [
        f"{where} accuracy: {acc:.3f} on {n} images (best epoch {m.get('best_epoch')})",
        *_recall_line(m),
        f"model:   {run.model_path}",
        f"metrics: {run.metrics_json}  plots: {run.plots}/  TensorBoard: tensorboard --logdir {q(str(run.logs))}",
        f"next:    edgecls export {q(str(run.path))} --int8",
    ]
    if m.get("timings"):
        from edgecls.train.profile import summary_line

        lines.insert(len(lines) - 1, summary_line(m["timings"]))
    return "\n".join(lines)
