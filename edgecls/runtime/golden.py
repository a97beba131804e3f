"""The golden set: proof, on the device, that its runtime gives what parity checked on the host.

Export writes ``model_<mode>.golden.npz`` beside the model: a few dozen held-out images already
at the model's input size, and the outputs the *host's* runtime produced for them. On the
device, ``edgecls verify MODEL`` runs its own runtime on the same images and compares. A
prediction the host made with a clear margin must not change; near-ties may flip (tflite-runtime
2.14 rounds differently from ai-edge-litert and that is reported, not hidden).

File format (numpy .npz, no pickle)::

    images         uint8 [N, H, W, 3]   at the model's input size (no resize on either side)
    raw            [N, C]               the output tensor as the runtime returned it (uint8/int8/int16/float32)
    probabilities  float32 [N, C]       dequantized by the output tensor's own scale/zero point
    labels         int64 [N]            true class index (labels.txt order), -1 when unknown
    meta           0-d str              JSON: runtime, runtime_version, model_sha256, label_names, margin
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes
from edgecls.runtime.classifier import NO_LABELS_SOURCE
from edgecls.runtime.interpreter import runtime_notice
from edgecls.runtime.scores import top1_margin
from edgecls.core.unknown import DECISION_MARGIN, UnknownRule

GOLDEN_SUFFIX = ".golden.npz"
# A host top-1 whose probability beats the runner-up by at least this much must not change on
# the device. Measured (docs/device.md, "Why a clear margin of 0.10"): tflite-runtime's rounding
# flipped only top-1s with host margins <= 0.047 on a trained MobileNetV2, while moving margins by
# up to 0.20; 0.10 (~26 steps of a uint8 softmax) passes such near-ties and catches real changes.
CLEAR_MARGIN = 0.10
FLIPS_SHOWN = 10  # flipped images named in the text report; the JSON report has them all


def golden_path_for(model_path: str | os.PathLike) -> Path:
    """``model_int8.tflite`` -> ``model_int8.golden.npz``."""
    p = Path(model_path)
    stem = p.name[: -len(".tflite")] if p.name.endswith(".tflite") else p.stem
    return p.with_name(stem + GOLDEN_SUFFIX)


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run(model_path: Path, images: np.ndarray, threads: int, labels: Optional[Sequence[str]] = None,
         labels_option: Optional[str] = None) -> tuple[Any, np.ndarray, np.ndarray]:
    from edgecls.runtime.classifier import Classifier

    clf = Classifier(model_path, labels=list(labels) if labels is not None else None, num_threads=threads,
                     labels_option=labels_option)
    if tuple(images.shape[1:3]) != tuple(clf.input_size):
        raise EdgeclsError(
            f"the golden set's images are {images.shape[1]}x{images.shape[2]} but {model_path} takes "
            f"{clf.input_size[0]}x{clf.input_size[1]}; the golden set belongs to another model"
        )
    raw = np.stack([np.asarray(clf.invoke(clf.preprocess(img))).reshape(-1) for img in images])
    probs = np.stack([clf.postprocess(r) for r in raw]).astype(np.float32)
    return clf, raw, probs


def write_golden_set(
    model_path: str | os.PathLike,
    images: np.ndarray,
    labels: Optional[Sequence[int]] = None,
    label_names: Optional[Sequence[str]] = None,
    out: Optional[str | os.PathLike] = None,
    *,
    threads: int = 1,
) -> Path:
    """Run ``model_path`` on ``images`` (uint8 [N,H,W,3] at input size) and save the golden set."""
    model_path = Path(model_path)
    images = np.ascontiguousarray(np.asarray(images, dtype=np.uint8))
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise EdgeclsError(f"a golden set needs uint8 images [N, H, W, 3], got shape {images.shape}")
    clf, raw, probs = _run(model_path, images, threads)
    y = np.full(len(images), -1, np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    meta = {
        "runtime": clf.runtime,
        "runtime_version": clf.runtime_version,
        "model_sha256": sha256_of(model_path),
        "model": model_path.name,
        "label_names": list(label_names) if label_names is not None else list(clf.labels),
        "margin": CLEAR_MARGIN,
        "threads": threads,
        # The unknown rule packed with the model: the host's decisions, which the device must reproduce.
        "unknown_threshold": clf.unknown_threshold,
        "unknown_class": clf.unknown_class,
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, raw=raw, probabilities=probs, labels=y, meta=np.array(json.dumps(meta)))
    return atomic_write_bytes(out or golden_path_for(model_path), buf.getvalue())


def read_golden_set(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EdgeclsError(
            f"no golden set at {path}; export writes it beside the model ('edgecls export RUN --int8'), "
            "copy it to the device with the model"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in ("images", "raw", "probabilities", "labels")}
            out["meta"] = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise EdgeclsError(f"{path} is not a golden set ({type(e).__name__}: {e}); export the model again") from None
    return out


def verify_model(
    model_path: str | os.PathLike,
    golden: Optional[str | os.PathLike] = None,
    *,
    threads: int = 1,
    labels: Optional[Sequence[str]] = None,
) -> dict[str, Any]:
    """Run this device's runtime on the golden set; figures and ``passed``.

    ``labels`` are the user's explicit choice (``--labels``); otherwise the model's own labels
    (labels.txt beside it, or embedded) are used and must match the golden set's.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise EdgeclsError(f"model not found: {model_path}")
    g = read_golden_set(golden or golden_path_for(model_path))
    meta = g["meta"]
    clf, raw, probs = _run(model_path, g["images"], threads, labels, labels_option="--labels")
    host = g["probabilities"].astype(np.float32)
    top_host, top_dev = host.argmax(1), probs.argmax(1)
    margin = top1_margin(host)
    clear = margin >= float(meta.get("margin", CLEAR_MARGIN))
    # How far the device moved each host margin (host top-1 minus host runner-up, on device scores):
    # a flip needs a shift larger than the margin, so this says how close the others came.
    if host.shape[1] > 1:
        order = np.argsort(host, axis=1)
        rows = np.arange(len(host))
        dev_margin = probs[rows, order[:, -1]] - probs[rows, order[:, -2]]
        shift = np.abs(dev_margin - margin)
    else:
        shift = np.abs(probs[:, 0] - host[:, 0])
    flipped = top_host != top_dev
    raw_diff = np.abs(raw.astype(np.int64) - g["raw"].astype(np.int64)) if np.issubdtype(raw.dtype, np.integer) \
        and np.issubdtype(g["raw"].dtype, np.integer) else np.abs(raw.astype(np.float64) - g["raw"].astype(np.float64))
    same_file = sha256_of(model_path) == meta.get("model_sha256")
    report = {
        "model": str(model_path),
        "model_matches_golden": same_file,
        "n_images": int(len(host)),
        "host_runtime": f"{meta.get('runtime')} {meta.get('runtime_version')}",
        "device_runtime": f"{clf.runtime} {clf.runtime_version}",
        "threads": threads,
        "max_abs_raw_diff": float(raw_diff.max()) if raw_diff.size else 0.0,
        "max_abs_prob_diff": float(np.abs(probs - host).max()) if host.size else 0.0,
        "top1_agreement": float(np.mean(~flipped)) if len(host) else 1.0,
        "flipped": int(flipped.sum()),
        "flipped_clear": int((flipped & clear).sum()),
        "max_margin_shift": float(shift.max()) if shift.size else 0.0,
        "margin": float(meta.get("margin", CLEAR_MARGIN)),
        "bit_identical": bool(raw_diff.size and raw_diff.max() == 0),
        "flipped_images": [int(i) for i in np.flatnonzero(flipped)],
        "host_margin_of_flipped": [round(float(m), 4) for m in margin[flipped]],
        "labels": list(clf.labels),
        "labels_source": clf.labels_source,
        "runtime_notice": runtime_notice(clf.runtime, clf.runtime_version),
    }
    failures = []
    if not same_file:
        failures.append("the model file differs from the one the golden set was made with")
    host_labels = list(meta.get("label_names") or [])
    # A device with no labels at all prints class_<i>: worth a doctor line, not a verify failure.
    if host_labels and clf.labels_source != NO_LABELS_SOURCE and list(clf.labels) != host_labels:
        failures.append(f"this device names the classes {', '.join(clf.labels)} ({clf.labels_source}) "
                        f"but the host named them {', '.join(host_labels)}")
    if report["flipped_clear"]:
        failures.append(f"{report['flipped_clear']} prediction(s) the host made with a clear margin "
                        f"(>= {report['margin']:g}) changed on this runtime")
    report.update(_unknown_decisions(host, probs, meta.get("unknown_threshold"), meta.get("unknown_class")))
    if report["unknown_changed_clear"]:
        failures.append(f"{report['unknown_changed_clear']} unknown/known decision(s) the host made with a top-1 "
                        f"score >= {DECISION_MARGIN:g} from the threshold changed on this runtime")
    report["passed"] = not failures
    report["failure"] = "; ".join(failures) or None
    return report


def _unknown_decisions(host: np.ndarray, device: np.ndarray, threshold: Optional[float],
                       unknown_class: Optional[int] = None) -> dict[str, Any]:
    """Whether the device answers "unknown" where the host did: a score within DECISION_MARGIN of the threshold
    may land on either side of it on another runtime, and so may a top-1 that is the unknown class by less than
    the clear margin; one farther away may not."""
    if not threshold and unknown_class is None:
        return {"unknown_threshold": None, "unknown_host": 0, "unknown_changed": 0, "unknown_changed_clear": 0}
    threshold = float(threshold or 0.0)
    rule = UnknownRule(threshold, class_index=unknown_class)
    on_host, on_device = rule.rejects_rows(host), rule.rejects_rows(device)
    changed = on_host != on_device
    clear = np.abs(host.max(axis=1) - threshold) >= DECISION_MARGIN if threshold else np.ones(len(host), bool)
    if unknown_class is not None:
        top2 = np.sort(host, axis=1)[:, -2:] if host.shape[1] > 1 else np.zeros((len(host), 2))
        clear &= (top2[:, 1] - top2[:, 0]) >= CLEAR_MARGIN
    return {"unknown_threshold": threshold, "unknown_class": unknown_class, "unknown_host": int(on_host.sum()),
            "unknown_changed": int(changed.sum()), "unknown_changed_clear": int((changed & clear).sum())}


def format_verify(r: dict[str, Any]) -> str:
    lines = [
        f"Verify {r['model']} on {r['n_images']} golden images",
        f"  host runtime   : {r['host_runtime']}",
        f"  device runtime : {r['device_runtime']}",
        f"  outputs        : {'bit-identical' if r['bit_identical'] else 'differ'} "
        f"(max |raw diff| {r['max_abs_raw_diff']:g}, max |prob diff| {r['max_abs_prob_diff']:.4f})",
        f"  top-1 agreement: {r['top1_agreement']:.4f} ({r['flipped']} flipped, {r['flipped_clear']} with a clear margin "
        f">= {r['margin']:g}; largest host-margin shift {r.get('max_margin_shift', 0.0):.3f})",
        f"  result         : {'PASSED' if r['passed'] else 'FAILED: ' + str(r['failure'])}",
    ]
    if r.get("unknown_threshold") or r.get("unknown_class") is not None:
        rule = " or ".join(([f"top-1 < {r['unknown_threshold']:.3f}"] if r.get("unknown_threshold") else [])
                           + ([f"top-1 is class {r['unknown_class']}"] if r.get("unknown_class") is not None else []))
        lines.insert(-1, f"  unknown rule   : {rule}: {r['unknown_host']} unknown on the host, "
                         f"{r['unknown_changed']} decision(s) changed ({r['unknown_changed_clear']} clear)")
    if r.get("flipped_images"):
        pairs = [f"#{i} ({m:.3f})" for i, m in zip(r["flipped_images"], r["host_margin_of_flipped"])]
        more = f", ... {len(pairs) - FLIPS_SHOWN} more (--json lists all)" if len(pairs) > FLIPS_SHOWN else ""
        lines.insert(-1, f"  flipped (host margin): {', '.join(pairs[:FLIPS_SHOWN])}{more}")
    if r.get("runtime_notice"):
        lines.append(f"Note: {r['runtime_notice']}")
    return "\n".join(lines)
