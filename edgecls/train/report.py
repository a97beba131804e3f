"""Metrics from predictions (pure numpy) and the run's plots (matplotlib, Agg backend).

``classification_metrics`` needs no model: train, prune and parity all pass it the true and
predicted labels, so every stage reports accuracy and per-class figures the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecls.core.io import atomic_write_bytes


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """``cm[i, j]`` = images of true class i predicted as j."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_metrics(
    y_true: Sequence[int],
    probs: np.ndarray,
    labels: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, mean cross-entropy, per-class precision/recall/F1/support and the confusion matrix.

    ``probs`` is ``[N, C]`` probabilities. ``loss`` is plain cross-entropy (no label smoothing),
    so it is comparable between runs trained with different smoothing.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    n_classes = len(labels)
    if p.ndim != 2 or p.shape[1] != n_classes or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs shape {p.shape} does not match {y.shape[0]} labels x {n_classes} classes")
    n = int(y.shape[0])
    pred = p.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(y, pred, n_classes)
    per_class: dict[str, dict[str, float]] = {}
    for i, name in enumerate(labels):
        tp = float(cm[i, i])
        predicted = float(cm[:, i].sum())
        support = int(cm[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    eps = 1e-7  # clip like Keras so a confident mistake gives a large, finite loss
    loss = float(-np.log(np.clip(p[np.arange(n), y], eps, 1.0)).mean()) if n else float("nan")
    return {
        "accuracy": float((pred == y).mean()) if n else float("nan"),
        "loss": loss,
        "n": n,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def _save_figure(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_learning_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch (train and val), with the fine-tune start marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and Pis; never open a window
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--o")):
            ys = [r.get(key) for r in rows]
            if any(v is not None for v in ys):
                ax.plot(epochs, [np.nan if v is None else v for v in ys], style, label=key, markersize=3)
        ft = [r["epoch"] for r in rows if r.get("phase") == "fine_tune"]
        if ft:
            ax.axvline(ft[0] - 0.5, color="grey", linestyle=":", label="fine-tune starts")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    _save_figure(fig, path)
    plt.close(fig)


def plot_confusion_matrix(cm: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> None:
    """Counts per (true, predicted) class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(cm)
    side = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 30:  # numbers become unreadable beyond that
        thresh = m.max() / 2 if m.size else 0
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > thresh else "black")
    _save_figure(fig, path)
    plt.close(fig)
