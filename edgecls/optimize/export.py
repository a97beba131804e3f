"""Export a run's Keras model to TFLite: float32, float16, dynamic-range or full int8.

``export_run(ExportConfig)`` writes one file set per mode into ``RUN/export/`` (modes coexist)::

    model_<mode>.tflite          model_pruned_<mode>.tflite with --pruned
    model_<mode>.card.json       what the file is, where it came from, how it did in parity
    parity_<mode>.json           int8 (parity runs automatically after an int8 export)
    labels.txt

Conversion itself lives in :mod:`edgecls.optimize.convert`, the file names in
:class:`edgecls.core.rundir.RunDir`.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from edgecls import __version__
from edgecls.core.config import ExportConfig, ParityConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import apply_default_mode, atomic_write_json, read_json
from edgecls.core.rundir import RunDir, write_labels
from edgecls.optimize.convert import IO_TYPES, MODES, convert_model, representative_images

# Measured (DESIGN.md, ai-edge-litert 2.3 + XNNPACK, 2-core x86, 1 thread, 224 px).
POOR_INT8_BACKBONES = {
    "mobilenet_v3_small": "MobileNetV3's hard-swish has no fast int8 kernel in XNNPACK: int8 measured 4.09 ms vs "
    "1.72 ms float32 (MobileNetV3Small 224, 1 thread); use --minimalistic, float16, or mobilenet_v2",
    "mobilenet_v3_large": "MobileNetV3's hard-swish has no fast int8 kernel in XNNPACK (MobileNetV3Small 224: int8 "
    "4.09 ms vs float32 1.72 ms, 1 thread); use --minimalistic, float16, or mobilenet_v2",
    "efficientnet_b0": "EfficientNetB0 is known to lose accuracy in full int8 (swish + depthwise; EfficientNet-Lite "
    "exists for this reason); check parity closely or use mobilenet_v2",
}


class ExportFailed(EdgeclsError):
    """Export wrote its files but a gate failed (parity); ``card`` holds what was recorded."""

    def __init__(self, message: str, card: dict[str, Any], parity: Optional[dict[str, Any]] = None):
        super().__init__(message)
        self.card = card
        self.parity = parity


def warn(message: str) -> None:
    print(f"Warning: {message}", file=sys.stderr)


def int8_backbone_warning(backbone: str, minimalistic: bool) -> Optional[str]:
    """One line on why this backbone is a poor full-int8 citizen, or None."""
    if backbone not in POOR_INT8_BACKBONES or (backbone.startswith("mobilenet_v3") and minimalistic):
        return None
    return f"{backbone} is a poor int8 citizen: {POOR_INT8_BACKBONES[backbone]}"


# -- the stage ---------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from edgecls.core.keras import tf

    out = {"edgecls": __version__, "tensorflow": tf.__version__}
    try:
        from importlib.metadata import version

        out["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - optional
        pass
    return out


def export_run(cfg: ExportConfig) -> dict[str, Any]:
    """Convert, check, add metadata, write the file set; int8 then runs parity. Returns the card."""
    if cfg.mode not in MODES:
        raise EdgeclsError(f"unknown export mode {cfg.mode!r}; use one of {', '.join(MODES)}")
    if cfg.io not in IO_TYPES:
        raise EdgeclsError(f"--io must be uint8 or int8, got {cfg.io!r}")
    if cfg.mode == "int8" and cfg.representative_samples < 1:
        raise EdgeclsError(f"--representative-samples must be >= 1, got {cfg.representative_samples}")
    run = RunDir.open(cfg.run)
    source = run.pruned_model_path if cfg.pruned else run.model_path
    if not source.is_file():
        if cfg.pruned:
            raise EdgeclsError(f"no pruned model in {run.path} ({source.name}); run 'edgecls prune {run.path}' first")
        raise EdgeclsError(f"{source} is missing; train the run first ('edgecls train')")
    paths = run.export_files(cfg.mode, cfg.pruned, cfg.out)
    existing = [p for p in (paths.model, paths.card) if p.exists()]
    if existing and not cfg.force:
        raise EdgeclsError(f"{existing[0]} exists; pass --force to export {cfg.mode} again and replace it")

    tcfg = run.train_config()
    labels = run.read_labels()
    warnings: list[str] = []
    backbone_warning = int8_backbone_warning(tcfg.backbone, tcfg.minimalistic) if cfg.mode == "int8" else None
    if backbone_warning:
        warnings.append(backbone_warning)
        warn(backbone_warning)

    from edgecls.optimize.checks import check_tflite, inspect_tflite
    from edgecls.train.model_io import load_model

    model = load_model(source)
    size = int(model.input_shape[1])
    if size != tcfg.size:
        raise EdgeclsError(f"{source.name} takes {size} px but the run's config says {tcfg.size}; the run is inconsistent")
    rep = None
    if cfg.mode == "int8":
        rep = representative_images(run, size, cfg.representative_samples, tcfg.seed)
    tflite = convert_model(model, cfg.mode, representative=rep, io=cfg.io, allow_float_fallback=cfg.allow_float_fallback)

    from edgecls.optimize.metadata import MetadataUnavailable, add_image_classifier_metadata

    metadata_reason = None
    try:
        tflite = add_image_classifier_metadata(
            tflite, labels, name=f"edgecls {tcfg.backbone} {cfg.mode}",
            description=f"{tcfg.backbone} alpha {tcfg.alpha} {size}px, {len(labels)} classes, exported by edgecls "
            f"{__version__}; input raw RGB 0..255",
        )
    except MetadataUnavailable as e:
        metadata_reason = str(e)
        warnings.append(f"the model has no metadata (labels/normalisation): {e}")
        warn(warnings[-1])

    # Check a temp copy in the destination folder, then rename it into place (atomic, and a
    # model that breaks its promise never appears under the final name).
    paths.model.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{paths.model.name}.", suffix=".tmp", dir=paths.model.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(tflite)
        apply_default_mode(tmp)
        info = inspect_tflite(tmp)
        for w in check_tflite(info, mode=cfg.mode, size=size, io=cfg.io,
                              allow_float_fallback=cfg.allow_float_fallback, path=paths.model.name):
            warnings.append(w)
            warn(w)
        os.replace(tmp, paths.model)
    finally:
        Path(tmp).unlink(missing_ok=True)
    write_labels(paths.labels, labels)

    sparsity = None
    if cfg.pruned and run.pruning_json.is_file():
        pj = read_json(run.pruning_json)
        sparsity = {"measured": pj.get("sparsity"), "target": pj.get("target_sparsity")}
    card: dict[str, Any] = {
        "model": paths.model.name,
        "mode": cfg.mode,
        "backbone": tcfg.backbone,
        "alpha": tcfg.alpha,
        "minimalistic": tcfg.minimalistic,
        "input": {"size": size, **asdict(info.input)},
        "output": asdict(info.output),
        "labels": labels,
        "mixed": bool(info.float_ops) if cfg.mode == "int8" else None,
        "float_ops": info.float_ops if cfg.mode == "int8" else [],
        "pruned": cfg.pruned,
        "sparsity": sparsity,
        "file_bytes": len(tflite),
        "gzip_bytes": len(gzip.compress(tflite, compresslevel=9)),
        "metadata": metadata_reason is None,
        "metadata_missing_reason": metadata_reason,
        "representative_samples": int(len(rep)) if rep is not None else None,
        "run": str(run.path.resolve()),
        "float_model": source.name,
        "parity": None,
        "parity_passed": None,
        "warnings": warnings,
        "export_config": asdict(cfg),
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(paths.card, card)
    if cfg.mode != "int8" or not cfg.parity:
        return card

    from edgecls.optimize.parity import run_parity

    report = run_parity(ParityConfig(run=str(run.path), model=str(paths.model), max_drop=cfg.max_drop,
                                     min_agreement=cfg.min_agreement, json=str(paths.parity),
                                     float_model=str(source)), raise_on_fail=False)
    card["parity"] = {k: report[k] for k in ("float_accuracy", "tflite_accuracy", "accuracy_drop_points",
                                             "agreement", "n_images", "mean_abs_prob_diff", "max_abs_prob_diff")}
    card["parity"]["report"] = paths.parity.name
    card["parity_passed"] = bool(report["passed"])
    atomic_write_json(paths.card, card)
    if not report["passed"]:
        raise ExportFailed(f"exported {paths.model} but {report['failure']}", card, report)
    return card
