"""The tf.data pipelines a training run reads: train, val and test batches with their target distributions.

Targets are one-hot because CategoricalCrossentropy is the loss that supports label smoothing; a
negative (:mod:`edgecls.data.negatives`) is one more class, ``unknown``, the last of ``n_classes``.
The pipelines start from lists of paths, not files per worker, so a cluster shards them by element.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls.core.config import TrainConfig
from edgecls.core.keras import tf

SPLITS = ("train", "val", "test")


def targets(y: Any, n_classes: int) -> Any:
    """Label indices -> one-hot target distributions."""
    return tf.one_hot(y, n_classes)


def labels_of(y: np.ndarray) -> np.ndarray:
    """One-hot targets (or indices) -> label indices."""
    y = np.asarray(y)
    return (y.argmax(axis=-1) if y.ndim == 2 else y).astype(np.int64)


@dataclass(frozen=True)
class Images:
    """A run's images: the folder, its train/val/test split (negatives included) and the model's labels.

    ``scan`` is the folder's fresh scan for a new run, None for a resumed one (it reads its saved split).
    """

    root: Path
    split: dict
    labels: list[str]
    scan: Any = None


@dataclass
class Datasets:
    """A run's pipelines (None where its split is empty) and what the feature cache reads."""

    train: Any
    val: Any
    test: Optional[Any]
    sizes: dict[str, int]
    n_classes: int
    train_features: Optional[Any] = None
    """The training images in a fixed order, unaugmented and never oversampled: what the head-phase feature
    cache reads (it keeps every image's label beside its features and resamples itself)."""


def build_datasets(cfg: TrainConfig, images: Images, cache_root: Path, *, features: bool = False) -> Datasets:
    """The run's pipelines over ``images.split`` (its negatives included, as the unknown class of the labels);
    decoded images are cached under ``cache_root`` as ``cfg.cache`` says."""
    from edgecls import data
    from edgecls.data.negatives import items_with_negatives

    root, split, labels = images.root, images.split, images.labels
    n_classes = len(labels)

    def items_of(name: str) -> list:
        return items_with_negatives(split, name, labels)

    def pipeline(items: list, name: str, training: bool, oversample: bool = False) -> Any:
        cache_dir = cache_root / name
        cache_dir.mkdir(parents=True, exist_ok=True)
        return data.build_dataset(root, items, image_size=cfg.size, batch_size=cfg.batch_size, training=training,
                                  seed=cfg.seed, cache=cfg.cache, cache_budget_mb=cfg.cache_budget_mb,
                                  cache_dir=cache_dir, oversample=oversample)

    out: dict[str, Any] = {}
    for name in SPLITS:
        items = items_of(name)
        if not items:
            out[name] = None
            continue
        ds = pipeline(items, name, training=name == "train", oversample=name == "train" and cfg.balance == "oversample")
        ds = ds.map(lambda x, y: (x, targets(y, n_classes)), num_parallel_calls=tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        out[name] = ds.with_options(options)
    return Datasets(train=out["train"], val=out["val"], test=out["test"],
                    sizes={name: len(items_of(name)) for name in SPLITS}, n_classes=n_classes,
                    train_features=pipeline(items_of("train"), "features", training=False) if features else None)
