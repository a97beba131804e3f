"""The classifier as the IMX500 runs it: the run's architecture without its input scaling.

``imxconv-tf`` refuses the ``Rescaling`` layer that edgecls models carry (pixels 0..255 ->
[-1, 1]), so the network given to Sony's tools starts one step later: it takes [-1, 1] input and
the sensor's ISP does the scaling (the packager derives it from the input tensor's quantization;
the card records it). Everything else is the run's own builder's architecture
(:func:`edgecls.train.backbones.build_classifier`: application backbone, global average pooling,
dropout, softmax ``predictions``), built here with whatever Keras 2 module is passed in: this
runs inside the Sony venv (TensorFlow 2.15's ``tf.keras``), where the host's tf_keras 2.21
``.keras`` file does not load. The weights come over in order and are checked by shape; the
stage then checks the rebuilt float model against the host model's outputs on the gate's images.

Pure standard library at import: the worker imports it before TensorFlow.
"""

from __future__ import annotations

from typing import Any

SUPPORTED_BACKBONES = ("mobilenet_v2",)
"""Checked end to end here (MCT + imxconv-tf). MobileNetV3 (hard-swish) and EfficientNet (an in-graph
Normalization the sensor cannot take over) were not tried."""
INPUT_RANGE = (-1.0, 1.0)
"""What the network takes: MobileNetV2's preprocessing, pixel / 127.5 - 1."""


def normalise(pixels: Any) -> Any:
    """uint8 pixels -> the [-1, 1] input the graph takes (the Rescaling layer's arithmetic)."""
    return pixels.astype("float32") / 127.5 - 1.0


def build_sensor_classifier(keras: Any, *, backbone: str, size: int, alpha: float, num_classes: int,
                            dropout: float) -> Any:
    """A flat functional model (MCT reads flat graphs): backbone -> dropout -> softmax, [-1, 1] input."""
    if backbone not in SUPPORTED_BACKBONES:
        raise ValueError(f"--imx500 supports {', '.join(SUPPORTED_BACKBONES)}, not {backbone}")
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None,
                                          pooling="avg")
    x = keras.layers.Dropout(dropout, name="dropout")(base.output)
    out = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(base.input, out, name=f"edgecls_{backbone}_imx500")


SENSOR_INPUT_SCALE = 1.0 / 128
"""The input tensor the converter makes of a [-1, 1] input: signed 8-bit, scale 1/128 (dnnParams.xml)."""
SENSOR_ZERO_CODE = 128
"""The pixel value the sensor's ISP maps to code 0 of a signed 8-bit input tensor (codes = pixel - 128)."""


def sensor_input(pixels: Any) -> Any:
    """What the quantized network receives on the sensor for uint8 ``pixels``: codes pixel - 128 at scale
    1/128. MCT's own input quantizer turns pixel / 127.5 - 1 into the same codes except for a rounding
    step on about half the values (code pixel - 127), so parity feeds the sensor's codes exactly."""
    return (pixels.astype("float32") - SENSOR_ZERO_CODE) * SENSOR_INPUT_SCALE


def check_input_quantizer(config: dict) -> None:
    """MCT's quantizer of the network input must be the one the sensor feeds: 8-bit, signed, threshold 1."""
    bits, signed, threshold = config.get("num_bits"), config.get("signed"), config.get("threshold")
    threshold = threshold[0] if isinstance(threshold, (list, tuple)) and len(threshold) == 1 else threshold
    if (bits, signed, threshold) != (8, True, 1.0):
        raise ValueError(f"MCT quantized the network input as {bits}-bit, signed={signed}, threshold={threshold}; "
                         "the sensor feeds signed 8-bit codes at scale 1/128 (threshold 1.0), so the network would "
                         "see other values than it was calibrated for")
