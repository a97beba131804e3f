"""Parity: does the .tflite classify like the float Keras model it came from?

Both models see the *same* uint8 images (``data.load_images``: the training decode/resize): by
default every held-out image of the run (test + val splits), else ``--data DIR``.
The float model gets them as 0..255 float32; the .tflite goes through the device runtime's
``Classifier`` at batch 1 — the very code a Pi runs — so parity measures what ships. What is gated
and why: :mod:`edgecls.optimize.gate`. For int8 files made by post-training quantization the report
also names the tensors with the largest quantization error (:mod:`edgecls.optimize.int8.debugger`).
The float reference is the model named in the .tflite's card (``model_pruned.keras`` for a pruned
export), unless ``float_model`` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from edgecls.core.config import ParityConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json, read_json
from edgecls.core.options import validate
from edgecls.core.rundir import RunDir, card_path_for
from edgecls.optimize.gate import Gates, ParityReport, compare

if TYPE_CHECKING:
    from edgecls.data import ScanReport

FLOAT_BATCH = 32
HELD_OUT_SPLITS = ("test", "val")
"""Splits parity uses by default: all held-out images (training images calibrate int8)."""


class ParityFailed(EdgeclsError):
    """A gate failed; ``report`` holds every figure."""

    def __init__(self, report: ParityReport):
        advice = ("; for an int8 file, 'edgecls export RUN --int8 --force' tries the int8 methods in turn and ships "
                  "the first that passes")
        super().__init__((report.failure() or "parity failed") + advice)
        self.report = report


def gates_of(cfg: Any) -> Gates:
    """The gates an export or parity config asks for."""
    return Gates(max_drop=cfg.max_drop, min_clear_agreement=cfg.min_clear_agreement, min_agreement=cfg.min_agreement)


def _float_reference(run: RunDir, model_path: Path, override: Optional[str]) -> Path:
    if override:
        p = Path(override)
        return p if p.is_absolute() or p.exists() else run.path / p
    card = card_path_for(model_path)
    if card.is_file():
        name = read_json(card).get("float_model")
        if name:
            return run.path / name
    return run.model_path


def check_data(data_dir: str, labels: list[str], labels_csv: Optional[str] = None, *,
               decode: bool = True) -> ScanReport:
    """The scan of a ``--data`` image set whose classes are exactly the run's (the unknown class that negatives
    trained may be left out); else one clear error."""
    from edgecls import data
    from edgecls.core.unknown import UNKNOWN_CLASS

    scan = (data.scan_labels_csv(data_dir, labels_csv, decode=decode) if labels_csv
            else data.scan_dataset(data_dir, decode=decode))
    unknown = sorted(set(scan.classes) - set(labels))
    optional = {UNKNOWN_CLASS} if labels and labels[-1] == UNKNOWN_CLASS else set()
    missing = sorted(set(labels) - set(scan.classes) - optional)
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown class folder(s) {', '.join(unknown)}")
        if missing:
            parts.append(f"missing class folder(s) {', '.join(missing)}")
        raise EdgeclsError(
            f"{data_dir} does not match the run's labels.txt ({'; '.join(parts)}); "
            f"its class folders must be exactly: {', '.join(labels)}"
        )
    return scan


def check_gate_data(run: RunDir, data_dir: str) -> None:
    """Export's ``--parity-data``: the run's classes, and none of the run's training images (int8
    calibrates on them, so a gate on them would flatter every candidate). Checked before converting,
    without decoding."""
    from edgecls import data

    scan = check_data(data_dir, run.read_labels(), decode=False)
    root, split = data.load_split(run)
    training = {(root / rel).resolve() for rel, _ in split.get("train", [])}
    seen = [rel for files in scan.files.values() for rel, _ in files if (Path(scan.root) / rel).resolve() in training]
    if seen:
        raise EdgeclsError(f"{data_dir} holds {len(seen)} of the run's training images (e.g. {seen[0]}); "
                           "int8 is calibrated on them: pass photos the run has not seen")


def _images(run: RunDir, data_dir: Optional[str], labels: list[str], size: int,
            labels_csv: Optional[str] = None) -> tuple[np.ndarray, np.ndarray, str]:
    """(uint8 images, label indices in labels.txt order, description of the source)."""
    from edgecls import data

    if data_dir is None:
        root, split = data.load_split(run)
        # Every held-out image (test and val; never a training image, which calibration draws
        # from): the Wilson interval of 0.99 agreement on 48 images is 0.89-1.0, on 300 0.97-1.0.
        from edgecls.data.negatives import items_with_negatives

        names = [n for n in HELD_OUT_SPLITS if split.get(n)]
        items = [it for n in names for it in items_with_negatives(split, n, labels)]  # negatives: the unknown class
        if not items:
            raise EdgeclsError(f"{run.split_json} has no test or validation images; pass --data DIR")
        x, y = data.load_images(root, items, size)
        return x, y, f"run {'+'.join(names)} split{'s' if len(names) > 1 else ''}"
    scan = check_data(data_dir, labels, labels_csv)
    to_ours = {i: labels.index(c) for i, c in enumerate(scan.classes)}
    items = [(rel, to_ours[lab]) for files in scan.files.values() for rel, lab in files]
    x, y = data.load_images(Path(scan.root), items, size)
    return x, y, f"folder {data_dir}"


def _diagnose_here(run: RunDir, model_path: Path, model: Any, size: int) -> Optional[dict[str, Any]]:
    """Per-tensor error of the PTQ calibration this .tflite came from; None for a QAT model (its float
    twin is not the run's model, so the debugger would describe something else)."""
    card_path = card_path_for(model_path)
    card = read_json(card_path) if card_path.is_file() else {}
    quant = card.get("quantization") or {}
    if quant.get("path") == "qat":
        return None
    from edgecls.optimize.convert import representative_images
    from edgecls.optimize.int8.debugger import DEBUG_IMAGES, diagnose

    tcfg = run.train_config()
    rep = representative_images(run, size, int(card.get("representative_samples") or 300), tcfg.seed)
    return diagnose(model, rep, rep[:DEBUG_IMAGES], denylisted=quant.get("float_layers") or ()).summary()


@dataclass
class GateImages:
    """The images a gate compares on, with the float model's probabilities on them."""

    x: np.ndarray
    y: np.ndarray
    source: str
    p_float: np.ndarray


def gate_images(run: RunDir, data_dir: Optional[str], model: Any, labels_csv: Optional[str] = None) -> GateImages:
    """Load the gate's images (the run's held-out splits, or ``data_dir``) and run the float ``model`` on them."""
    x, y, source = _images(run, data_dir, run.read_labels(), run.train_config().size, labels_csv)
    p_float = np.asarray(model.predict(x.astype(np.float32), batch_size=FLOAT_BATCH, verbose=0), dtype=np.float32)
    return GateImages(x, y, source, p_float)


def tflite_scores(model_path: Path, images: np.ndarray, threads: int = 2) -> np.ndarray:
    """Probabilities [N, C] of a .tflite file on uint8 ``images`` through the device runtime, batch 1."""
    from edgecls.runtime.classifier import Classifier

    clf = Classifier(model_path, labels=None, num_threads=threads)
    return np.stack([clf.probabilities(img) for img in images]).astype(np.float32)


def run_parity(cfg: ParityConfig, *, raise_on_fail: bool = True, quant_error: Optional[dict[str, Any]] = None,
               float_keras: Any = None, images: Optional[GateImages] = None) -> ParityReport:
    """Compare the float model and ``cfg.model`` on the same images; write ``cfg.json`` if set.

    ``quant_error`` (export passes what it measured) goes into the report as is; otherwise an int8
    model that came from post-training quantization is diagnosed here (``cfg.diagnose``).
    ``float_keras``: the float model already loaded from ``cfg.float_model``; ``images``: the images and
    the float model's outputs, made once by :func:`gate_images` (export gates several candidates on them)."""
    validate(cfg)
    run = RunDir.open(cfg.run)
    model_path = Path(cfg.model)
    size = run.train_config().size
    from edgecls.runtime.classifier import Classifier

    clf = Classifier(model_path, labels=run.read_labels(), num_threads=cfg.threads)
    if tuple(clf.input_size) != (size, size):
        raise EdgeclsError(
            f"{model_path} takes {clf.input_size[0]}x{clf.input_size[1]} images but run {run.path} is "
            f"{size}x{size}; check that the model was exported from this run"
        )
    float_path = _float_reference(run, model_path, cfg.float_model)

    from edgecls.train.model_io import load_model

    model = float_keras if float_keras is not None else load_model(float_path)
    ref = images if images is not None else gate_images(run, cfg.data, model, cfg.labels_csv)
    p_lite = np.stack([clf.probabilities(img) for img in ref.x]).astype(np.float32)
    report = compare(ref.p_float, p_lite, ref.y, run.read_labels(), gates_of(cfg))
    if quant_error is None and cfg.diagnose and clf.input_dtype != np.float32:
        quant_error = _diagnose_here(run, model_path, model, size)
    report.quant_error = quant_error
    report.source, report.model, report.float_model = ref.source, str(model_path.resolve()), str(float_path.resolve())
    report.runtime, report.threads = clf.runtime, cfg.threads
    if cfg.json:
        atomic_write_json(cfg.json, report.as_json())
    if raise_on_fail and not report.passed:
        raise ParityFailed(report)
    return report
