"""The tf.data input pipeline: parallel decode + resize, cache, shuffle, batch, prefetch.

TensorFlow is imported inside the functions that need it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edgecls.core.config import CACHE_MODES
from edgecls.core.errors import EdgeclsError
from edgecls.data.scan import Item, decode_image_file, orientations

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

SHUFFLE_BUDGET_MB = 512  # cap of the shuffle buffer when the cache lives on disk


# -- tf.data ----------------------------------------------------------------------------------
def _decode_resize(path: "tf.Tensor", orientation: "tf.Tensor", size: int) -> "tf.Tensor":
    """The project's rules: EXIF upright, then plain squash, bilinear with antialias, rounded to uint8."""
    from edgecls.core.keras import tf

    img = tf.image.resize(decode_image_file(path, orientation), [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)


def _decoded_dataset(root: Path, items: Sequence[Item], image_size: int) -> "tf.data.Dataset":
    from edgecls.core.keras import tf

    root = Path(root)
    if not root.is_dir():
        raise EdgeclsError(f"data folder not found: {root} (the run's split.json points at it)")
    if not items:
        raise EdgeclsError("no images to build a dataset from")
    paths = [str(root / rel) for rel, _ in items]
    labels = np.asarray([lab for _, lab in items], dtype=np.int32)
    # Orientation is read from the headers once, here, and travels with the path: the per-image
    # work in the parallel map stays in the graph (no Python per image per epoch).
    orient = np.asarray(orientations(root, [rel for rel, _ in items]), dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, orient, labels))
    return ds.map(
        lambda p, o, y: (_decode_resize(p, o, image_size), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def resolve_cache(n_items: int, image_size: int, cache: str, cache_budget_mb: int, cache_dir: Path | None) -> str:
    """The cache actually used: "memory", "disk" or "none" ("auto": memory when it fits the budget)."""
    if cache not in CACHE_MODES:
        raise EdgeclsError(f"unknown cache mode {cache!r}; use one of {', '.join(CACHE_MODES)}")
    if cache == "auto":
        decoded_mb = n_items * image_size * image_size * 3 / 2**20
        if decoded_mb <= cache_budget_mb:
            return "memory"
        return "disk" if cache_dir is not None else "none"
    if cache == "disk" and cache_dir is None:
        raise EdgeclsError("cache 'disk' needs a cache folder (cache_dir)")
    return cache


def _cache_prefix(root: Path, items: Sequence[Item], image_size: int, cache_dir: Path) -> str:
    # The name hashes the exact inputs: TF reuses any finished cache file of the same name.
    h = hashlib.sha1(f"{Path(root).resolve()}|{image_size}|{sorted(items)}".encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    prefix = cache_dir / f"decoded-{image_size}px-{h}"
    if not Path(f"{prefix}.index").exists():
        # A crash mid-epoch leaves a lock and partial shards that make TF refuse to write again.
        for stale in cache_dir.glob(f"{prefix.name}*"):
            stale.unlink(missing_ok=True)
    return str(prefix)


def build_dataset(
    root: Path,
    items: list[Item],
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    seed: int = 42,
    cache: str = "none",
    cache_budget_mb: int = 2048,
    cache_dir: Path | None = None,
    drop_remainder: bool = False,
    oversample: bool = False,
) -> "tf.data.Dataset":
    """(float32 [B,S,S,3] with integer values 0..255, int32 [B]); shuffled each epoch when training.

    Decode+resize runs in parallel; the uint8 result is cached (memory or file) and cast to
    float32 per batch after the cache, so the cache holds 4x less. No augmentation here.
    ``oversample`` (training only): every class is drawn equally often, see :func:`_oversampled`.
    """
    if oversample and not training:
        raise EdgeclsError("oversampling is for the training split only; evaluation must see the real mix")
    from edgecls.core.keras import tf

    mode = resolve_cache(len(items), image_size, cache, cache_budget_mb, cache_dir)
    if oversample:
        ds = _oversampled(root, items, image_size=image_size, mode=mode, cache_dir=cache_dir, seed=seed,
                          batch_size=batch_size)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)
    ds = _decoded_dataset(root, items, image_size)
    if mode == "memory":
        ds = ds.cache()
    elif mode == "disk":
        ds = ds.cache(_cache_prefix(root, items, image_size, Path(cache_dir)))  # type: ignore[arg-type]
    if training:
        image_mb = image_size * image_size * 3 / 2**20
        buffer = len(items) if mode == "memory" else max(8 * batch_size, int(SHUFFLE_BUDGET_MB / image_mb))
        ds = ds.shuffle(min(len(items), buffer), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def oversampled_epoch_size(items: Sequence[Item]) -> int:
    """Images per oversampled epoch: every class as large as the largest one."""
    counts = np.bincount(np.asarray([lab for _, lab in items], dtype=np.int64))
    present = counts[counts > 0]
    return int(present.max()) * int(present.size) if present.size else 0


def _oversampled(
    root: Path, items: Sequence[Item], *, image_size: int, mode: str, cache_dir: Path | None, seed: int,
    batch_size: int,
) -> "tf.data.Dataset":
    """Unbatched (uint8 image, label) stream where every class appears as often as the largest.

    One cached stream per class (so resampling happens after the cache and never decodes twice),
    reshuffled and repeated until it holds ``max_count`` images, then the classes are interleaved
    at random. Per epoch: each image of the largest class once, each image of a class of n images
    ``max_count / n`` times (whole passes, each freshly shuffled; the last pass partly), so
    each class gets exactly ``max_count`` draws. As in TensorFlow's imbalanced-data tutorial, the
    epoch grows to classes x largest class rather than dropping majority images. Seeded, and
    re-randomised every epoch.
    """
    from edgecls.core.keras import tf

    by_class: dict[int, list[Item]] = {}
    for it in items:
        by_class.setdefault(int(it[1]), []).append(it)
    target = max(len(v) for v in by_class.values())
    image_mb = image_size * image_size * 3 / 2**20
    streams = []
    for label in sorted(by_class):
        own = sorted(by_class[label])
        ds = _decoded_dataset(root, own, image_size)
        if mode == "memory":
            ds = ds.cache()
        elif mode == "disk":
            ds = ds.cache(_cache_prefix(root, own, image_size, Path(cache_dir)))  # type: ignore[arg-type]
        budget = int(SHUFFLE_BUDGET_MB / len(by_class) / image_mb)  # all class buffers live at once
        buffer = len(own) if mode == "memory" else max(8 * batch_size, budget)
        # The first pass reads the whole class (target >= its size), so its cache is always completed.
        ds = ds.shuffle(min(len(own), buffer), seed=seed + 1000 * (label + 1), reshuffle_each_iteration=True)
        streams.append(ds.repeat().take(target))
    k = len(streams)
    return tf.data.Dataset.sample_from_datasets(
        streams, weights=[1.0 / k] * k, seed=seed, stop_on_empty_dataset=False, rerandomize_each_iteration=True
    )


def load_images(root: Path, items: Sequence[Item], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N,S,S,3] and int32 [N], decoded and resized exactly as ``build_dataset`` does."""
    ds = _decoded_dataset(root, items, image_size).batch(64)
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs).astype(np.uint8), np.concatenate(ys).astype(np.int32)
