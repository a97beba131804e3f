"""Training on cached backbone features: run the frozen part of the backbone once, train the rest many times.

While the backbone is frozen (and its BatchNorm in inference mode) its output for an image depends
only on the image and its augmentation, so running it on every batch of every head epoch repeats
the same work. Instead the backbone runs once over ``K`` augmented views of each training image
(one clean view with ``--no-augment``) and once over the clean validation images; the head then
trains on those features. Each epoch draws, for every training image, one of its ``K`` views at
random (seeded by run seed and epoch number, so a resumed run replays the same epochs), so the
augmentation keeps its effect.

The head model is built from the classifier's *own* ``dropout`` and ``predictions`` layers, so
the weights it learns are the classifier's: nothing is copied back.

The fine-tune phase uses the same trick one level down. Only the top of the backbone is unfrozen,
so the cache also keeps each view's features at the *cut* (:mod:`edgecls.train.cut`: the one tensor
between the frozen part and the rest), and the fine-tune epochs run just the layers above it (the
classifier's own, BatchNorm in inference mode) and the head on those: the frozen part is never
run again. The clean test images are cached too, so the run's final evaluation needs no backbone
pass either (:func:`predict_clean`).

Features are stored in the dtype the backbone emits (float32, or float16 under mixed precision):
exactly the values the head sees on the full path, at half the memory under mixed precision.
They are written to ``RUN/cache/head_features.npz`` (atomically) so a resumed head phase trains
on the very same views; the file goes with the rest of ``RUN/cache`` when the run finishes.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls.core.config import TrainConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes
from edgecls.core.keras import keras, tf
from edgecls.train.backbones import PREDICTIONS_LAYER, get_backbone
from edgecls.train.cut import Cut
from edgecls.train.datasets import labels_of, targets

FEATURES_FILE = "head_features.npz"
DROPOUT_LAYER = "dropout"
VIEW_SEED_OFFSET = 1000  # the cache's augmentation layers get seeds apart from the training wrapper's (see fit.py)
FORMAT_VERSION = 3  # 2: clean test features too; 3: features at the fine-tune cut


@dataclass
class FeatureCache:
    """Backbone outputs of the training views and the clean validation images, with their labels."""

    train: np.ndarray
    """[K, N, D]: view k of training image n."""
    train_labels: np.ndarray
    """[N] int class indices."""
    val: Optional[np.ndarray]
    """[M, D] clean validation features (None without a validation split)."""
    val_labels: Optional[np.ndarray]
    build_s: float
    """Seconds the backbone took to make these features (0 when loaded from a file)."""
    pass_s: tuple[float, ...] = ()
    """Seconds of each training pass (the first includes tracing the backbone)."""
    loaded: bool = False
    test: Optional[np.ndarray] = None
    """[T, D] clean test features (None without a test split, or from a cache made before they were kept)."""
    test_labels: Optional[np.ndarray] = None
    cut_layer: Optional[str] = None
    """The backbone layer at the fine-tune cut (:mod:`edgecls.train.cut`) whose outputs are kept too."""
    cut_train: Optional[np.ndarray] = None
    """[K, N, H, W, C]: the same views at the cut (the fine-tune phase trains the layers above it on these)."""
    cut_val: Optional[np.ndarray] = None
    cut_test: Optional[np.ndarray] = None

    @property
    def views(self) -> int:
        return int(self.train.shape[0])

    @property
    def backbone_passes(self) -> int:
        """Images the backbone ran on to build this cache."""
        return int(self.train.shape[0] * self.train.shape[1] + sum(0 if a is None else a.shape[0]
                                                                   for a in (self.val, self.test)))

    @property
    def nbytes(self) -> int:
        return int(sum(0 if a is None else a.nbytes
                       for a in (self.train, self.val, self.test, self.cut_train, self.cut_val, self.cut_test)))


def fallback_reason(cfg: TrainConfig, strategy: Any) -> Optional[str]:
    """Why the head phase must run on the full path here, or None when the cache can be used."""
    if cfg.head_cache != "features":
        return None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Every worker would build the whole cache (the same backbone passes the cluster is meant to
        # share) and the feature set is in memory, not a file list tf.data can shard by worker.
        return "multi-worker training shards the image pipeline between workers; the feature cache is per process"
    return None


def views_for(cfg: TrainConfig) -> int:
    """Augmented views per image: the configured K, or one clean view when augmentation is off."""
    return cfg.head_cache_views if cfg.augment else 1


def _traced(fn: Any, shape: tuple) -> Any:
    # One trace for every batch size (the last batch is smaller): tracing MobileNetV2 costs
    # seconds, and shape-specialised retraces showed up as TF retracing warnings.
    return tf.function(fn, input_signature=[tf.TensorSpec([None, *shape], tf.float32)])


def _extractors(classifier: "keras.Model", augment: Optional["keras.Model"], cut: Optional[Cut]) -> tuple[Any, Any]:
    """(augmented, clean) functions image batch -> (cut features or None, backbone features),
    sharing *one* trace of the backbone.

    Tracing MobileNetV2 is seconds of a run that has about a minute in all: tracing the backbone
    once with the augmentation in front and once without (for the clean images) doubled that, so
    the augmentation is traced on its own and feeds the same backbone function. With a cut, the
    backbone runs as its two halves (the same layers), keeping the tensor between them.
    """
    image = tuple(classifier.input_shape[1:])
    if cut is None:
        base = get_backbone(classifier)
        backbone = _traced(lambda x: base(x, training=False), image)  # BatchNorm in inference mode
        both = lambda x: (None, backbone(x))  # noqa: E731
    else:
        lower = _traced(lambda x: cut.lower(x, training=False), image)
        upper = _traced(lambda f: cut.upper(f, training=False), tuple(cut.upper.input_shape[1:]))

        def both(x):
            f = lower(x)
            return f, upper(f)
    if augment is None:
        return both, both
    augmented = _traced(lambda x: augment(x, training=True), image)
    return (lambda x: both(augmented(x))), both


def _run(extract, ds: "tf.data.Dataset") -> tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """(cut features or None, backbone features, labels) of every image in ``ds``."""
    cuts, feats, labels = [], [], []
    for x, y in ds:
        c, f = extract(x)
        feats.append(np.asarray(f))
        if c is not None:
            cuts.append(np.asarray(c))
        y = np.asarray(y)
        labels.append(labels_of(y))
    return (np.concatenate(cuts) if cuts else None), np.concatenate(feats), np.concatenate(labels).astype(np.int64)


@dataclass(frozen=True)
class Passes:
    """What the frozen backbone runs over to fill a cache.

    ``views`` passes of ``train`` (unshuffled), each with fresh random augmentations when ``augment``
    is given (the augmentation model, built with its own seeds; None: the clean image each time), and
    one pass of the clean ``val`` and ``test`` images (with ``test`` cached, the final evaluation
    needs no backbone pass, see :func:`predict_clean`).
    """

    train: "tf.data.Dataset"
    views: int
    augment: Optional["keras.Model"] = None
    val: Optional["tf.data.Dataset"] = None
    test: Optional["tf.data.Dataset"] = None


def build(classifier: "keras.Model", passes: Passes, cut: Optional[Cut] = None) -> FeatureCache:
    """Run the frozen backbone over ``passes``; with ``cut``, also keep every image's features at that fine-tune cut."""
    t0 = time.perf_counter()
    extract, plain = _extractors(classifier, passes.augment, cut)
    views, cut_views, labels, pass_s = [], [], None, []
    for _ in range(passes.views):
        t = time.perf_counter()
        at_cut, feats, lab = _run(extract, passes.train)
        pass_s.append(time.perf_counter() - t)
        if labels is not None and not np.array_equal(lab, labels):
            raise EdgeclsError("the training set changed order between feature-cache passes; use --head-cache none")
        views.append(feats)
        cut_views.append(at_cut)
        labels = lab
    cut_val, val, val_labels = _run(plain, passes.val) if passes.val is not None else (None, None, None)
    cut_test, test, test_labels = _run(plain, passes.test) if passes.test is not None else (None, None, None)
    return FeatureCache(np.stack(views), labels, val, val_labels, time.perf_counter() - t0, tuple(pass_s),
                        test=test, test_labels=test_labels, cut_layer=None if cut is None else cut.layer,
                        cut_train=None if cut is None else np.stack(cut_views), cut_val=cut_val, cut_test=cut_test)


def save(cache: FeatureCache, path: Path) -> None:
    arrays = {"version": np.array(FORMAT_VERSION), "train": cache.train, "train_labels": cache.train_labels}
    if cache.val is not None:
        arrays.update(val=cache.val, val_labels=cache.val_labels)
    if cache.test is not None:
        arrays.update(test=cache.test, test_labels=cache.test_labels)
    if cache.cut_layer is not None:
        arrays.update(cut_layer=np.array(cache.cut_layer), cut_train=cache.cut_train,
                      **{k: v for k, v in (("cut_val", cache.cut_val), ("cut_test", cache.cut_test)) if v is not None})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load(path: Path, *, views: int, sizes: dict[str, int], cut_layer: Optional[str] = None) -> Optional[FeatureCache]:
    """The saved cache when it fits this run (views, the ``train``/``val``/``test`` sizes, fine-tune cut),
    else None (rebuild it)."""
    n_train, n_val, n_test = (sizes.get(name, 0) for name in ("train", "val", "test"))
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            if int(f["version"]) != FORMAT_VERSION or f["train"].shape[:2] != (views, n_train):
                return None
            saved_cut = str(f["cut_layer"]) if "cut_layer" in f.files else None
            get = lambda k: f[k] if k in f.files else None  # noqa: E731
            val, test = get("val"), get("test")
            if (0 if val is None else len(val)) != n_val or (0 if test is None else len(test)) != n_test \
                    or saved_cut != cut_layer:
                return None
            return FeatureCache(f["train"], f["train_labels"], val, get("val_labels"), 0.0, loaded=True,
                                test=test, test_labels=get("test_labels"), cut_layer=saved_cut,
                                cut_train=get("cut_train"), cut_val=get("cut_val"), cut_test=get("cut_test"))
    except (OSError, ValueError, KeyError):
        return None  # a damaged file is only a lost cache


def head_model(classifier: "keras.Model", feature_dtype: str) -> "keras.Model":
    """features -> the classifier's own dropout -> predictions (shared layers, shared weights)."""
    dim = int(get_backbone(classifier).output_shape[-1])
    inp = keras.Input((dim,), dtype=feature_dtype, name="features")
    x = classifier.get_layer(DROPOUT_LAYER)(inp)
    out = classifier.get_layer(PREDICTIONS_LAYER)(x)
    return keras.Model(inp, out, name="head_on_features")


def tail_model(classifier: "keras.Model", cut: Cut, feature_dtype: str) -> "keras.Model":
    """cut features -> the backbone's layers above the cut (BatchNorm in inference mode, as in the
    classifier) -> the classifier's own dropout -> predictions. Shared layers, shared weights."""
    inp = keras.Input(tuple(cut.upper.input_shape[1:]), dtype=feature_dtype, name="cut_features")
    x = cut.upper(inp, training=False)
    x = classifier.get_layer(DROPOUT_LAYER)(x)
    out = classifier.get_layer(PREDICTIONS_LAYER)(x)
    return keras.Model(inp, out, name="tail_on_features")


def predict_clean(classifier: "keras.Model", cache: FeatureCache, split: str, cut: Optional[Cut] = None,
                  batch_size: int = 256) -> np.ndarray:
    """The classifier's probabilities for the clean images of ``split`` ('val' or 'test') from their cached features.

    The same computation as calling the classifier on the images: from the features at ``cut``
    through the layers above it when given (their weights may have been fine-tuned since the
    cache was built), else from the backbone's output (valid while the whole backbone is frozen).
    """
    if cut is not None:
        features, model = getattr(cache, f"cut_{split}"), tail_model(classifier, cut, cache.cut_train.dtype.name)
    else:
        features, model = getattr(cache, split), head_model(classifier, cache.train.dtype.name)
    out = [np.asarray(model(features[i:i + batch_size], training=False), dtype=np.float32)
           for i in range(0, len(features), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, int(model.output_shape[-1])), np.float32)


def epoch_order(labels: np.ndarray, views: int, epoch: int, seed: int, *, oversample: bool) -> np.ndarray:
    """Flat indices (view * N + image) of one epoch: shuffled, one random view per draw.

    A pure function of (seed, epoch), so a resumed run replays its epochs exactly.
    ``oversample``: every class drawn as often as the largest (whole shuffled passes over a
    smaller class, the last one partial), like the image pipeline's oversampling.
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(labels)
    if oversample:
        classes = np.unique(labels)
        target = max(int((labels == c).sum()) for c in classes)
        picks = []
        for c in classes:
            members = np.flatnonzero(labels == c)
            reps = -(-target // len(members))
            picks.append(np.concatenate([rng.permutation(members) for _ in range(reps)])[:target])
        images = rng.permutation(np.concatenate(picks))
    else:
        images = rng.permutation(n)
    return rng.integers(0, views, size=len(images)) * n + images


@dataclass(frozen=True)
class Draws:
    """How one training phase draws batches from a cache.

    Epochs ``start_epoch .. epochs - 1``, each in the order :func:`epoch_order` gives for ``seed``;
    ``oversample`` draws every class as often as the largest; ``at_cut`` uses the features at the
    fine-tune cut instead of the backbone's output.
    """

    batch_size: int
    seed: int
    start_epoch: int
    epochs: int
    oversample: bool = False
    at_cut: bool = False


def datasets(cache: FeatureCache, n_classes: int,
             draws: Draws) -> tuple["tf.data.Dataset", int, Optional["tf.data.Dataset"]]:
    """(training batches for all the phase's remaining epochs in one stream, steps per epoch, validation batches).

    One stream over all remaining epochs: Keras keeps the iterator when ``steps_per_epoch`` is
    given and differs from the stream's length.
    """
    train, val_x = (cache.cut_train, cache.cut_val) if draws.at_cut else (cache.train, cache.val)
    views, n = train.shape[:2]
    flat = tf.constant(train.reshape(views * n, *train.shape[2:]))
    labels = tf.constant(np.tile(cache.train_labels, views).astype(np.int32))
    epochs = range(draws.start_epoch, max(draws.epochs, draws.start_epoch + 1))
    orders = np.stack([epoch_order(cache.train_labels, views, e, draws.seed, oversample=draws.oversample)
                       for e in epochs]).astype(np.int32)
    steps = -(-orders.shape[1] // draws.batch_size)
    ds = tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda o: tf.data.Dataset.from_tensor_slices(o).batch(draws.batch_size))
    ds = ds.map(lambda i: (tf.gather(flat, i), targets(tf.gather(labels, i), n_classes)))
    val = None
    if val_x is not None:
        val = tf.data.Dataset.from_tensor_slices(
            (val_x, targets(cache.val_labels.astype(np.int32), n_classes))).batch(draws.batch_size)
    return ds.prefetch(tf.data.AUTOTUNE), steps, val


def describe(cache: FeatureCache, *, head_s: float, epochs_run: int, n_epoch_draws: int, dtype: str) -> dict[str, Any]:
    """What was cached and what it saved: a record for metrics.json and the line printed after the phase.

    The full path would run the backbone (plus augmentation) on every training draw and every
    validation image in every epoch, after tracing it once; its cost is estimated from this
    cache's own passes (same process): the fastest pass gives the seconds per image, the first
    pass's excess the tracing. So ``saved_estimate_s`` is an estimate and is labelled so; with one
    view tracing cannot be told apart and no estimate is given.
    """
    n_val = 0 if cache.val is None else int(cache.val.shape[0])
    record: dict[str, Any] = {
        "views": cache.views, "train_images": int(cache.train.shape[1]), "val_images": n_val,
        "test_images": 0 if cache.test is None else int(cache.test.shape[0]),
        "fine_tune_cut": cache.cut_layer,
        "cut_shape": None if cache.cut_train is None else list(cache.cut_train.shape[2:]),
        "feature_dim": int(cache.train.shape[2]), "dtype": dtype, "megabytes": round(cache.nbytes / 2**20, 2),
        "build_s": round(cache.build_s, 2), "loaded_from_file": cache.loaded, "head_epochs": epochs_run,
        "head_s": round(head_s, 2),
    }
    if len(cache.pass_s) >= 2:
        per_image = min(cache.pass_s) / cache.train.shape[1]
        trace = cache.pass_s[0] - min(cache.pass_s)
        full = trace + per_image * epochs_run * (n_epoch_draws + n_val)
        record.update(full_path_estimate_s=round(full, 1), saved_estimate_s=round(full - cache.build_s - head_s, 1))
    return record


def summary_line(record: dict[str, Any]) -> str:
    what = (f"Head cache: {record['views']} view{'s' if record['views'] != 1 else ''} x {record['train_images']} "
            f"training + {record['val_images']} validation"
            + (f" + {record['test_images']} test" if record.get("test_images") else "")
            + " images through the backbone "
            f"({record['feature_dim']}-d {record['dtype']}, {record['megabytes']:.1f} MB)")
    if record["loaded_from_file"]:
        return f"{what} reloaded from the run's cache; {record['head_epochs']} head epochs took {record['head_s']:.1f} s"
    line = f"{what} in {record['build_s']:.1f} s; {record['head_epochs']} head epochs took {record['head_s']:.1f} s"
    saved = record.get("saved_estimate_s")
    if saved is not None:
        how = f"about {saved:.0f} s less than" if saved >= 1 else "no faster than"
        line += (f"; {how} running the backbone on every batch would have taken "
                 f"(estimated {record['full_path_estimate_s']:.0f} s from this run's seconds per image)")
    return line
