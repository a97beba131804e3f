"""The Keras models of a training run around the classifier: the augmenting trainer, the phase's trainable
layers, the optimizer and loss, and the float32 and local copies a run's end needs."""

from __future__ import annotations

from typing import Any

from edgecls.core.keras import keras
from edgecls.train.backbones import get_backbone
from edgecls.train.checkpoint import copy_weights
from edgecls.train.cut import first_trainable


def make_augmentation(seed: int) -> "keras.Sequential":
    """Random flip/rotation/zoom/translation/contrast, active only when ``training=True``.

    Mild settings: photos of objects tolerate small geometric changes; vertical flips or big
    rotations would teach the model views the camera never sees. float32 so mixed precision
    does not round pixel values.
    """
    L = keras.layers
    return keras.Sequential(
        [
            L.RandomFlip("horizontal", seed=seed, name="flip", dtype="float32"),
            L.RandomRotation(0.05, fill_mode="reflect", seed=seed + 1, name="rotation", dtype="float32"),
            L.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2, name="zoom", dtype="float32"),
            L.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed + 3, name="translation", dtype="float32"),
            L.RandomContrast(0.1, seed=seed + 4, name="contrast", dtype="float32"),  # clips to [0, 255] itself
        ],
        name="augment",
    )


def make_trainer(classifier: "keras.Model", *, augment: bool, seed: int) -> "keras.Model":
    """The model ``fit`` sees: augmentation (training only) in front of the classifier."""
    if not augment:
        return classifier
    inp = keras.Input(classifier.input_shape[1:], dtype="float32", name="image")
    out = classifier(make_augmentation(seed)(inp))
    return keras.Model(inp, out, name="trainer")


def set_trainable(classifier: "keras.Model", fraction: float) -> None:
    """Freeze the whole backbone (``fraction`` 0: the head phase) or unfreeze its top ``fraction`` of layers,
    BatchNorm always excepted (it stays in inference mode)."""
    base = get_backbone(classifier)
    if fraction <= 0:
        base.trainable = False
        return
    base.trainable = True
    cut = first_trainable(len(base.layers), fraction)
    for i, layer in enumerate(base.layers):
        if i < cut or isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def compile_for(trainer: "keras.Model", lr: float, label_smoothing: float) -> None:
    trainer.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )


def _float32_config(obj: Any) -> Any:
    """A model config with every layer's dtype policy (``mixed_float16``) replaced by float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("Policy", "DTypePolicy"):
            return "float32"
        return {k: _float32_config(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    return obj


def float32_copy(model: "keras.Model") -> "keras.Model":
    """The same model and weights in a float32 graph: a mixed-precision model must not leak float16 into export.

    Rebuilt from the model's own config, not from the backbone builder, so every layer it has
    is kept (EfficientNet's extra ImageNet-only Rescaling exists only when built with ImageNet
    weights); weights are copied by structure (the copy gets new automatic layer names).
    """
    if keras.mixed_precision.global_policy().name == "float32":
        return model
    prev = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        clean = keras.Model.from_config(_float32_config(model.get_config()))
    finally:
        keras.mixed_precision.set_global_policy(prev)
    copy_weights(model, clean)
    return clean


def local_copy(model: "keras.Model") -> "keras.Model":
    """The model with plain variables: calling a cluster-trained model reads its BatchNorm statistics
    through a collective every worker must join, so the chief evaluates and saves a copy."""
    clean = keras.Model.from_config(model.get_config())
    copy_weights(model, clean)
    return clean
