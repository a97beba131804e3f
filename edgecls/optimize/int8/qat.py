"""Quantization-aware training (tfmot) of a run's classifier, distilled from the float model.

Two things tfmot refuses, and how they are handled:

- ``quantize_apply`` rejects nested models, and every edgecls classifier nests its backbone.
  The backbone is *flattened*: ``clone_model(backbone, input_tensors=x)`` re-creates its layers
  on the outer graph's tensor, so the outer model becomes one flat graph; weights are copied
  layer by layer (same names and order).
- ``Rescaling`` (the preprocessing inside the model) is not in tfmot's registry. It is annotated
  with a config that quantizes nothing; the converter calibrates its output range from the
  representative images as in post-training quantization.

tfmot starts every activation range at -6..6 and moves it by a moving average with decay 0.999
(``quant_ops.MovingAvgQuantize``, no first-batch initialisation), so a short fine-tune of a few
dozen steps never leaves -6..6: ReLU6 outputs lose half their resolution, linear bottlenecks and
logits beyond +-6 are clipped, and the converted file disagreed with the float model on half the
images (BENCHMARKS.md, "Earlier int8 measurements that still hold"). :func:`init_activation_ranges` therefore starts
each range at the float model's own min/max on the calibration images (what post-training
quantization would use), so QAT starts where PTQ is and the fine-tune only has to improve on it.
The weight quantizers had the same -6..6 start (:func:`init_weight_ranges`): before the first
training step the QAT model agreed with the float model on 18% of the hard benchmark set.

BatchNorm layers are frozen (``trainable=False`` = inference mode in Keras 2, as the trained
classifier calls its backbone with ``training=False``), and the fine-tune targets are the float
model's own probabilities: parity asks the int8 file to agree with the float model, so that
is what the short fine-tune optimizes (it also needs no labels beyond the training images).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.optimize.int8.flat import flatten
from edgecls.optimize.int8.method import Built, Context, Method

QAT_BATCH = 16


def _no_op_config():
    import tensorflow_model_optimization as tfmot

    # tfmot has a NoOpQuantizeConfig (default_8bit.default_8bit_quantize_configs) but does not export
    # it: tfmot.quantization.keras.default_8bit only offers the scheme, registry, layout transform and
    # transforms. Importing it from tfmot's python.core internals would tie edgecls to a private path,
    # so it is written once here, and OutputQuantizeConfig below subclasses it.
    class NoOpQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """Leave a layer (Rescaling; a BatchNorm fused with its conv and ReLU) unquantized inside a QAT model."""

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


def _depthwise_config():
    """QuantizeConfig of a DepthwiseConv2D with one weight scale per channel.

    tfmot's default makes the depthwise kernel [kh, kw, C, 1] "per axis" on its last axis, of
    size 1: one scale for all C channels. MobileNetV2's first depthwise kernel has channels ~100x
    larger than others, so most channels rounded to 0 and the QAT model (fake quantization, before
    any training) agreed with the float model on 10% of 8-class images; TFLite's converter
    quantizes depthwise kernels per channel, and so does this config."""
    from edgecls.core.keras import tf
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras

    class DepthwiseChannelQuantizer(qk.quantizers.Quantizer):
        """Symmetric int8 (narrow range, as TFLite) per channel of a [kh, kw, C, 1] kernel."""

        def build(self, tensor_shape, name, layer):
            return {}

        def __call__(self, inputs, training, weights, **kwargs):
            k = tf.transpose(inputs, (0, 1, 3, 2))  # channels last for the per-channel op
            m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(k), axis=[0, 1, 2]), 1e-8))
            q = tf.quantization.fake_quant_with_min_max_vars_per_channel(k, -m, m, num_bits=8, narrow_range=True)
            return tf.transpose(q, (0, 1, 3, 2))

        def get_config(self):
            return {}

    class DepthwisePerChannelConfig(qk.QuantizeConfig):
        def __init__(self):
            self.weights = DepthwiseChannelQuantizer()

        def get_weights_and_quantizers(self, layer):
            return [(layer.depthwise_kernel, self.weights)]

        def get_activations_and_quantizers(self, layer):
            return []  # the converter folds the following BatchNorm in: its output is what is quantized

        def set_quantize_weights(self, layer, quantize_weights):
            layer.depthwise_kernel = quantize_weights[0]

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    class OutputQuantizeConfig(_no_op_config()):
        """Quantize only the output (the BatchNorm after such a depthwise conv, folded into it by TFLite)."""

        def get_output_quantizers(self, layer):
            return [qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                         narrow_range=False)]

    return DepthwisePerChannelConfig, DepthwiseChannelQuantizer, OutputQuantizeConfig


def quantize_aware(model: Any) -> Any:
    """A tfmot QAT model of ``model`` (flattened; Rescaling left alone; BatchNorm frozen)."""
    from edgecls.core.keras import keras  # before tfmot: it must bind to tf_keras
    import tensorflow_model_optimization as tfmot

    qk = tfmot.quantization.keras
    no_op = _no_op_config()
    depthwise, depthwise_quantizer, output_only = _depthwise_config()
    flat = flatten(model)
    after_depthwise = {layer.name for layer in flat.layers if isinstance(layer, keras.layers.BatchNormalization)
                       and isinstance(layer.inbound_nodes[0].inbound_layers, keras.layers.DepthwiseConv2D)}
    # TFLite fuses depthwise + BatchNorm + ReLU into one op with one output quantization (the ReLU's
    # range); quantizing the BatchNorm output as well would round it on its own, wider range first.
    # tfmot's Conv2DBatchNormReLUQuantize does the same for Conv2D, but skips layers that carry a
    # custom config, as these depthwise convs do.
    fused_relu = {name for name in after_depthwise if _feeds_only_relu(flat.get_layer(name), keras)}

    def annotate(layer: Any) -> Any:
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if isinstance(layer, keras.layers.Rescaling):
            return qk.quantize_annotate_layer(layer.__class__.from_config(layer.get_config()), no_op())
        new = layer.__class__.from_config(layer.get_config())
        # The trained classifier's backbone is frozen (trainable=False in its config): QAT must be
        # able to move the weights, except BatchNorm (frozen = inference mode, as in training).
        new.trainable = not isinstance(new, keras.layers.BatchNormalization)
        if isinstance(new, keras.layers.DepthwiseConv2D):
            return qk.quantize_annotate_layer(new, depthwise())
        if new.name in fused_relu:
            return qk.quantize_annotate_layer(new, no_op())
        if new.name in after_depthwise:
            return qk.quantize_annotate_layer(new, output_only())
        return qk.quantize_annotate_layer(new)

    annotated = keras.models.clone_model(flat, clone_function=annotate)
    annotated.set_weights(flat.get_weights())
    try:
        with qk.quantize_scope({"NoOpQuantizeConfig": no_op, "DepthwisePerChannelConfig": depthwise,
                                "DepthwiseChannelQuantizer": depthwise_quantizer,
                                "OutputQuantizeConfig": output_only}):
            return qk.quantize_apply(annotated)
    except Exception as e:  # noqa: BLE001 - tfmot raises ValueError/RuntimeError for unsupported layers
        raise EdgeclsError(f"quantization-aware training cannot wrap this model: {str(e).strip()[:300]}") from None


def _feeds_only_relu(layer: Any, keras: Any) -> bool:
    consumers = [n.outbound_layer for n in layer.outbound_nodes]
    return len(consumers) == 1 and isinstance(consumers[0], keras.layers.ReLU)


def init_weight_ranges(q: Any, images: np.ndarray) -> None:
    """Set every weight quantizer's range to its weights' min/max, as the first training step would.

    tfmot's weight quantizers (LastValueQuantizer) create their per-channel min/max variables at
    -6..6 and only assign the weights' real range while *training*; in inference they use the
    variables as they are. A QAT model evaluated (or converted) before its first step therefore
    rounded every kernel on a -6..6 grid (step 0.047: most of MobileNetV2's weights, |w| < 0.5,
    kept one or two levels) and agreed with the float model on 18% of the hard benchmark set's
    images; with the ranges set it starts at 91% (tools/bench_quant.py, 300 calibration images). One forward pass in training mode runs
    tfmot's own assignment; BatchNorm is frozen (inference mode) and the activation ranges it nudges
    (moving average, decay 0.999) are set exactly by :func:`init_activation_ranges` afterwards."""
    q(np.asarray(images[:1], dtype=np.float32), training=True)


def _range_variables(wrapper: Any) -> dict[str, Any]:
    """{'output'|'pre_activation'|'quantize_layer': (min_var, max_var)} of one tfmot layer (not weights)."""
    out: dict[str, list] = {}
    for v in wrapper.weights:
        short = v.name.split("/")[-1].split(":")[0]
        for kind in ("output", "pre_activation", "quantize_layer"):
            for end, i in (("_min", 0), ("_max", 1)):
                if short == kind + end:
                    out.setdefault(kind, [None, None])[i] = v
    return {k: (v[0], v[1]) for k, v in out.items() if v[0] is not None and v[1] is not None}


def _linear_twin(layer: Any) -> Any:
    """``layer`` without its activation (same weights): what a pre-activation quantizer sees."""
    cfg = layer.get_config()
    cfg["activation"] = "linear"
    twin = layer.__class__.from_config(cfg)
    twin.build(layer.input_shape)
    twin.set_weights(layer.get_weights())
    return twin


def init_activation_ranges(q: Any, model: Any, images: np.ndarray) -> int:
    """Set every activation range of QAT model ``q`` to the float ``model``'s min/max on ``images``
    (0 always inside, as TFLite requires). Returns how many ranges were set."""
    from edgecls.core.keras import keras

    flat = flatten(model)
    flat_names = {layer.name for layer in flat.layers}
    targets: list[tuple[Any, Any, Any]] = []  # (min_var, max_var, probe output)
    for wrapper in q.layers:
        ranges = _range_variables(wrapper)
        if "quantize_layer" in ranges:
            targets.append((*ranges["quantize_layer"], flat.input))
        inner = getattr(wrapper, "layer", None)
        if inner is None or inner.name not in flat_names:
            continue
        src = flat.get_layer(inner.name)
        if "output" in ranges:
            targets.append((*ranges["output"], src.output))
        if "pre_activation" in ranges:
            targets.append((*ranges["pre_activation"], _linear_twin(src)(src.input)))
    if not targets:
        return 0
    probe = keras.Model(flat.input, [t[2] for t in targets])
    lo = np.full(len(targets), np.inf)
    hi = np.full(len(targets), -np.inf)
    for start in range(0, len(images), QAT_BATCH):
        outs = probe(images[start:start + QAT_BATCH].astype(np.float32), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        lo = np.minimum(lo, [float(np.min(o)) for o in outs])
        hi = np.maximum(hi, [float(np.max(o)) for o in outs])
    for (vmin, vmax, _), a, b in zip(targets, lo, hi):
        vmin.assign(min(a, 0.0))
        vmax.assign(max(b, 0.0))
    return len(targets)


def qat_finetune(model: Any, images: np.ndarray, *, epochs: int, learning_rate: float, seed: int) -> tuple[Any, dict]:
    """Fine-tune a QAT copy of ``model`` to reproduce ``model``'s probabilities on ``images``."""
    from edgecls.core.keras import keras, tf

    x = images.astype(np.float32)
    targets = np.asarray(model.predict(x, batch_size=QAT_BATCH * 2, verbose=0), dtype=np.float32)
    keras.utils.set_random_seed(seed)
    q = quantize_aware(model)
    init_weight_ranges(q, x)
    ranges = init_activation_ranges(q, model, x)
    start = np.asarray(q.predict(x, batch_size=QAT_BATCH * 2, verbose=0), dtype=np.float32)
    q.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.KLDivergence())
    ds = tf.data.Dataset.from_tensor_slices((x, targets)).shuffle(len(x), seed=seed).batch(QAT_BATCH)
    history = q.fit(ds, epochs=epochs, verbose=0)
    loss = float(history.history["loss"][-1])
    if not math.isfinite(loss):
        raise EdgeclsError(f"quantization-aware training diverged (loss {loss} after {epochs} epoch(s)); "
                           "lower --qat-learning-rate")
    info = {"epochs": epochs, "learning_rate": learning_rate, "images": int(len(x)),
            "steps": int(epochs * math.ceil(len(x) / QAT_BATCH)),
            "final_kl": loss, "targets": "float model probabilities",
            "activation_ranges_initialised": ranges,
            "start_agreement": float(np.mean(start.argmax(1) == targets.argmax(1)))}
    return q, info


class QAT(Method):
    """Quantization-aware training: a short tfmot fine-tune distilled from the float model, then converted."""

    name = "qat"
    summary = "quantization-aware training"

    def __init__(self, epochs: int, learning_rate: float) -> None:
        self.epochs, self.learning_rate = epochs, learning_rate

    def build(self, ctx: Context) -> Optional[Built]:
        q, info = qat_finetune(ctx.model, ctx.representative, epochs=self.epochs, learning_rate=self.learning_rate,
                               seed=ctx.seed)
        return Built(ctx.convert(q), record={"qat": info})
