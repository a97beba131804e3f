"""The IMX500 export's golden set (no TensorFlow). Its gate is export's own (:mod:`edgecls.optimize.gate`) on
the float model's and MCT's quantized model's probabilities."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgecls.core.io import atomic_write_bytes
from edgecls.runtime.golden import CLEAR_MARGIN

GOLDEN_RUNTIME = "mct-host"
"""The golden set's outputs are MCT's quantized Keras model on the host (fake-quant arithmetic), not the sensor's."""


def write_golden(path: Path, images: np.ndarray, probs: np.ndarray, labels: Optional[Sequence[int]],
                 label_names: list[str], *, package_sha256: str, input_codes: str) -> Path:
    """A golden set in :mod:`edgecls.runtime.golden`'s format: held-out images and MCT's host outputs.

    ``raw`` holds the same probabilities (the sensor's output tensor arrives in Picamera2 as
    float32 already). The meta names what the outputs came from; a device check must feed the
    sensor these images (tensor injection) to compare: edgecls has no such check yet.
    """
    y = np.full(len(images), -1, np.int64) if labels is None else np.asarray(labels, np.int64)
    meta = {"runtime": GOLDEN_RUNTIME, "runtime_version": None, "model_sha256": package_sha256,
            "model": path.name.replace(".golden.npz", ".packerOut.zip"), "label_names": list(label_names),
            "margin": CLEAR_MARGIN, "threads": 1, "input_codes": input_codes}
    buf = io.BytesIO()
    probs = np.asarray(probs, np.float32)
    np.savez_compressed(buf, images=np.ascontiguousarray(images, np.uint8), raw=probs, probabilities=probs, labels=y,
                        meta=np.array(json.dumps(meta)))
    return atomic_write_bytes(path, buf.getvalue())
