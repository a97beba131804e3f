"""Training: an image folder -> a run folder with the best float model, metrics and plots.

Two phases (:mod:`edgecls.train.session`): the new head on a frozen backbone (``epochs`` at
``learning_rate``), then the top ``fine_tune_fraction`` of the backbone unfrozen
(``fine_tune_epochs`` at the much lower ``fine_tune_learning_rate``). BatchNorm stays in inference
mode and frozen throughout (the backbone is called with ``training=False``), which keeps small
datasets from wrecking the pretrained statistics. Augmentation lives in a training-only wrapper
model, so ``model.keras`` and everything exported from it take clean raw pixels.

Every epoch writes a checkpoint (``RUN/checkpoints``: last and best weights + the state) so
``--resume`` continues an interrupted run; :mod:`edgecls.train.runfolder` creates, locks and
replaces the run folder around the training.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from edgecls.core.config import TrainConfig
from edgecls.core.io import read_json
from edgecls.core.keras import keras
from edgecls.core.rundir import RunDir
from edgecls.train import cluster, runfolder
from edgecls.train.backbones import BackboneChoice, build_classifier, calibrate_batchnorm, get_backbone, is_pretrained
from edgecls.train.checkpoint import LAST_WEIGHTS, restore
from edgecls.train.checks import check_train_config
from edgecls.train.datasets import Images, build_datasets
from edgecls.train.finish import Finished, finish_run
from edgecls.train.models import float32_copy, local_copy, make_trainer
from edgecls.train.profile import Timings
from edgecls.train.session import Session
from edgecls.train.state import PHASE_HEAD

DROPOUT_SEED_OFFSET = 10  # augmentation layers draw from seed .. seed + 4


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
        verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose  # bars only for humans
        return _train(start, callbacks=callbacks, verbose=verbose)


def _train(start: runfolder.Start, *, callbacks: Sequence[Any], verbose: int) -> RunDir:
    from edgecls.train.distribute import make_strategy, precision

    cfg, timings = start.cfg, Timings(resumed=start.run is not None)
    check_train_config(cfg)
    # Before any other TF op: multi-worker collectives must be configured at start-up.
    strategy = make_strategy(cfg.strategy)
    with timings.stage("scan"):
        images = _images(start)
    if start.run is None:
        start.state.head_cache = _head_cache(cfg, strategy)
    keras.utils.set_random_seed(cfg.seed)
    with precision(cfg.mixed_precision) as policy:
        session = _session(start, strategy, images, timings, verbose)
        session.callbacks = [*session.callbacks, *callbacks]
        _first_batches(session, start.run is not None)
        session.run_phases()
        done = _final_model(session, start.worker is None, images.labels, policy)
    return _close(session, start, done)


def _images(start: runfolder.Start) -> Images:
    """The run's own images when resuming, else a new scan and split."""
    from edgecls import data
    from edgecls.data.negatives import model_labels

    if start.run is not None:
        root, split = data.load_split(start.run)
        return Images(root, split, start.run.read_labels())
    scan, split = runfolder.scan_and_split(start.cfg)
    return Images(Path(scan.root), split, model_labels(list(scan.classes), split), scan)


def _head_cache(cfg: TrainConfig, strategy: Any) -> str:
    """How the head phase meets the backbone: on cached features unless asked otherwise or not possible."""
    from edgecls.train import feature_cache

    reason = feature_cache.fallback_reason(cfg, strategy)
    if reason:
        print(f"Head phase on the full path (no feature cache): {reason}", flush=True)
    return "features" if cfg.head_cache == "features" and reason is None else "none"


def _session(start: runfolder.Start, strategy: Any, images: Images, timings: Timings, verbose: int) -> Session:
    """The model built (before the run's files exist: a weights file that does not fit leaves nothing behind),
    the run created or reopened, the cluster agreed, the datasets and class weights made."""
    from edgecls import data
    from edgecls.data.negatives import items_with_negatives
    from edgecls.train.agree import KeepPrevious, agree

    cfg, split, labels = start.cfg, images.split, images.labels
    with timings.stage("build_model"), strategy.scope():
        classifier = build_classifier(BackboneChoice.of(cfg), len(labels), dropout=cfg.dropout,
                                      seed=cfg.seed + DROPOUT_SEED_OFFSET)
    run = start.run if start.run is not None else runfolder.create_run(cfg, start.folder, images.scan, split)
    run.checkpoints.mkdir(parents=True, exist_ok=True)  # a non-chief worker's run is its own worker folder
    state, callbacks = start.state, []
    task = cluster.task_for(cfg.strategy)
    if task is not None:
        state = agree(strategy, start, run.checkpoints, split)
        callbacks.append(KeepPrevious(run.checkpoints))
    datasets = build_datasets(cfg, images, run.path / "cache", features=state.head_cache == "features")
    train_items = items_with_negatives(split, "train", labels)
    weights = data.class_weights([lbl for _, lbl in train_items], len(labels)) if cfg.balance == "weights" else None
    state.class_weights = {labels[i]: w for i, w in weights.items()} if weights else None
    state.balance = data.balance_record(cfg.balance, weights, train_items)
    # Built when a phase first trains on the images: on cached features (the default) it is
    # never needed, and wrapping the classifier re-traces every backbone layer (1-3 s).
    trainer = functools.cache(lambda: make_trainer(classifier, augment=cfg.augment, seed=cfg.seed))
    return Session(cfg, run, state, strategy, classifier, datasets, trainer, resume=start.run is not None,
                   verbose=verbose, class_weights=weights, callbacks=callbacks, timings=timings)


def _first_batches(session: Session, resume: bool) -> None:
    """A new run from random weights calibrates BatchNorm on a first batch; a resumed one restores its weights
    and replays the iterators the interrupted run made, so epoch k shuffles as it did (BatchNorm calibration
    and each epoch that ran on images; head epochs on cached features draw their own order)."""
    cfg, train = session.cfg, session.data.train
    if resume:
        restore(session.classifier, session.ckpt, LAST_WEIGHTS)
        on_features = session.state.head_cache == "features"
        on_images = [r for r in session.state.rows if not (on_features and r["phase"] == PHASE_HEAD)]
        for _ in range((0 if is_pretrained(cfg.weights) else 1) + len(on_images)):
            iter(train)
    elif not is_pretrained(cfg.weights):
        images, _ = next(iter(train))
        calibrate_batchnorm(get_backbone(session.classifier), images)


def _final_model(session: Session, chief_or_single: bool, labels: list[str], policy: str) -> Optional[Finished]:
    """The float32 model the run keeps (None on a non-chief worker), and whether its metrics can come from the
    feature cache: a float32 run's model *is* its cached features + the layers above them."""
    if not chief_or_single:
        return None
    classifier, replicas = session.classifier, session.strategy.num_replicas_in_sync
    final = float32_copy(classifier)
    if cluster.task_for(session.cfg.strategy) is not None and final is classifier:
        final = local_copy(classifier)
    features = None
    if session.cache is not None and final is classifier and (session.cut is not None or session.cfg.fine_tune_epochs == 0):
        features = (session.cache, session.cut)
    unknown_class = len(labels) - 1 if session.cfg.negatives else None  # the negatives' class, last
    return Finished(final, labels, policy, replicas, session.cfg, unknown_class=unknown_class, features=features)


def _close(session: Session, start: runfolder.Start, done: Optional[Finished]) -> RunDir:
    """Write the run (the chief, or the only process), put a replacement in place, and let the cluster part."""
    from edgecls.train.agree import PREVIOUS_WEIGHTS, barrier

    cfg, run, state = session.cfg, session.run, session.state
    if start.worker is not None:
        print(f"{start.worker.name}: done; waiting for the chief to write the run {cfg.out}", flush=True)
        barrier(session.strategy)  # kept until then: should the chief fail writing the run, both can still resume
        runfolder.drop_worker_folder(run.path)
        return RunDir(Path(cfg.out))
    finish_run(run, session.data, state, done, session.timings)
    if cluster.task_for(cfg.strategy) is None:
        return runfolder.put_in_place(run, state)
    (run.checkpoints / PREVIOUS_WEIGHTS).unlink(missing_ok=True)
    run = runfolder.put_in_place(run, state)
    barrier(session.strategy)
    return run


def _recall_line(m: dict) -> list[str]:
    """Per-class recall: where imbalance shows (a rare class the model never predicts)."""
    per = m.get("per_class") or {}
    if not per:
        return []
    bal = (m.get("balance") or {}).get("used")
    shown = ", ".join(f"{name} {v['recall']:.2f}" for name, v in per.items())
    return [f"recall:  {shown}" + (f" (balance: {bal})" if bal else "")]


def _confidence_lines(m: dict) -> list[str]:
    """What the scores mean: the temperature and calibration error, and the unknown rule."""
    out = []
    cal = m.get("calibration")
    if cal:
        out.append(f"calibrated: temperature {cal['temperature']:.3g} (fitted on {cal['fitted_on']}); expected "
                   f"calibration error {cal['ece_before']:.3f} -> {cal['ece_after']:.3f} on the {cal['evaluated_on']} "
                   "split")
    u = m.get("unknown")
    if u and u["threshold"] > 0:
        kept = f", {u['held_out_accepted']:.0%} of held-out images answered" if u.get("held_out_accepted") is not None else ""
        out.append(f"unknown:  a top-1 score under {u['threshold']:.3f} answers \"unknown\" ({u['chosen']}{kept})")
    return out


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
        *_confidence_lines(m),
        f"model:   {run.model_path}",
        f"metrics: {run.metrics_json}  plots: {run.plots}/  TensorBoard: tensorboard --logdir {q(str(run.logs))}",
        f"next:    edgecls export {q(str(run.path))} --int8",
    ]
    if m.get("timings"):
        from edgecls.train.profile import summary_line

        lines.insert(len(lines) - 1, summary_line(m["timings"]))
    gain = _next_gain(run, m)
    if gain:
        lines.insert(len(lines) - 1, f"better:  {gain}")
    return "\n".join(lines)


def _next_gain(run: RunDir, m: dict) -> Optional[str]:
    """The run's own answer to "what would raise accuracy" (:func:`edgecls.train.advice.next_gain`)."""
    from collections import Counter

    from edgecls.train.advice import next_gain

    if not run.history_json.is_file():
        return None
    cfg = run.read_config().get("train", {})
    split = read_json(run.split_json) if run.split_json.is_file() else {}
    counts = Counter(int(label) for _, label in split.get("train", []))
    classes = split.get("classes") or []
    fewest = None
    if counts and classes:
        index, n = min(((i, counts.get(i, 0)) for i in range(len(classes))), key=lambda t: t[1])
        fewest = (classes[index], n)
    return next_gain(read_json(run.history_json).get("epochs", []), epochs=int(cfg.get("epochs", 0)),
                     fine_tune_epochs=int(cfg.get("fine_tune_epochs", 0)),
                     stage_seconds=(m.get("timings") or {}).get("stages_s", {}), fewest=fewest)
