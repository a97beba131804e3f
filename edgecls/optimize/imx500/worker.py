"""Runs inside the Sony venv (TensorFlow 2.15 + MCT): rebuild, quantize, predict, export.

    <sony venv>/bin/python -m edgecls.optimize.imx500.worker JOB_DIR

The host stage (:mod:`.export`) writes JOB_DIR and reads back what this writes. Only this
package's stdlib modules are imported from edgecls (the host's TensorFlow must never load here).

In ``JOB_DIR``::

    job.json          backbone, size, alpha, num_classes, dropout, batch
    weights.npz       arr_0 ... arr_N: the host model's get_weights(), in order
    calibration.npy   uint8 [N, S, S, 3]: representative images (training split)
    eval.npy          uint8 [M, S, S, 3]: the images the host compares on (gate + golden)

Out::

    float_probs.npy   float32 [M, C]: the rebuilt float model on eval (pixel / 127.5 - 1)
    quant_probs.npy   float32 [M, C]: MCT's quantized model on eval, fed the sensor's input codes
    quantized.keras   MCT's export, what imxconv-tf compiles
    result.json       versions, input quantizer, seconds; or {"error": "..."} (exit 2)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from edgecls.optimize.imx500.graph import (build_sensor_classifier, check_input_quantizer, normalise,
                                           sensor_input)

CALIBRATION_BATCH = 16
PACKAGES = ("tensorflow", "keras", "model-compression-toolkit", "mct-quantizers", "edge-mdt", "edge-mdt-tpc",
            "imx500-converter", "numpy")
EXIT_USER_ERROR = 2  # result.json holds one line for the user


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _input_quantizer(model: Any) -> dict:
    """The config of MCT's quantizer on the network input (the first activation holder after it)."""
    for layer in model.layers[1:]:
        cfg = layer.get_config()
        holder = cfg.get("activation_holder_quantizer")
        if holder:
            return dict(holder.get("config", {}))
    raise ValueError("MCT's quantized model has no quantizer on its input")


def run(job_dir: Path) -> dict:
    import numpy as np
    import tensorflow as tf
    import model_compression_toolkit as mct

    t0 = time.perf_counter()
    job = json.loads((job_dir / "job.json").read_text())
    model = build_sensor_classifier(tf.keras, backbone=job["backbone"], size=job["size"], alpha=job["alpha"],
                                    num_classes=job["num_classes"], dropout=job["dropout"])
    with np.load(job_dir / "weights.npz") as z:
        weights = [z[f"arr_{i}"] for i in range(len(z.files))]
    mine = model.get_weights()
    if len(weights) != len(mine) or any(a.shape != b.shape for a, b in zip(weights, mine)):
        first = next((i for i, (a, b) in enumerate(zip(weights, mine)) if a.shape != b.shape), min(len(weights), len(mine)))
        raise ValueError(f"the run's model has {len(weights)} weight arrays, the rebuilt {job['backbone']} "
                         f"{len(mine)}; first difference at array {first}: the architectures differ")
    model.set_weights(weights)
    batch = int(job.get("batch", 32))
    eval_images = np.load(job_dir / "eval.npy")
    float_probs = model.predict(normalise(eval_images), batch_size=batch, verbose=0)

    calibration = normalise(np.load(job_dir / "calibration.npy"))

    def representative():
        for i in range(0, len(calibration), CALIBRATION_BATCH):
            yield [calibration[i:i + CALIBRATION_BATCH]]

    t1 = time.perf_counter()
    tpc = mct.get_target_platform_capabilities("tensorflow", "imx500", "v1")
    quantized, _ = mct.ptq.keras_post_training_quantization(model, representative, target_platform_capabilities=tpc)
    input_q = _input_quantizer(quantized)
    check_input_quantizer(input_q)
    quant_probs = quantized.predict(sensor_input(eval_images), batch_size=batch, verbose=0)
    mct.exporter.keras_export_model(model=quantized, save_model_path=str(job_dir / "quantized.keras"))
    np.save(job_dir / "float_probs.npy", np.asarray(float_probs, np.float32))
    np.save(job_dir / "quant_probs.npy", np.asarray(quant_probs, np.float32))
    return {"versions": _versions(), "input_quantizer": input_q, "calibration_images": int(len(calibration)),
            "seconds": {"rebuild": round(t1 - t0, 2), "quantize": round(time.perf_counter() - t1, 2)},
            "tpc": "imx500 v1"}


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    job_dir = Path(argv[0])
    try:
        result = run(job_dir)
    except ValueError as e:  # a mismatch the user can act on: one line for the host to show
        (job_dir / "result.json").write_text(json.dumps({"error": str(e)}))
        return EXIT_USER_ERROR
    (job_dir / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
