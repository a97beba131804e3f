"""Grad-CAM: which regions of the photo raised the score of a class (Selvaraju et al., 2017).

For a convolutional map ``A`` (``[h, w, K]``) and a class score ``y_c`` (the class's logit), each
channel is weighted by the mean of ``d y_c / d A_k`` over the map and the weighted sum is clipped
at zero: the cells whose features pushed *this* class up. The map is the last convolutional one
with more than one cell (MobileNetV2: ``out_relu``, 5x5 at 160 px), the usual choice: its
features are the most class-specific that still have a place.

Works on any Keras functional model with a convolutional layer, nested or not. An edgecls
classifier nests its backbone (:func:`edgecls.train.backbones.get_backbone`): the layer is found
inside it, the backbone is split there, and the layers after it (dropout, the softmax ``Dense``)
are applied on top. The split is checked once against the model's own output, so a model it does
not fit raises an error instead of drawing a wrong map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.core.keras import keras, tf
from edgecls.report.heatmap import normalise

BATCH = 16
"""Images per gradient pass: a MobileNetV2 1.0 at 224 px keeps ~0.5 GB of activations for 16."""
SPLIT_TOLERANCE = 1e-4
"""Largest difference between the split model's scores and the model's own that still counts as the same."""
_CONV_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")


@dataclass(frozen=True)
class Target:
    """The map Grad-CAM reads: ``layer`` inside ``container`` (the model itself, or a model nested in it)."""

    container: Any
    layer: Any
    path: str
    """'backbone/out_relu': how to name it to ``--layer``."""


def _spatial(layer: Any) -> bool:
    """A 4-D output with more than one cell: a map with places in it."""
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):  # a layer called more than once has no single output
        return False
    return len(shape) == 4 and (shape[1] or 2) > 1 and (shape[2] or 2) > 1


def _candidates(container: Any, prefix: str) -> list[Target]:
    """Every spatial layer that follows a convolution, in the order the model runs them; nested models searched too."""
    out: list[Target] = []
    seen_conv = False
    for layer in container.layers:
        if isinstance(layer, keras.Model):
            inner = _candidates(layer, f"{prefix}{layer.name}/")
            out.extend(inner)
            seen_conv = seen_conv or bool(inner)
            continue
        if type(layer).__name__ in _CONV_TYPES:
            seen_conv = True
        if seen_conv and _spatial(layer):
            out.append(Target(container, layer, f"{prefix}{layer.name}"))
    return out


def find_target(model: Any, layer: Optional[str] = None) -> Target:
    """The last convolutional map of ``model``, or the one named ``layer`` ('out_relu' or 'backbone/out_relu')."""
    found = _candidates(model, "")
    if layer:
        named = [t for t in found if t.path == layer or t.path.rsplit("/", 1)[-1] == layer]
        if not named:
            some = ", ".join(t.path for t in found[-5:])
            raise EdgeclsError(f"no convolutional layer {layer!r} with a spatial map in this model; the last ones are: "
                               f"{some or 'none'}")
        return named[-1]
    if not found:
        raise EdgeclsError("this model has no convolutional layer with a spatial map (more than 1x1 cells): "
                           "Grad-CAM has nothing to draw on (a larger --size gives the last map more cells)")
    return found[-1]


def _is_softmax_dense(layer: Any) -> bool:
    return isinstance(layer, keras.layers.Dense) and getattr(layer.activation, "__name__", "") == "softmax"


class GradCam:
    """Grad-CAM maps of one model: ``maps(images)`` -> (``[N, h, w]`` in 0..1, probabilities ``[N, C]``).

    >>> cam = GradCam(model)                       # doctest: +SKIP
    >>> heat, probs = cam.maps(images_uint8)        # doctest: +SKIP
    """

    def __init__(self, model: Any, layer: Optional[str] = None) -> None:
        self.model = model
        self.target = find_target(model, layer)
        container = self.target.container
        outer = list(model.layers)
        if container is model:
            self.before, after = [], []
            end = model.layers[-1]
            # The final softmax Dense is applied by hand, so its logits can be read.
            feature_end = end.input if _is_softmax_dense(end) else model.output
            self.after = [end] if _is_softmax_dense(end) else []
        else:
            at = outer.index(container)
            self.before = [ly for ly in outer[:at] if not isinstance(ly, keras.layers.InputLayer)]
            after = outer[at + 1:]
            feature_end = container.output
            self.after = after
        self.features = keras.Model(container.inputs, [self.target.layer.output, feature_end])
        self._checked = False

    @property
    def layer_path(self) -> str:
        return self.target.path

    def _logits_and_probs(self, h: Any) -> tuple[Any, Any]:
        """The layers after the split; a last softmax Dense gives its logits (Grad-CAM's class score) too."""
        for i, layer in enumerate(self.after):
            if i == len(self.after) - 1 and _is_softmax_dense(layer):
                logits = tf.matmul(h, layer.kernel) + (layer.bias if layer.use_bias else 0.0)
                return logits, tf.nn.softmax(logits)
            h = layer(h, training=False)
        # No softmax Dense at the end: the output is the score (its log, when it is already a probability).
        return tf.math.log(tf.maximum(h, 1e-12)), h

    def _forward(self, x: Any) -> tuple[Any, Any, Any]:
        h = x
        for layer in self.before:
            h = layer(h, training=False)
        conv, end = self.features(h, training=False)
        logits, probs = self._logits_and_probs(end)
        return conv, logits, probs

    def _check_split(self, x: Any, probs: Any) -> None:
        """The pieces must give the model's own output: a graph the split does not fit would draw nonsense."""
        own = np.asarray(self.model(x, training=False), dtype=np.float32)
        diff = float(np.max(np.abs(own - np.asarray(probs, dtype=np.float32)))) if own.size else 0.0
        if own.shape != tuple(probs.shape) or diff > SPLIT_TOLERANCE:
            raise EdgeclsError(f"Grad-CAM cannot split this model at {self.target.path} (its scores differ from the "
                               f"model's own by {diff:.2g}); pass another layer with --layer")
        self._checked = True

    def maps(self, images: np.ndarray, classes: Optional[Sequence[int]] = None) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps of ``classes`` (default: each image's predicted class) and the model's probabilities.

        ``images``: ``[N, S, S, 3]`` raw RGB 0..255 at the model's input size (uint8 or float).
        """
        x_all = np.asarray(images, dtype=np.float32)
        heats, probs_all = [], []
        for start in range(0, len(x_all), BATCH):
            x = tf.constant(x_all[start:start + BATCH])
            with tf.GradientTape() as tape:
                conv, logits, probs = self._forward(x)
                chosen = (tf.argmax(logits, axis=1, output_type=tf.int32) if classes is None
                          else tf.constant(np.asarray(classes[start:start + BATCH], dtype=np.int32)))
                score = tf.gather(logits, chosen, axis=1, batch_dims=1)
            grads = tape.gradient(score, conv)
            if not self._checked:
                self._check_split(x, probs)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # one weight per channel per image
            cam = tf.nn.relu(tf.reduce_sum(weights * conv, axis=-1))
            heats.extend(normalise(c) for c in np.asarray(cam, dtype=np.float32))
            probs_all.append(np.asarray(probs, dtype=np.float32))
        if not heats:
            return np.zeros((0, 1, 1), np.float32), np.zeros((0, 0), np.float32)
        return np.stack(heats), np.concatenate(probs_all)
