"""Backbone registry: a name -> a builder that returns a feature extractor taking raw RGB 0-255.

Each builder puts its backbone's own preprocessing *inside* the model, so training, export,
parity and the device all feed the same raw pixels and can never normalise twice:

- ``mobilenet_v2``: a ``Rescaling(1/127.5, offset=-1)`` layer named ``preprocess`` (the
  application has none).
- ``mobilenet_v3_small`` / ``mobilenet_v3_large``: tf_keras' own ``include_preprocessing=True``
  (the same Rescaling to [-1, 1]); we add nothing.
- ``efficientnet_b0``: tf_keras' own ``Rescaling(1/255)`` + ``Normalization`` stem; we add nothing.

The classifier built by :func:`build_classifier` is::

    image (Input, float32 [S,S,3], 0..255)
      -> backbone (nested keras.Model, preprocessing included, called with training=False)
      -> dropout -> predictions (Dense softmax, float32 even under mixed precision)

The layer names ``backbone`` and ``predictions`` are part of the contract: fine-tuning and
pruning find the backbone with ``model.get_layer(BACKBONE_LAYER)``.

What to build is one :class:`BackboneChoice` (name, input size, width, minimalistic, weights),
made from a run's config by :meth:`BackboneChoice.of`. This module imports TensorFlow only inside
builders, so ``available()`` and :meth:`BackboneChoice.check` are cheap (the CLI validates options
before loading TF).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from edgecls.core.errors import EdgeclsError

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.core.keras import keras

BACKBONE_LAYER = "backbone"
INPUT_LAYER = "image"
PREDICTIONS_LAYER = "predictions"
PREPROCESS_LAYER = "preprocess"
MIN_SIZE_PX = 32  # the MobileNet/EfficientNet applications refuse smaller inputs

# A builder: (size, alpha, minimalistic, weights) -> keras.Model taking 0..255 input.
# ``weights`` is "imagenet" or None here; weight files are loaded by build_backbone.
Builder = Callable[[int, float, bool, Optional[str]], "keras.Model"]


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone and what its built-in preprocessing does."""

    name: str
    builder: Builder
    preprocessing: str
    """Human-readable description of the scaling built into the model."""
    uses_alpha: bool
    uses_minimalistic: bool
    imagenet_alphas: tuple[float, ...]
    """Width multipliers the Keras weight store has ImageNet weights for."""


_REGISTRY: dict[str, BackboneSpec] = {}


def register(
    name: str,
    *,
    preprocessing: str,
    uses_alpha: bool = False,
    uses_minimalistic: bool = False,
    imagenet_alphas: tuple[float, ...] = (1.0,),
) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``name`` with a description of its preprocessing."""

    def deco(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} registered twice")
        _REGISTRY[name] = BackboneSpec(name, builder, preprocessing, uses_alpha, uses_minimalistic, imagenet_alphas)
        return builder

    return deco


def available() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    """The registered backbone; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EdgeclsError(f"unknown backbone {name!r}; choose one of: {', '.join(available())}") from None


@dataclass(frozen=True)
class BackboneChoice:
    """Which registered backbone to build, at what input size and width, with which starting weights.

    ``weights``: "imagenet" (downloaded by Keras), "none" (random init) or a path to a Keras
    no-top weights file made for this exact backbone.
    """

    name: str
    size: int
    alpha: float = 1.0
    minimalistic: bool = False
    weights: str | None = "none"

    @classmethod
    def of(cls, cfg: Any) -> "BackboneChoice":
        """The choice a run's config makes (its ``backbone``, ``size``, ``alpha``, ``minimalistic`` and ``weights``)."""
        return cls(cfg.backbone, cfg.size, cfg.alpha, cfg.minimalistic, cfg.weights)

    def check(self) -> None:
        """Raise one :class:`EdgeclsError` for an option this backbone cannot take; imports no TensorFlow."""
        name, size, alpha, minimalistic, weights = self.name, self.size, self.alpha, self.minimalistic, self.weights
        spec = get_spec(name)
        if not isinstance(size, int) or size < MIN_SIZE_PX:
            raise EdgeclsError(f"size must be an integer >= {MIN_SIZE_PX} pixels, got {size}")
        if not alpha > 0:
            raise EdgeclsError(f"alpha must be > 0, got {alpha}")
        if alpha != 1.0 and not spec.uses_alpha:
            raise EdgeclsError(f"{name} has no width multiplier; leave alpha at 1.0")
        if minimalistic and not spec.uses_minimalistic:
            raise EdgeclsError(f"--minimalistic only applies to mobilenet_v3_small/large, not {name}")
        w = _weights_kind(weights)
        if w == "imagenet":
            alphas = (1.0,) if (minimalistic and spec.uses_minimalistic) else spec.imagenet_alphas
            if alpha not in alphas:
                raise EdgeclsError(
                    f"ImageNet weights for {name}{' minimalistic' if minimalistic else ''} exist only for "
                    f"alpha in {', '.join(str(a) for a in alphas)}; got {alpha} (use --weights none or a weights file)"
                )
        elif w == "path" and not Path(str(weights)).is_file():
            raise EdgeclsError(f"weights file not found: {weights} (use 'imagenet', 'none' or a Keras .h5 weights file)")

    def describe(self) -> str:
        """The backbone as a person names it: ``mobilenet_v2 alpha 0.35``."""
        parts = [self.name]
        if get_spec(self.name).uses_alpha:
            parts.append(f"alpha {self.alpha:g}")
        if self.minimalistic:
            parts.append("minimalistic")
        return " ".join(parts)


def is_pretrained(weights: str | None) -> bool:
    """Whether ``weights`` loads pretrained features (imagenet or a file) rather than random init."""
    return _weights_kind(weights) != "none"


def _weights_kind(weights: str | None) -> str:
    if weights is None or str(weights).lower() == "none":
        return "none"
    if str(weights).lower() == "imagenet":
        return "imagenet"
    return "path"


# -- builders ---------------------------------------------------------------------------------


@register(
    "mobilenet_v2",
    preprocessing="Rescaling(1/127.5, offset=-1): [0,255] -> [-1,1] (added by edgecls)",
    uses_alpha=True,
    imagenet_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
)
def _mobilenet_v2(size: int, alpha: float, minimalistic: bool, weights: Optional[str]) -> "keras.Model":
    from edgecls.core.keras import keras

    inp = keras.Input((size, size, 3), name="pixels")
    # The application has no preprocessing layer; building it on input_tensor makes the
    # Rescaling part of the same (nested) backbone model, like MobileNetV3's own.
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=PREPROCESS_LAYER)(inp)
    return keras.applications.MobileNetV2(
        input_shape=(size, size, 3), input_tensor=x, alpha=alpha, include_top=False, weights=weights, pooling="avg"
    )


def _mobilenet_v3(large: bool):
    def build(size: int, alpha: float, minimalistic: bool, weights: Optional[str]) -> "keras.Model":
        from edgecls.core.keras import keras

        app = keras.applications.MobileNetV3Large if large else keras.applications.MobileNetV3Small
        # include_preprocessing=True: tf_keras adds Rescaling(1/127.5, offset=-1) itself.
        return app(
            input_shape=(size, size, 3),
            alpha=alpha,
            minimalistic=minimalistic,
            include_top=False,
            weights=weights,
            pooling="avg",
            include_preprocessing=True,
        )

    return build


for _name, _large in (("mobilenet_v3_small", False), ("mobilenet_v3_large", True)):
    register(
        _name,
        preprocessing="Rescaling(1/127.5, offset=-1) built into tf_keras MobileNetV3 (include_preprocessing=True)",
        uses_alpha=True,
        uses_minimalistic=True,
        imagenet_alphas=(0.75, 1.0),
    )(_mobilenet_v3(large=_large))


@register(
    "efficientnet_b0",
    preprocessing="Rescaling(1/255) + Normalization(ImageNet mean/var) built into tf_keras EfficientNet",
)
def _efficientnet_b0(size: int, alpha: float, minimalistic: bool, weights: Optional[str]) -> "keras.Model":
    from edgecls.core.keras import keras

    # EfficientNet's stem already rescales and normalises; with weights=None its Normalization
    # holds mean 0 / variance 1, so it is the identity after Rescaling(1/255).
    return keras.applications.EfficientNetB0(
        input_shape=(size, size, 3), include_top=False, weights=weights, pooling="avg"
    )


# -- public builders --------------------------------------------------------------------------


def build_backbone(choice: BackboneChoice) -> "keras.Model":
    """The feature extractor (global-average-pooled), taking raw RGB 0..255 ``[N,size,size,3]``.

    A weights file that does not fit raises one :class:`EdgeclsError` naming the mismatch.
    """
    choice.check()
    kind = _weights_kind(choice.weights)
    try:
        base = get_spec(choice.name).builder(choice.size, choice.alpha, choice.minimalistic,
                                             "imagenet" if kind == "imagenet" else None)
    except Exception as e:  # noqa: BLE001 - download failures surface as many types
        if kind == "imagenet":
            raise EdgeclsError(
                f"could not get ImageNet weights for {choice.describe()} ({e}); "
                "check the network, or use --weights none or --weights PATH"
            ) from None
        raise
    if kind == "path":
        load_backbone_weights(base, str(choice.weights), what=choice.describe())
    base._name = BACKBONE_LAYER  # one stable name to find it by, whatever the application called it
    return base


def load_backbone_weights(base: "keras.Model", path: str | os.PathLike, *, what: str) -> None:
    """Load a no-top weights file into ``base``; any mismatch becomes one clear error.

    Loaded topologically (``by_name=False``): a file from another architecture or width fails
    on layer count or on the first shape mismatch instead of silently loading nothing, which
    ``by_name=True`` does when no name matches.
    """
    try:
        base.load_weights(str(path))
    except (ValueError, OSError, KeyError) as e:
        detail = " ".join(str(e).split())
        if len(detail) > 300:
            detail = detail[:300] + "..."
        raise EdgeclsError(
            f"weights file {path} does not fit {what} ({detail}); use a no-top weights file saved from the "
            "same backbone and width, or --weights none/imagenet"
        ) from None


def build_classifier(backbone: BackboneChoice, num_classes: int, *, dropout: float = 0.2,
                     seed: int | None = None) -> "keras.Model":
    """Backbone + dropout + softmax head; input raw RGB 0..255 float32, output float32 probabilities.

    The dropout layer draws from a ``tf.random.Generator`` seeded with ``seed``: its state is a
    variable a checkpoint can hold (:func:`edgecls.train.checkpoint.rng_states`), so a resumed run
    drops the same units as an uninterrupted one. TF's legacy stateful ops keep theirs out of reach.
    """
    from edgecls.core.keras import keras

    if num_classes < 2:
        raise EdgeclsError(f"a classifier needs at least 2 classes, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise EdgeclsError(f"dropout must be in [0, 1), got {dropout}")
    base = build_backbone(backbone)
    inp = keras.Input((backbone.size, backbone.size, 3), dtype="float32", name=INPUT_LAYER)
    # training=False keeps BatchNorm in inference mode even when the top of the backbone is
    # unfrozen for fine-tuning: small datasets would otherwise wreck the pretrained statistics.
    x = base(inp, training=False)
    x = keras.layers.Dropout(dropout, seed=seed, rng_type="stateful", name="dropout")(x)
    # float32 output layer: under mixed_float16 the softmax stays numerically safe and the
    # model's output dtype is float32 for export and parity.
    out = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=PREDICTIONS_LAYER)(x)
    return keras.Model(inp, out, name=f"edgecls_{backbone.name}")


def calibrate_batchnorm(base: "keras.Model", images) -> None:
    """Set every BatchNorm's moving mean/variance from one batch of training images.

    For a randomly initialised backbone (``weights=none``): with the untouched statistics
    (mean 0, variance 1) activations shrink layer after layer and a frozen random MobileNetV2
    outputs features of ~1e-11, which no head can learn from. One forward pass in training
    mode with momentum 0 makes the inference-mode network normalise like the training-mode one
    (data-dependent initialisation), so the frozen random backbone yields usable random features
    and the usual frozen-BatchNorm recipe applies unchanged. Pretrained backbones skip this.
    """
    from edgecls.core.keras import keras

    bns = [layer for layer in base.submodules if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.momentum = 0.0  # moving statistic := this batch's statistic
        base(images, training=True)
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m


def get_backbone(model: "keras.Model") -> "keras.Model":
    """The nested backbone model of a classifier built by :func:`build_classifier`."""
    return model.get_layer(BACKBONE_LAYER)
