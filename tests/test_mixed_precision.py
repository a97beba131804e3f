"""EfficientNet + mixed precision on the CPU ends with a float32 model, not a KeyError;
pruning trains the backbone as train does (no stochastic depth, label smoothing, class weights)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgecls.core.config import PruneConfig, TrainConfig

SIZE_PX = 32
# A random-init EfficientNet's features reach ~1e4, where float16 steps are 8: the mixed model's
# probabilities are float16-noisy, not the float32 copy's. Typical images agree to ~0.005; a few
# near-ties flip. So: the median difference is small and most top-1s agree (the weights
# themselves are compared exactly).
MEDIAN_ATOL = 2e-2
MIN_TOP1_AGREEMENT = 0.75
# Low on purpose: the pruning test is about dropout and the loss, not the zeros, and the report's gzip
# (level 9) of EfficientNet's weights slows with every zero: ~12 s at 0.5, ~3 s at 0.1.
PRUNE_SPARSITY = 0.1


class CaptureMixed:
    """Keras callback: the mixed-precision classifier's outputs on fixed images at the end of training."""

    def __new__(cls, images):
        from edgecls.core.keras import keras

        class _Cb(keras.callbacks.Callback):
            def on_train_end(self, logs=None):
                self.policy = self.model.layers[-1].dtype_policy.name
                self.layer_types = [type(l).__name__ for l in self.model._flatten_layers(include_self=False)]
                self.probs = self.model(images, training=False).numpy().astype(np.float32)
                from edgecls.train.checkpoint import _variables

                self.weights = {k: np.array(v.numpy()) for k, v in _variables(self.model)}

        return _Cb()


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    from edgecls.data.synth import write_synthetic_dataset
    from edgecls.train.fit import train

    root = tmp_path_factory.mktemp("mixed")
    from edgecls import data

    write_synthetic_dataset(root / "data", classes=2, per_class=8, size=SIZE_PX, seed=2)
    scan = data.scan_dataset(root / "data", decode=False)
    images = data.load_images(root / "data", scan.files["all"], SIZE_PX)[0].astype(np.float32)
    cb = CaptureMixed(images)
    cfg = TrainConfig(data=str(root / "data"), out=str(root / "run"), backbone="efficientnet_b0", size=SIZE_PX,
                      weights="none", epochs=1, fine_tune_epochs=0, batch_size=8, augment=False, dropout=0.0,
                      cache="memory", mixed_precision="on", seed=0, label_smoothing=0.1,
                      head_cache="none")  # the callback inspects the classifier: the full path fits it
    run = train(cfg, callbacks=[cb], verbose=0)
    return SimpleNamespace(run=run, images=images, cb=cb)


@pytest.mark.slow
def test_mixed_precision_efficientnet_saves_a_float32_copy_with_the_same_layers_and_outputs(mixed_run):
    from edgecls.core.keras import keras
    from edgecls.train.model_io import load_model

    assert mixed_run.cb.policy == "float32"  # the classifier's last layer is float32 either way
    from edgecls.train.calibration import scaled, temperature_of

    model = load_model(mixed_run.run.model_path)
    flat = list(model._flatten_layers(include_self=False))
    # Preprocessing layers kept; the calibrated head adds its temperature and softmax after the logits.
    assert [type(l).__name__ for l in flat] == mixed_run.cb.layer_types + ["Rescaling", "Softmax"]
    assert {l.dtype_policy.name for l in flat} == {"float32"}
    norm = next(l for l in flat if isinstance(l, keras.layers.Normalization))
    assert norm.get_weights()  # the stem's Normalization travels with its statistics
    from edgecls.train.checkpoint import _variables

    saved = {k: v.numpy() for k, v in _variables(model)}
    assert saved.keys() == mixed_run.cb.weights.keys()
    for key, value in saved.items():  # variables are float32 under mixed precision too: exact
        np.testing.assert_array_equal(value, mixed_run.cb.weights[key], err_msg=key)
    probs = model.predict(mixed_run.images, verbose=0)
    trained = scaled(mixed_run.cb.probs, temperature_of(model))  # the mixed model's scores, calibrated as saved
    assert np.median(np.abs(probs - trained)) < MEDIAN_ATOL
    assert np.mean(probs.argmax(1) == trained.argmax(1)) >= MIN_TOP1_AGREEMENT


@pytest.mark.slow
def test_pruning_keeps_the_backbones_stochastic_depth_off_and_uses_the_runs_loss(mixed_run, monkeypatch):
    from edgecls.core.keras import keras
    from edgecls.optimize import prune, prune_graph

    seen = {}
    real = prune.build_pruning_model

    def spy(model, layer_fn):
        built = real(model, layer_fn)
        seen["model"] = built
        # fit calls the backbone in training mode (the pruning masks update only then): every
        # Dropout inside it (EfficientNet's stochastic depth) must be off, as under train.
        seen["dropouts"] = [l.rate for l in prune_graph.all_layers(built.get_layer("backbone"))
                            if isinstance(l, keras.layers.Dropout)]
        return built

    monkeypatch.setattr(prune, "build_pruning_model", spy)
    report = prune.prune_run(PruneConfig(run=str(mixed_run.run.path), sparsity=PRUNE_SPARSITY, epochs=1,
                                         batch_size=8))
    assert abs(report["sparsity"] - PRUNE_SPARSITY) < 0.02  # it did prune
    assert seen["dropouts"] and set(seen["dropouts"]) == {0.0}
    loss = seen["model"].loss
    assert isinstance(loss, keras.losses.CategoricalCrossentropy) and loss.get_config()["label_smoothing"] == 0.1
    assert report["fine_tune"]["label_smoothing"] == 0.1
    # The saved pruned model keeps EfficientNet's own drop rates (they only matter when training).
    from edgecls.train.model_io import load_model

    saved = load_model(mixed_run.run.pruned_model_path)
    rates = [l.rate for l in prune_graph.all_layers(saved.get_layer("backbone")) if isinstance(l, keras.layers.Dropout)]
    assert rates and max(rates) > 0
