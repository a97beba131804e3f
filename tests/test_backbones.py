"""Backbone registry, built-in preprocessing (applied exactly once), weight files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecls.train import backbones
from edgecls.core.errors import EdgeclsError

# ../shared beside the checkout (CI clones main next to it)
PRETRAINED = Path(__file__).resolve().parents[2] / "shared" / "pretrained" / "mobilenet_v2_1.0_160_no_top.h5"
SIZE_PX = 32


def test_registry_lists_all_backbones():
    assert backbones.available() == ["efficientnet_b0", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(EdgeclsError) as e:
        backbones.get_spec("resnet50")
    assert str(e.value) == (
        "unknown backbone 'resnet50'; choose one of: "
        "efficientnet_b0, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small"
    )


def test_register_decorator_adds_a_builder_and_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(backbones, "_REGISTRY", dict(backbones._REGISTRY))

    @backbones.register("toy", preprocessing="none")
    def toy(size, alpha, minimalistic, weights):  # pragma: no cover - never built
        raise AssertionError

    assert "toy" in backbones.available()
    assert backbones.get_spec("toy").builder is toy
    with pytest.raises(ValueError, match="registered twice"):
        backbones.register("toy", preprocessing="none")(toy)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("mobilenet_v2", dict(size=16), "size must be an integer >= 32 pixels, got 16"),
        ("mobilenet_v2", dict(alpha=0.0), "alpha must be > 0, got 0.0"),
        ("mobilenet_v2", dict(alpha=-1.0), "alpha must be > 0, got -1.0"),
        ("efficientnet_b0", dict(alpha=0.5), "efficientnet_b0 has no width multiplier"),
        ("mobilenet_v2", dict(minimalistic=True), "--minimalistic only applies to mobilenet_v3"),
        ("mobilenet_v2", dict(alpha=0.3, weights="imagenet"), "ImageNet weights for mobilenet_v2 exist only for alpha in 0.35"),
        ("mobilenet_v3_small", dict(alpha=0.75, minimalistic=True, weights="imagenet"), "exist only for alpha in 1.0"),
        ("mobilenet_v2", dict(weights="/no/such/file.h5"), "weights file not found: /no/such/file.h5"),
    ],
)
def test_backbone_choice_check_rejects_bad_values(name, kwargs, message):
    opts = dict(size=96, alpha=1.0, minimalistic=False, weights="none") | kwargs
    with pytest.raises(EdgeclsError, match=message.replace("(", r"\(")):
        backbones.BackboneChoice(name, **opts).check()


def _all_layers(model):
    from edgecls.core.keras import keras

    return [m for m in model.submodules if isinstance(m, keras.layers.Layer)]


def _count(model, cls_name):
    return sum(type(layer).__name__ == cls_name for layer in _all_layers(model))


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, kwargs, pre_layers, lo, hi",
    [
        ("mobilenet_v2", dict(alpha=0.35), ["Rescaling"], -1.0, 1.0),
        ("mobilenet_v3_small", dict(alpha=0.75, minimalistic=True), ["Rescaling"], -1.0, 1.0),
        ("mobilenet_v3_large", dict(), ["Rescaling"], -1.0, 1.0),
        # weights=None: EfficientNet's Normalization holds mean 0 / variance 1 (identity after /255).
        ("efficientnet_b0", dict(), ["Rescaling", "Normalization"], 0.0, 1.0),
    ],
)
def test_preprocessing_is_inside_the_model_exactly_once(name, kwargs, pre_layers, lo, hi):
    from edgecls.core.keras import keras

    model = backbones.build_classifier(backbones.BackboneChoice(name, size=SIZE_PX, weights="none", **kwargs), 3, dropout=0.0)
    # Top level: image -> backbone -> dropout -> predictions; nothing rescales outside the backbone.
    assert [layer.name for layer in model.layers] == ["image", "backbone", "dropout", "predictions"]
    base = backbones.get_backbone(model)
    for cls_name in ("Rescaling", "Normalization"):
        assert _count(model, cls_name) == pre_layers.count(cls_name), cls_name
    # The first conv sees the input scaled once: 0 -> lo, 255 -> hi, and nothing outside [lo, hi].
    first_conv = next(i for i, layer in enumerate(base.layers) if isinstance(layer, keras.layers.Conv2D))
    assert [type(layer).__name__ for layer in base.layers[1:first_conv]][: len(pre_layers)] == pre_layers
    probe = keras.Model(base.input, base.layers[len(pre_layers)].output)
    x = np.zeros((3, SIZE_PX, SIZE_PX, 3), np.float32)
    x[1] = 255.0
    x[2] = np.random.default_rng(0).integers(0, 256, (SIZE_PX, SIZE_PX, 3))
    y = probe(x).numpy()
    np.testing.assert_allclose(y[0], lo, atol=1e-6)
    np.testing.assert_allclose(y[1], hi, atol=1e-6)
    assert lo - 1e-6 <= y[2].min() and y[2].max() <= hi + 1e-6
    assert model.output.dtype == "float32"
    assert model.output_shape == (None, 3)


@pytest.mark.slow
def test_weights_file_loads_into_the_backbone_and_a_misfit_is_one_clear_error(tmp_path):
    from edgecls.core.keras import keras

    # A Keras no-top weights file, made the way the application's own files are made.
    app = keras.applications.MobileNetV2(
        input_shape=(SIZE_PX, SIZE_PX, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    fits = tmp_path / "mnv2_035_no_top.h5"
    app.save_weights(str(fits))
    model = backbones.build_classifier(backbones.BackboneChoice("mobilenet_v2", size=SIZE_PX, alpha=0.35, weights=str(fits)), 2)
    base = backbones.get_backbone(model)
    np.testing.assert_array_equal(base.get_layer("Conv1").kernel.numpy(), app.get_layer("Conv1").kernel.numpy())
    np.testing.assert_array_equal(base.get_weights()[-1], app.get_weights()[-1])

    with pytest.raises(EdgeclsError) as e:
        backbones.build_classifier(backbones.BackboneChoice("mobilenet_v2", size=SIZE_PX, alpha=0.5, weights=str(fits)), 2)
    assert str(e.value).startswith(f"weights file {fits} does not fit mobilenet_v2 alpha 0.5 (")
    assert "\n" not in str(e.value)
    with pytest.raises(EdgeclsError, match="does not fit mobilenet_v3_small alpha 1 .*Layer count mismatch"):
        backbones.build_classifier(backbones.BackboneChoice("mobilenet_v3_small", size=SIZE_PX, weights=str(fits)), 2)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(EdgeclsError, match="does not fit mobilenet_v2"):
        backbones.build_classifier(backbones.BackboneChoice("mobilenet_v2", size=SIZE_PX, alpha=0.35, weights=str(junk)), 2)


@pytest.mark.slow
def test_shared_pretrained_file_fits_mobilenet_v2_alpha_1():
    if not PRETRAINED.is_file():
        pytest.skip(f"{PRETRAINED} not present")
    import h5py

    model = backbones.build_classifier(backbones.BackboneChoice("mobilenet_v2", size=96, alpha=1.0, weights=str(PRETRAINED)), 2)
    kernel = backbones.get_backbone(model).get_layer("Conv1").kernel.numpy()
    with h5py.File(PRETRAINED, "r") as f:
        stored = np.asarray(f["Conv1"]["Conv1"]["kernel:0"])
    np.testing.assert_array_equal(kernel, stored)


@pytest.mark.slow
def test_calibrating_batchnorm_turns_vanishing_random_features_into_usable_ones():
    base = backbones.build_backbone(backbones.BackboneChoice("mobilenet_v2", size=SIZE_PX, alpha=0.35, weights="none"))
    x = np.random.default_rng(0).integers(0, 256, (8, SIZE_PX, SIZE_PX, 3)).astype(np.float32)
    before = base(x, training=False).numpy()
    backbones.calibrate_batchnorm(base, x)
    after = base(x, training=False).numpy()
    # Untouched BatchNorm statistics: the random network's activations vanish layer by layer.
    assert np.abs(before).max() < 1e-5
    assert after.std(axis=0).mean() > 1e-2
    bn = next(layer for layer in base.layers if type(layer).__name__ == "BatchNormalization")
    assert bn.momentum == 0.999  # restored after calibration
