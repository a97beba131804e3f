"""The IMX500 export's gate and golden set, from probability arrays alone (no TensorFlow).

The gate is the default gate of ``export --int8`` (DESIGN.md, 2026-12-06): accuracy drop <=
``max_drop`` points AND clear-decision agreement >= ``min_clear_agreement`` (of the held-out
images whose float top-1 beats its top-2 by >= 0.10, that share keeps its top-1). The figures are
:func:`edgecls.optimize.parity.compare`'s on the float model's and MCT's quantized model's
probabilities; all-image agreement and near-tie flips are reported, not gated.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgecls.core.io import atomic_write_bytes
from edgecls.optimize.parity import compare
from edgecls.runtime.golden import CLEAR_MARGIN

MIN_CLEAR_AGREEMENT = 0.99
GOLDEN_RUNTIME = "mct-host"
"""The golden set's outputs are MCT's quantized Keras model on the host (fake-quant arithmetic), not the sensor's."""


def gate(p_float: np.ndarray, p_quant: np.ndarray, y: np.ndarray, labels: list[str], *, max_drop: float,
         min_clear_agreement: float = MIN_CLEAR_AGREEMENT) -> dict[str, Any]:
    """``compare``'s report with ``passed``/``failure``/``gates`` decided by this gate.

    With no clearly decided image at all the clear-decision gate cannot fail, and the report says
    so (``clear_gate``: "no clear decisions"), as it cannot be met in a meaningful way either.
    """
    report = compare(p_float, p_quant, y, labels, max_drop=max_drop, min_agreement=0.0)
    ties = report["near_ties"]
    failures = []
    if report["accuracy_drop_points"] > max_drop:
        failures.append(f"accuracy drop {report['accuracy_drop_points']:.2f} points > --max-drop {max_drop:g}")
    clear = ties["agreement_clear"]
    if clear is not None and clear < min_clear_agreement:
        failures.append(f"clear-decision agreement {clear:.4f} < {min_clear_agreement:g} ({ties['flipped_clear']} of "
                        f"the {ties['n_clear']} images the float model decides by a margin >= {CLEAR_MARGIN:g} changed)")
    # min_agreement 0: all-image agreement is reported, not gated (format_parity prints the key).
    report["gates"] = {"max_drop": max_drop, "min_agreement": 0.0, "min_clear_agreement": min_clear_agreement}
    report["clear_gate"] = "no clear decisions" if clear is None else ("failed" if clear < min_clear_agreement else "passed")
    report["passed"] = not failures
    report["failure"] = ("parity failed: " + " and ".join(failures)) if failures else None
    return report


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
