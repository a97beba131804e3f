"""Quantization-aware training (tfmot) of a run's classifier, distilled from the float model.

Two things tfmot refuses, and how they are handled:

- ``quantize_apply`` rejects nested models, and every edgecls classifier nests its backbone.
  The backbone is *flattened*: ``clone_model(backbone, input_tensors=x)`` re-creates its layers
  on the outer graph's tensor, so the outer model becomes one flat graph; weights are copied
  layer by layer (same names and order).
- ``Rescaling`` (the preprocessing inside the model) is not in tfmot's registry. It is annotated
  with a config that quantizes nothing; the converter calibrates its output range from the
  representative images as in post-training quantization.

tfmot initialises each activation range from the first training batch and then follows a moving
average (decay 0.999). This is a short repair step, not a full QAT training: on the test suite's
tiny random-weight run (near-tied scores) it reached top-1 agreement 0.58-0.67 where plain PTQ
reached 0.92, so it does not always help; export keeps whichever candidate passes, or the best.

BatchNorm layers are frozen (``trainable=False`` = inference mode in Keras 2, as the trained
classifier calls its backbone with ``training=False``), and the fine-tune targets are the float
model's own probabilities: parity asks the int8 file to agree with the float model, so that
is what the short fine-tune optimizes (it also needs no labels beyond the training images).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgecls.core.errors import EdgeclsError

QAT_BATCH = 16


def flatten(model: Any) -> Any:
    """The same classifier as one flat functional graph (nested models inlined), same weights."""
    from edgecls.core.keras import keras

    inp = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name=model.layers[0].name)
    x = inp
    for layer in model.layers[1:]:
        if isinstance(layer, keras.Model):
            flat = keras.models.clone_model(layer, input_tensors=x)
            src = [lyr for lyr in layer.layers if not isinstance(lyr, keras.layers.InputLayer)]
            dst = [lyr for lyr in flat.layers if not isinstance(lyr, keras.layers.InputLayer)]
            for a, b in zip(src, dst):
                b.set_weights(a.get_weights())
            x = flat.outputs[0]
        else:
            new = layer.__class__.from_config(layer.get_config())
            x = new(x)
            new.set_weights(layer.get_weights())
    return keras.Model(inp, x, name=model.name)


def _no_op_config():
    import tensorflow_model_optimization as tfmot

    class NoOpQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """Leave a layer (Rescaling) unquantized inside a QAT model."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    return NoOpQuantizeConfig


def quantize_aware(model: Any) -> Any:
    """A tfmot QAT model of ``model`` (flattened; Rescaling left alone; BatchNorm frozen)."""
    from edgecls.core.keras import keras  # before tfmot: it must bind to tf_keras
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras
    no_op = _no_op_config()

    def annotate(layer: Any) -> Any:
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if isinstance(layer, keras.layers.Rescaling):
            return qk.quantize_annotate_layer(layer.__class__.from_config(layer.get_config()), no_op())
        new = layer.__class__.from_config(layer.get_config())
        # The trained classifier's backbone is frozen (trainable=False in its config): QAT must be
        # able to move the weights, except BatchNorm (frozen = inference mode, as in training).
        new.trainable = not isinstance(new, keras.layers.BatchNormalization)
        return qk.quantize_annotate_layer(new)

    flat = flatten(model)
    annotated = keras.models.clone_model(flat, clone_function=annotate)
    annotated.set_weights(flat.get_weights())
    try:
        with qk.quantize_scope({"NoOpQuantizeConfig": no_op}):
            return qk.quantize_apply(annotated)
    except Exception as e:  # noqa: BLE001 - tfmot raises ValueError/RuntimeError for unsupported layers
        raise EdgeclsError(f"quantization-aware training cannot wrap this model: {str(e).strip()[:300]}") from None


def qat_finetune(model: Any, images: np.ndarray, *, epochs: int, learning_rate: float, seed: int) -> tuple[Any, dict]:
    """Fine-tune a QAT copy of ``model`` to reproduce ``model``'s probabilities on ``images``."""
    from edgecls.core.keras import keras, tf

    if epochs < 1:
        raise EdgeclsError(f"--qat-epochs must be >= 1, got {epochs}")
    x = images.astype(np.float32)
    targets = np.asarray(model.predict(x, batch_size=QAT_BATCH * 2, verbose=0), dtype=np.float32)
    keras.utils.set_random_seed(seed)
    q = quantize_aware(model)
    q.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.KLDivergence())
    ds = tf.data.Dataset.from_tensor_slices((x, targets)).shuffle(len(x), seed=seed).batch(QAT_BATCH)
    history = q.fit(ds, epochs=epochs, verbose=0)
    info = {"epochs": epochs, "learning_rate": learning_rate, "images": int(len(x)),
            "steps": int(epochs * math.ceil(len(x) / QAT_BATCH)),
            "final_kl": float(history.history["loss"][-1]), "targets": "float model probabilities"}
    return q, info
