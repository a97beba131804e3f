"""16x8 files (int16 activations, int8 weights) for the device-side tests: edgecls does not export them
(on the benchmark sets they never beat int8 and ran ~26x slower under XNNPACK), but a device may be
given one made elsewhere, and its runtime must read it right."""

from __future__ import annotations

import numpy as np


def convert_16x8(model, representative: np.ndarray, io: str) -> bytes:
    """``model`` as a 16x8 TFLite file with ``io`` (float32 or int16) in/out, calibrated on ``representative``."""
    from edgecls.core.keras import tf
    from edgecls.optimize.convert import INPUT_NAME

    shape = [1, *[int(d) for d in model.input_shape[1:]]]
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32, name=INPUT_NAME))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    conv.experimental_lower_to_saved_model = False
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([img[None].astype(np.float32)] for img in representative)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    conv.inference_input_type = conv.inference_output_type = {"float32": tf.float32, "int16": tf.int16}[io]
    return bytes(conv.convert())
