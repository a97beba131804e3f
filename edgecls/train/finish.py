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

from edgecls.core.config import TrainConfig
from edgecls.core.rundir import RunDir
from edgecls.train.checkpoint import BEST_WEIGHTS, FROZEN_GLOB, LAST_WEIGHTS
from edgecls.train.datasets import Datasets, labels_of
from edgecls.train.model_io import save_model
from edgecls.train.profile import Timings
from edgecls.train.report import classification_metrics, plot_confusion_matrix, plot_learning_curves
from edgecls.train.state import PHASE_DONE, TrainState


def predict(model: Any, ds: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, C], true class indices [N]) of ``model`` on ``ds``'s ``(images, labels)`` batches
    (integer or one-hot labels)."""
    ys, ps = [], []
    for x, y in ds:
        ps.append(np.asarray(model(x, training=False), dtype=np.float32))
        ys.append(labels_of(np.asarray(y)))
    if not ys:
        return np.zeros((0, n_classes), np.float32), np.zeros(0, np.int64)
    return np.concatenate(ps), np.concatenate(ys).astype(np.int64)


def evaluate(model: Any, ds: Any, n_classes: int, labels: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Accuracy, loss, per-class figures and confusion matrix of ``model`` on ``ds`` (see :func:`predict`)."""
    names = list(labels) if labels is not None else [str(i) for i in range(n_classes)]
    p, y = predict(model, ds, n_classes)
    return classification_metrics(y, p, names)


@dataclass
class Finished:
    """What the end of a run needs besides the run: the final float model and how it was trained."""

    model: Any
    labels: list[str]
    policy: str
    replicas: int
    cfg: TrainConfig
    unknown_class: Optional[int] = None
    """The index of the unknown class the negatives trained (the last), or None for a run without negatives."""
    features: Optional[tuple[Any, Any]] = None
    """(feature cache, cut) when ``model`` is exactly the cache's backbone + the layers trained on it: val and
    test are then scored from their cached clean features instead of one more backbone pass."""


def finish_run(run: RunDir, data: Datasets, state: TrainState, done: Finished, timings: Timings) -> None:
    """Calibrate, choose the unknown rule, write model.keras, metrics.json, history.json and the plots; drop
    the cache and the checkpoint weights."""
    run.plots.mkdir(parents=True, exist_ok=True)
    plotter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgecls-plots")
    curves = plotter.submit(_timed, plot_learning_curves, list(state.rows), run.plots / "learning_curves.png")
    with timings.stage("evaluate"):
        val_all, held_all, from_features = _predict_splits(data, done)
        n_known = len(done.labels) - (1 if done.unknown_class is not None else 0)
        (val_xy, neg_val), (held_xy, neg_test) = _apart(val_all, n_known), _apart(held_all, n_known)
        model, judged = _calibrated(done, val_xy, held_xy, (neg_val, neg_test))
        val = classification_metrics(val_xy[1], judged["val"], done.labels)
        test = classification_metrics(held_xy[1], judged["test"], done.labels) if data.test is not None else None
    with timings.stage("save_model"):
        save_model(model, run.model_path)
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
        "calibration": judged["calibration"],
        "unknown": judged["unknown"],
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


def _predict_splits(data: Datasets, done: Finished) -> tuple[tuple, tuple, bool]:
    """((val probs, labels), (held-out probs, labels), whether they came from cached features). The held-out
    split is test, else val (a run without a test split is judged on val)."""
    from edgecls.train import feature_cache as fc

    features = done.features
    if features is not None and (features[0].test is not None) == (data.test is not None):
        cache, cut = features

        def scored(split: str) -> tuple[np.ndarray, np.ndarray]:
            y = np.asarray(getattr(cache, f"{split}_labels"), np.int64)
            return fc.predict_clean(done.model, cache, split, cut), y

        val = scored("val")
        return val, (scored("test") if data.test is not None else val), True
    n = len(done.labels)
    val = predict(done.model, data.val, n)
    return val, (predict(done.model, data.test, n) if data.test is not None else val), False


def _apart(scored: tuple[np.ndarray, np.ndarray], n_classes: int) -> tuple[tuple, np.ndarray]:
    """((class images' probabilities, labels), the negatives' probabilities) of one split."""
    p, y = scored
    known = y < n_classes
    return (p[known], y[known]), p[~known]


def _calibrated(done: Finished, val: tuple, held_out: tuple, negatives: tuple) -> tuple[Any, dict[str, Any]]:
    """The model to save (with the fitted temperature inside, unless --no-calibrate), the val and held-out
    probabilities it gives, its calibration record and its unknown rule (threshold chosen on val)."""
    from edgecls.core.unknown import UnknownRule, threshold_for_keep
    from edgecls.train.calibration import calibrate, reliability, scaled, with_temperature

    cfg, (p_val, y_val), (p_test, y_test) = done.cfg, val, held_out
    (neg_val, neg_test), model, record = negatives, done.model, None
    if cfg.calibrate and len(y_val):
        cal = calibrate(val, held_out, held_out_name="test" if p_test is not p_val else "val")
        model = with_temperature(done.model, cal.temperature)
        record = {**cal.as_dict(), "reliability_before": reliability(p_test, y_test),
                  "reliability_after": reliability(scaled(p_test, cal.temperature), y_test)}
        p_val, p_test = scaled(p_val, cal.temperature), scaled(p_test, cal.temperature)
        neg_val, neg_test = scaled(neg_val, cal.temperature), scaled(neg_test, cal.temperature)
    threshold = (cfg.unknown_threshold if cfg.unknown_threshold is not None
                 else threshold_for_keep(p_val, y_val, cfg.keep))
    rule = UnknownRule(threshold, class_index=done.unknown_class)
    accepted = ~rule.rejects_rows(p_test)
    right = p_test.argmax(axis=1) == y_test
    unknown = {"rule": "max_probability", "threshold": round(float(threshold), 6), "class_index": done.unknown_class,
               "chosen": "--unknown-threshold" if cfg.unknown_threshold is not None else f"keep {cfg.keep:g} on val",
               "keep": cfg.keep, "calibrated": record is not None,
               "held_out_accepted": round(float(accepted.mean()), 4) if len(accepted) else None,
               "held_out_correct_kept": round(float(accepted[right].mean()), 4) if right.any() else None,
               "held_out_accuracy_accepted": round(float(right[accepted].mean()), 4) if accepted.any() else None}
    for name, neg in (("val", neg_val), ("test", neg_test)):
        if len(neg):  # what the rule does with photos that are none of the classes
            unknown[f"negatives_{name}"] = {"n": int(len(neg)),
                                            "accepted": round(float((~rule.rejects_rows(neg)).mean()), 4)}
    return model, {"val": p_val, "test": p_test, "calibration": record, "unknown": unknown}


def _timed(fn: Any, *args: Any) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t
