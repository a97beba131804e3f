"""Pruning: only Conv2D/Dense are wrapped (nested backbone included), measured sparsity, files."""

from __future__ import annotations

import numpy as np
import pytest

from edgecls.core.config import PruneConfig
from edgecls.core.errors import EdgeclsError


def _flat_model():
    from edgecls.core.keras import keras

    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inp)  # tfmot refuses this one
    x = keras.layers.Conv2D(8, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out)


def _wrapper_names(model):
    import tensorflow_model_optimization as tfmot  # noqa: F401 - after edgecls.core.keras via _flat_model

    from edgecls.optimize.prune_graph import all_layers

    wrapped, plain = set(), set()
    for layer in all_layers(model):
        if type(layer).__name__ == "PruneLowMagnitude":
            wrapped.add(layer.layer.name)
        else:
            plain.add(layer.name)
    return wrapped, plain


def _wrap_fn():
    from edgecls.core.keras import keras  # noqa: F401 - binds tfmot to tf_keras
    import tensorflow_model_optimization as tfmot

    from edgecls.optimize.prune_graph import is_prunable

    return lambda layer: tfmot.sparsity.keras.prune_low_magnitude(layer) if is_prunable(layer) else layer


def test_only_conv2d_and_dense_are_wrapped_in_a_flat_model():
    from edgecls.optimize.prune_graph import rebuild

    pruning = rebuild(_flat_model(), _wrap_fn(), keep_training_flag=False)
    wrapped, plain = _wrapper_names(pruning)
    assert wrapped == {"conv", "predictions"}
    assert {"preprocess", "bn", "dw"} <= plain


def test_nested_backbone_layers_are_wrapped_too():
    from edgecls.train.backbones import BackboneChoice, build_classifier
    from edgecls.optimize.prune_graph import is_prunable, rebuild

    model = build_classifier(BackboneChoice("mobilenet_v2", size=32, alpha=0.35, weights="none"), 3)
    n_prunable = sum(is_prunable(layer) for layer in model.get_layer("backbone").layers)
    pruning = rebuild(model, _wrap_fn(), keep_training_flag=False)
    wrapped, plain = _wrapper_names(pruning)
    assert len(wrapped) == n_prunable + 1  # every backbone Conv2D + the Dense head
    assert "predictions" in wrapped
    assert not any("depthwise" in name for name in wrapped)
    assert pruning.get_layer("backbone") is not None  # the contract's layer name survives


@pytest.mark.slow
def test_prune_run_reaches_the_target_and_reports_measured_figures(exported_run):
    from edgecls.core.keras import keras
    from edgecls.optimize.prune_graph import measure_sparsity
    from edgecls.train.model_io import load_model

    r = exported_run.pruning
    run = exported_run.path
    assert (run / "model_pruned.keras").is_file() and (run / "pruning.json").is_file()
    assert r["target_sparsity"] == 0.5
    assert abs(r["sparsity"] - 0.5) < 0.02
    assert r["gzip_bytes_after"] < r["gzip_bytes_before"]
    # The accuracies are the saved models' own on the held-out split, recomputed here.
    from edgecls import data
    from edgecls.core.rundir import RunDir

    root, split = data.load_split(RunDir(run))
    assert r["eval_split"] == "test" and r["n_eval_images"] == len(split["test"])
    x, y = data.load_images(root, split["test"], 64)
    for name, key in (("model.keras", "accuracy_before"), ("model_pruned.keras", "accuracy_after")):
        probs = load_model(run / name).predict(x.astype(np.float32), verbose=0)
        assert r[key] == pytest.approx(float(np.mean(probs.argmax(1) == y)), abs=1e-6), key

    # Re-measure from the saved file, independently of the report.
    model = load_model(run / "model_pruned.keras")
    # The trained model's trainable flags come back, a backbone unfrozen only at the top included.
    trained = [layer.trainable for layer in load_model(run / "model.keras").get_layer("backbone").layers]
    assert 0 < sum(trained) < len(trained)  # the run fine-tuned the top only: the check can tell
    assert [layer.trainable for layer in model.get_layer("backbone").layers] == trained
    assert [layer.name for layer in model.layers] == ["image", "backbone", "dropout", "predictions", "temperature",
                                                   "probabilities"]  # calibrated again after pruning
    assert model.input_shape[1:3] == (64, 64)
    overall, per_layer = measure_sparsity(model)
    assert abs(overall - r["sparsity"]) < 1e-3
    assert set(per_layer) == set(r["per_layer"])
    kernels = [layer for layer in model.get_layer("backbone").layers if isinstance(layer, keras.layers.Conv2D)]
    zeros = sum(int(np.sum(k.kernel.numpy() == 0)) for k in kernels)
    assert zeros / sum(k.kernel.numpy().size for k in kernels) == pytest.approx(0.5, abs=0.03)
    for layer in model.get_layer("backbone").layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # never pruned
            assert np.mean(layer.depthwise_kernel.numpy() == 0) < 0.1


@pytest.mark.slow
def test_prune_refuses_to_overwrite_without_force(exported_run):
    from edgecls.optimize.prune import prune_run

    with pytest.raises(EdgeclsError, match="exists; pass --force"):
        prune_run(PruneConfig(run=str(exported_run.path), sparsity=0.5, epochs=1))


@pytest.mark.parametrize("sparsity", [0.0, 1.0, 1.5])
def test_prune_rejects_impossible_sparsity(tmp_path, sparsity):
    from edgecls.optimize.prune import prune_run

    with pytest.raises(EdgeclsError, match=r"--sparsity must be a finite number in \(0, 1\), got"):
        prune_run(PruneConfig(run=str(tmp_path), sparsity=sparsity))
