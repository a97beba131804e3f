"""The head phase on cached backbone features (edgecls.train.feature_cache).

Tiny real runs (MobileNetV3-Small minimalistic alpha 0.35, 32 px, random weights) through the
real ``train()``: the cheapest backbone to trace (109 layers to MobileNetV2's 160); the cache
does not care which backbone fills it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecls.core.config import TrainConfig

SIZE_PX = 32
BACKBONE = dict(backbone="mobilenet_v3_small", minimalistic=True, alpha=0.35)
CUT_AT_8_PERCENT = "expanded_conv_9/Add"  # its fine-tune cut at fine_tune_fraction 0.08 (105 layers)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from edgecls.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("feature_cache") / "data"
    write_synthetic_dataset(root, classes=2, per_class=12, size=48, seed=3)
    return root


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), **BACKBONE, size=SIZE_PX, weights="none", epochs=3,
                fine_tune_epochs=0, batch_size=8, augment=False, dropout=0.0, cache="memory", seed=5,
                patience=10)
    base.update(kw)
    return TrainConfig(**base)


def _head(run_path: Path) -> list[np.ndarray]:
    from edgecls.train.model_io import load_model

    return load_model(run_path / "model.keras").get_layer("predictions").get_weights()


@pytest.mark.slow
def test_cache_on_and_off_train_the_same_model_without_augmentation(data_dir, tmp_path):
    """No augmentation, no dropout, one batch per epoch (order cannot matter): the same model either way,
    head phase on the backbone's cached output and fine-tune phase on the features cached at the cut.

    Tolerance: float32 summation order only. A cache that ran BatchNorm in training mode, used
    other layers than the classifier's, fed other features than the full path, or fine-tuned other
    layers would differ far more (the head's kernel moves by ~1e-2 per epoch here).
    """
    from edgecls.train.fit import train
    from edgecls.train.model_io import load_model

    big_batch = 64  # >= the training split: every epoch is one full batch on both paths
    # The top 8 % of MobileNetV3-Small's layers starts inside block 10, where two tensors cross (the block's
    # input also feeds its add): the cut moves down to block 9's add, and block 10's expand and depthwise
    # layers are computed above the cut but stay frozen; its project conv and Conv_1 train.
    ft = dict(fine_tune_epochs=2, fine_tune_fraction=0.08)
    watch = {mode: _WatchConv1() for mode in ("features", "none")}
    runs = {mode: train(_cfg(data_dir, tmp_path / mode, head_cache=mode, batch_size=big_batch, **ft),
                        callbacks=[watch[mode]], verbose=0)
            for mode in ("features", "none")}
    cached, full = (_head(runs[m].path) for m in ("features", "none"))
    start = _head_at_init(data_dir)
    assert np.abs(full[0] - start[0]).max() > 5e-4  # the head really trained (Adam's first step is lr = 1e-3)
    # model.keras holds the best epoch's weights, which may be a head epoch: follow the top conv itself.
    kernels = {m: w.kernels for m, w in watch.items()}
    assert (len(kernels["features"]), len(kernels["none"])) == (2, 5)  # fine-tune epochs; every epoch
    assert np.abs(kernels["none"][-1] - kernels["none"][0]).max() > 1e-5  # the fine-tune phase moved the top
    for a, b in zip(kernels["features"], kernels["none"][-2:], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)
    models = {m: load_model(runs[m].path / "model.keras") for m in runs}
    for a, b in zip(models["features"].get_weights(), models["none"].get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)
    # Losses depend on the features' values, not only on the gradients' signs: the stronger check.
    rows = {m: json.loads(runs[m].history_json.read_text())["epochs"] for m in runs}
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert [r[key] for r in rows["features"]] == pytest.approx([r[key] for r in rows["none"]], abs=1e-4), key
    metrics = {m: json.loads(runs[m].metrics_json.read_text()) for m in runs}
    rec = metrics["features"]["head_cache"]
    assert (rec["views"], rec["train_images"], rec["head_epochs"], rec["dtype"]) == (1, 16, 3, "float32")
    assert rec["fine_tune_cut"] == CUT_AT_8_PERCENT and [r["phase"] for r in rows["features"]].count("fine_tune") == 2
    assert metrics["none"]["head_cache"] is None
    for m in metrics.values():  # the profile of the run is always recorded
        assert {"scan", "build_model", "head", "save_model", "evaluate", "plots_wait"} <= set(m["timings"]["stages_s"])
    assert "feature_cache" in metrics["features"]["timings"]["stages_s"]
    assert metrics["features"]["timings"]["overlapped_s"]["plots"] > 0
    assert {p.name for p in (runs["features"].path / "plots").iterdir()} == {"learning_curves.png", "confusion_matrix.png"}
    assert not (runs["features"].path / "cache").exists()  # the feature file goes with the run's cache
    # A float32 run is scored from the cached clean val/test features (through the fine-tuned layers
    # above the cut); the saved model on the images must score exactly that (a wrong order, split,
    # feature or stale layer would not).
    assert (metrics["features"]["evaluated_from"], metrics["none"]["evaluated_from"]) == (
        "cached backbone features", "images")
    on_images = _score_on_images(runs["features"])
    for split in ("val", "test"):
        assert metrics["features"][f"n_{split}"] == on_images[split]["n"] > 0
        assert metrics["features"][f"{split}_loss"] == pytest.approx(on_images[split]["loss"], abs=1e-5)
        assert metrics["features"][f"{split}_accuracy"] == on_images[split]["accuracy"]
    assert metrics["features"]["confusion_matrix"] == on_images["test"]["confusion_matrix"]


def _score_on_images(run) -> dict:
    """The saved model evaluated on the run's val and test images (the full path)."""
    from edgecls import data
    from edgecls.train.finish import evaluate
    from edgecls.train.model_io import load_model

    model = load_model(run.model_path)
    root, split = data.load_split(run)
    labels = run.read_labels()
    return {name: evaluate(model, data.build_dataset(root, split[name], image_size=SIZE_PX, batch_size=8,
                                                     training=False), len(labels), labels)
            for name in ("val", "test")}


class _WatchConv1:
    """Keras callback: the backbone's top 1x1 conv kernel after every epoch, whichever model is being fitted."""

    def __new__(cls):
        from edgecls.core.keras import keras

        class Watch(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.kernels: list[np.ndarray] = []

            def on_epoch_end(self, epoch, logs=None):
                # (absent from the head-phase model on cached features: features -> dropout -> predictions)
                for conv in [lyr for lyr in self.model._flatten_layers(include_self=False, recursive=True)
                             if lyr.name == "Conv_1"]:
                    self.kernels.append(np.array(conv.get_weights()[0]))

        return Watch()


def _choice():
    from edgecls.train.backbones import BackboneChoice

    return BackboneChoice(BACKBONE["backbone"], SIZE_PX, BACKBONE["alpha"], BACKBONE["minimalistic"], "none")


def _head_at_init(data_dir: Path) -> list[np.ndarray]:
    """The head's weights as both runs start (same seed, same build)."""
    from edgecls.core.keras import keras
    from edgecls.train.backbones import build_classifier

    keras.utils.set_random_seed(5)
    return build_classifier(_choice(), 2, dropout=0.0).get_layer("predictions").get_weights()


@pytest.mark.slow
def test_k_views_are_k_different_augmentations_and_training_draws_from_all(data_dir):
    from edgecls import data
    from edgecls.core.keras import keras
    from edgecls.train import feature_cache as fc
    from edgecls.train.backbones import build_classifier, calibrate_batchnorm, get_backbone
    from edgecls.train.models import make_augmentation

    scan = data.scan_dataset(data_dir)
    items = scan.files["all"]
    ds = data.build_dataset(data_dir, items, image_size=SIZE_PX, batch_size=8, training=False, cache="memory")
    keras.utils.set_random_seed(0)
    clf = build_classifier(_choice(), 2)
    calibrate_batchnorm(get_backbone(clf), next(iter(ds))[0])
    views = 3
    cache = fc.build(clf, fc.Passes(ds, views, augment=make_augmentation(0)))
    clean = fc.build(clf, fc.Passes(ds, 2))
    assert cache.train.shape[:2] == (views, len(items)) and cache.val is None
    np.testing.assert_array_equal(cache.train_labels, [lbl for _, lbl in items])
    np.testing.assert_array_equal(clean.train[0], clean.train[1])  # no augmentation: a pass is repeatable
    scale = np.abs(clean.train[0]).mean()
    for k in range(views):  # every view is augmented, and each differs from every other
        assert np.abs(cache.train[k] - clean.train[0]).mean() > 0.01 * scale
        for j in range(k):
            per_image = np.abs(cache.train[k] - cache.train[j]).mean(axis=1)
            assert (per_image > 1e-3 * scale).all(), (k, j)

    # The training stream draws every view: image 0's rows over a few epochs are several views.
    stream, steps, _ = fc.datasets(cache, 2, fc.Draws(batch_size=8, seed=1, start_epoch=0, epochs=6))
    rows = np.concatenate([x.numpy() for x, _ in stream])
    assert len(rows) == 6 * len(items) and steps == -(-len(items) // 8)
    seen = {int(np.argmin(np.abs(cache.train[:, 0] - r).sum(axis=1)))
            for r in rows if np.abs(cache.train[:, 0] - r).sum(axis=1).min() == 0}
    assert seen == set(range(views))


def test_epoch_order_is_a_pure_function_of_seed_and_epoch_and_oversamples_evenly():
    from edgecls.train.feature_cache import epoch_order

    labels = np.array([0] * 10 + [1] * 3)
    a, b = epoch_order(labels, 4, 2, 7, oversample=False), epoch_order(labels, 4, 2, 7, oversample=False)
    np.testing.assert_array_equal(a, b)  # a resumed run replays the same epoch
    assert not np.array_equal(a, epoch_order(labels, 4, 3, 7, oversample=False))  # another epoch, another order
    np.testing.assert_array_equal(np.sort(a % 13), np.arange(13))  # every image once per epoch
    assert set(a // 13) <= set(range(4)) and len(set(a // 13)) > 1  # views drawn at random
    over = epoch_order(labels, 1, 0, 7, oversample=True)
    counts = np.bincount(labels[over % 13])
    assert counts.tolist() == [10, 10]  # every class as often as the largest
    assert set(over[labels[over] == 1]) == {10, 11, 12}  # the small class: whole passes over its images


@pytest.mark.slow
@pytest.mark.parametrize("interrupt_after, phase, phase_done", [
    (2, "head", 2),        # mid head phase
    (5, "fine_tune", 1),   # mid fine-tune phase, on the features at the cut
])
def test_resume_reuses_the_cached_views_and_continues_exactly(data_dir, tmp_path, interrupt_after, phase, phase_done):
    from edgecls.core.keras import keras
    from edgecls.train.fit import train

    # Augmented views: a rebuilt cache would differ. 4 head epochs, then 2 fine-tune epochs on the cut.
    cfg = dict(augment=True, head_cache_views=2, epochs=4, fine_tune_epochs=2, fine_tune_fraction=0.08)

    class Interrupt(keras.callbacks.Callback):
        seen = 0

        def on_epoch_end(self, epoch, logs=None):
            Interrupt.seen += 1
            if Interrupt.seen == interrupt_after:
                raise KeyboardInterrupt

    straight = train(_cfg(data_dir, tmp_path / "straight", **cfg), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data_dir, tmp_path / "killed", **cfg), callbacks=[Interrupt()], verbose=0)
    state = json.loads((tmp_path / "killed" / "checkpoints" / "state.json").read_text())
    assert (state["phase"], state["phase_epochs_done"], state["head_cache"]) == (phase, phase_done, "features")
    assert state["fine_tune_cut"] == CUT_AT_8_PERCENT
    assert (tmp_path / "killed" / "cache" / "head_features.npz").is_file()
    resumed = train(TrainConfig(out=str(tmp_path / "killed")), resume=True, verbose=0)
    rec = json.loads(resumed.metrics_json.read_text())["head_cache"]
    if phase == "head":
        assert rec["loaded_from_file"] and rec["head_epochs"] == 2
    from edgecls.train.model_io import load_model

    for a, b in zip(*(load_model(r.path / "model.keras").get_weights() for r in (straight, resumed)), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    hist = [json.loads(r.history_json.read_text())["epochs"] for r in (straight, resumed)]
    assert [r["phase"] for r in hist[1]] == ["head"] * 4 + ["fine_tune"] * 2
    assert [r["loss"] for r in hist[0]] == pytest.approx([r["loss"] for r in hist[1]], abs=1e-6)


@pytest.mark.slow
def test_mixed_precision_caches_float16_features_and_saves_a_float32_model(data_dir, tmp_path):
    """Under mixed_float16 the backbone emits float16: the cache keeps exactly that, the saved model is float32."""
    from edgecls.core.keras import keras
    from edgecls.train.fit import train
    from edgecls.train.model_io import load_model

    run = train(_cfg(data_dir, tmp_path / "mixed", mixed_precision="on", epochs=2), verbose=0)
    m = json.loads(run.metrics_json.read_text())
    assert m["precision_policy"] == "mixed_float16"
    assert (m["head_cache"]["dtype"], m["head_cache"]["head_epochs"]) == ("float16", 2)
    assert keras.mixed_precision.global_policy().name == "float32"
    model = load_model(run.model_path)
    assert {l.dtype_policy.name for l in model._flatten_layers(include_self=False)} == {"float32"}
