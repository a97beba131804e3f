"""The end of a run: the float model, its metrics on the held-out splits, the history and the plots.

Plots render on a worker thread of their own (matplotlib is mostly Python) while this thread saves
and evaluates (TensorFlow releases the GIL); only that thread touches pyplot. The decoded-image
cache and the checkpoint weights served this run only and are removed once everything is written.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from edgecls.core.rundir import RunDir
from edgecls.train.checkpoint import BEST_WEIGHTS, FROZEN_GLOB, LAST_WEIGHTS
from edgecls.train.datasets import Datasets
from edgecls.train.model_io import save_model
from edgecls.train.profile import Timings
from edgecls.train.report import classification_metrics, plot_confusion_matrix, plot_learning_curves
from edgecls.train.state import PHASE_DONE, TrainState


def evaluate(model: Any, ds: Any, n_classes: int, labels: Optional[Sequence[str]] = None) -> dict[str, Any]:
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


@dataclass
class Finished:
    """What the end of a run needs besides the run: the final float model and how it was trained."""

    model: Any
    labels: list[str]
    policy: str
    replicas: int
    features: Optional[tuple[Any, Any]] = None
    """(feature cache, cut) when ``model`` is exactly the cache's backbone + the layers trained on it: val and
    test are then scored from their cached clean features instead of one more backbone pass."""


def finish_run(run: RunDir, data: Datasets, state: TrainState, done: Finished, timings: Timings) -> None:
    """Write model.keras, metrics.json, history.json and the plots; drop the cache and the checkpoint weights."""
    run.plots.mkdir(parents=True, exist_ok=True)
    plotter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgecls-plots")
    curves = plotter.submit(_timed, plot_learning_curves, list(state.rows), run.plots / "learning_curves.png")
    with timings.stage("save_model"):
        save_model(done.model, run.model_path)
    with timings.stage("evaluate"):
        val, test, from_features = _evaluate_splits(data, done)
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
        "best_epoch": state.best_epoch,
        "class_weights": state.class_weights,
        "balance": state.balance,
        "precision_policy": done.policy,
        "replicas": done.replicas,
        "head_cache": state.head_cache_record,
    }
    run.write_json(run.history_json, {"epochs": state.rows, "head_cache": state.head_cache_record})
    matrix = plotter.submit(_timed, plot_confusion_matrix, shown["confusion_matrix"], done.labels,
                            run.plots / "confusion_matrix.png")
    with timings.stage("plots_wait"):  # what the plots still cost after saving and evaluating
        plotter.shutdown(wait=True)
        timings.overlapped["plots"] = curves.result() + matrix.result()
    metrics["timings"] = timings.record()
    run.write_json(run.metrics_json, metrics)
    shutil.rmtree(run.path / "cache", ignore_errors=True)  # the decoded-image cache can be as big as the dataset
    for name in (LAST_WEIGHTS, BEST_WEIGHTS):
        (run.checkpoints / name).unlink(missing_ok=True)
    for frozen in run.checkpoints.glob(FROZEN_GLOB):
        frozen.unlink()
    state.phase = PHASE_DONE
    state.save(run.checkpoints)


def _evaluate_splits(data: Datasets, done: Finished) -> tuple[dict, Optional[dict], bool]:
    """(val figures, test figures or None, whether they came from cached features)."""
    from edgecls.train import feature_cache as fc

    features = done.features
    if features is not None and (features[0].test is not None) == (data.test is not None):
        cache, cut = features

        def scored(split: str) -> dict:
            y = np.asarray(getattr(cache, f"{split}_labels"))
            return classification_metrics(y, fc.predict_clean(done.model, cache, split, cut), done.labels)

        return scored("val"), (scored("test") if data.test is not None else None), True
    val = evaluate(done.model, data.val, len(done.labels), done.labels)
    test = evaluate(done.model, data.test, len(done.labels), done.labels) if data.test is not None else None
    return val, test, False


def _timed(fn: Any, *args: Any) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t
