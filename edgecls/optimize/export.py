"""Export a run's Keras model to TFLite: float32, float16, dynamic-range or full int8.

``export_run(ExportConfig)`` writes one file set per mode into ``RUN/export/`` (modes coexist)::

    model_<mode>.tflite          model_pruned_<mode>.tflite with --pruned
    model_<mode>.card.json       what the file is, where it came from, how it did in parity
    parity_<mode>.json           int8 (parity runs automatically after an int8 export)
    model_<mode>.golden.npz      held-out images + this host runtime's outputs (edgecls verify)
    labels.txt

The set is a transaction (:mod:`edgecls.optimize.transaction`): candidates are built, checked
and gated in a staging folder and the set is moved into place only when it passed.

int8 repair: plain post-training quantization (PTQ) is tried first; when its parity gate fails
export tries (0) bias correction (``--gptq``: GPTQ weight rounding + bias correction,
:mod:`edgecls.optimize.gptq`), then (a) selective quantization, keeping the tensors whose error is
far above rounding noise in float (:mod:`edgecls.optimize.qdebug`), then (b) quantization-aware
training (:mod:`edgecls.optimize.qat`). The first candidate that passes ships; the card says which
path, which tensors stayed float, and the latency/size cost against PTQ. When none passes, the best
candidate is kept as ``model_<mode>.REJECTED.tflite`` (+ card and report) and export fails.

Conversion itself lives in :mod:`edgecls.optimize.convert`, the file names in
:class:`edgecls.core.rundir.RunDir`.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from edgecls import __version__
from edgecls.core.config import ExportConfig, ParityConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes, atomic_write_json, read_json
from edgecls.core.rundir import ExportFiles, RunDir, write_labels
from edgecls.optimize.convert import IO_TYPES, MODES, convert_model, representative_images
from edgecls.optimize.repair import Candidate, int8_attempts, measure_latency_ms  # noqa: F401 - measure_latency_ms re-exported (tools)
from edgecls.optimize.transaction import ExportTransaction, recover


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


def _parse_float_layers(value: str) -> Optional[list[str]]:
    """'auto' -> None (decided by the diagnosis), 'none' -> [], 'a,b' -> ['a', 'b']."""
    v = (value or "").strip()
    if v.lower() == "auto":
        return None
    if v.lower() == "none":
        return []
    names = [n.strip() for n in v.split(",") if n.strip()]
    if not names:
        raise EdgeclsError(f"--float-layers takes auto, none or NAME,...; got {value!r}")
    return names


def _validate(cfg: ExportConfig) -> Optional[list[str]]:
    if cfg.mode not in MODES:
        raise EdgeclsError(f"unknown export mode {cfg.mode!r}; use one of {', '.join(MODES)}")
    if cfg.io not in IO_TYPES:
        raise EdgeclsError(f"--io must be uint8 or int8, got {cfg.io!r}")
    if cfg.mode == "int8" and cfg.representative_samples < 1:
        raise EdgeclsError(f"--representative-samples must be >= 1, got {cfg.representative_samples}")
    names = _parse_float_layers(cfg.float_layers)
    if cfg.mode != "int8" and (cfg.qat or names):
        raise EdgeclsError(f"--qat and --float-layers apply to --int8 exports, not {cfg.mode}")
    if cfg.qat and names:
        raise EdgeclsError("--qat and --float-layers NAME,... are two different repairs; pass one of them")
    if cfg.qat_epochs < 1:
        raise EdgeclsError(f"--qat-epochs must be >= 1, got {cfg.qat_epochs}")
    if cfg.qat_learning_rate <= 0:
        raise EdgeclsError(f"--qat-learning-rate must be > 0, got {cfg.qat_learning_rate}")
    if cfg.golden_images < 0:
        raise EdgeclsError(f"--golden-images must be >= 0, got {cfg.golden_images}")
    if cfg.parity_data and (cfg.mode != "int8" or not cfg.parity):
        raise EdgeclsError("--parity-data sets the images of the int8 parity gate; it needs --int8 and no --no-parity")
    return names


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Exporter:
    """The stage's state: run, model, staging transaction, and the candidates tried."""

    def __init__(self, cfg: ExportConfig, run: RunDir, source: Path, paths: ExportFiles, tx: ExportTransaction):
        self.cfg, self.run, self.source, self.paths, self.tx = cfg, run, source, paths, tx
        self.tcfg = run.train_config()
        self.labels = run.read_labels()
        self.warnings: list[str] = []
        self.metadata_reason: Optional[str] = None
        self.model: Any = None  # the float model loaded from ``source`` (read-only: every gate compares with it)
        self.gate_images: Any = None  # parity.GateImages, made at the first gate

    def note(self, message: str) -> None:
        self.warnings.append(message)
        warn(message)

    def with_metadata(self, tflite: bytes, size: int) -> bytes:
        from edgecls.optimize.metadata import MetadataUnavailable, add_image_classifier_metadata

        try:
            return add_image_classifier_metadata(
                tflite, self.labels, name=f"edgecls {self.tcfg.backbone} {self.cfg.mode}",
                description=f"{self.tcfg.backbone} alpha {self.tcfg.alpha} {size}px, {len(self.labels)} classes, "
                f"exported by edgecls {__version__}; input raw RGB 0..255",
            )
        except MetadataUnavailable as e:
            if self.metadata_reason is None:
                self.metadata_reason = str(e)
                self.note(f"the model has no metadata (labels/normalisation): {e}")
            return tflite

    def stage(self, path: str, tflite: bytes, size: int, float_layers: list[str] = ()) -> Candidate:
        """Write a candidate into the staging folder and check it against its promise."""
        from edgecls.optimize.checks import check_tflite, inspect_tflite

        data = self.with_metadata(tflite, size)
        file = self.tx.path(f"candidate-{path}.tflite")
        atomic_write_bytes(file, data)
        info = inspect_tflite(file)
        # Float tensors a selective model keeps on purpose are not a broken promise.
        allow = self.cfg.allow_float_fallback or bool(float_layers)
        warnings = check_tflite(info, mode=self.cfg.mode, size=size, io=self.cfg.io,
                                allow_float_fallback=allow, path=self.paths.model.name)
        if float_layers:
            warnings = [w for w in warnings if not w.startswith("mixed model")]
        return Candidate(path=path, data=data, file=file, float_layers=list(float_layers), info=info,
                         warnings=warnings)

    def gate(self, cand: Candidate, quant_error: Optional[dict[str, Any]], size: int) -> Candidate:
        from edgecls.optimize.parity import gate_images, run_parity

        if self.gate_images is None:  # every candidate is gated on the same images: load and predict them once
            self.gate_images = gate_images(self.run, self.cfg.parity_data, self.model)
        cand.report = run_parity(
            ParityConfig(run=str(self.run.path), model=str(cand.file), max_drop=self.cfg.max_drop,
                         min_agreement=self.cfg.min_agreement, float_model=str(self.source), diagnose=False,
                         data=self.cfg.parity_data),
            raise_on_fail=False, quant_error=quant_error, float_keras=self.model, images=self.gate_images)
        cand.report["model"] = str(self.paths.model.resolve())
        cand.report["quantization_path"] = cand.path
        cand.latency_ms = measure_latency_ms(cand.file, size)
        print(f"int8 {cand.path}: agreement {cand.report['agreement']:.4f}, accuracy drop "
              f"{cand.report['accuracy_drop_points']:.2f} points -> {'passed' if cand.passed else 'failed'}",
              file=sys.stderr)
        return cand


def export_run(cfg: ExportConfig) -> dict[str, Any]:
    """Convert, check, gate (int8: with repairs), write the file set as one transaction. Returns the card."""
    float_names = _validate(cfg)
    run = RunDir.open(cfg.run)
    if cfg.parity_data:
        from edgecls.optimize.parity import check_gate_data

        check_gate_data(run, cfg.parity_data)
    source = run.pruned_model_path if cfg.pruned else run.model_path
    if not source.is_file():
        if cfg.pruned:
            raise EdgeclsError(f"no pruned model in {run.path} ({source.name}); run 'edgecls prune {run.path}' first")
        raise EdgeclsError(f"{source} is missing; train the run first ('edgecls train')")
    paths = run.export_files(cfg.mode, cfg.pruned, cfg.out)
    if paths.model.parent.exists() and not paths.model.parent.is_dir():
        raise EdgeclsError(f"{paths.model.parent} is a file; --out takes a folder or a .tflite path")
    if paths.model.is_dir():
        raise EdgeclsError(f"{paths.model} is a folder; --out takes a folder or a .tflite path")
    names = [paths.parity.name, paths.golden.name, paths.labels.name, paths.card.name, paths.model.name]
    stem = paths.model.name[: -len(".tflite")]
    # An export killed after its commit point is finished first, so "exists" sees the truth.
    for line in recover(paths.model.parent, stem, names):
        warn(line)
    existing = [p for p in (paths.model, paths.card) if p.exists()]
    if existing and not cfg.force:
        raise EdgeclsError(f"{existing[0]} exists; pass --force to export {cfg.mode} again and replace it")

    tx = ExportTransaction(paths.model.parent, stem, names)
    try:
        tx.begin()
    except OSError as e:
        raise EdgeclsError(f"cannot write into {paths.model.parent}: {e.strerror or e}") from None
    try:
        return _export(cfg, float_names, run, source, paths, tx)
    finally:
        tx.abort()  # a no-op after commit/reject (the staging folder is gone)


def _export(cfg: ExportConfig, float_names: Optional[list[str]], run: RunDir, source: Path, paths: ExportFiles,
            tx: ExportTransaction) -> dict[str, Any]:
    ex = _Exporter(cfg, run, source, paths, tx)
    tcfg = ex.tcfg
    backbone_warning = int8_backbone_warning(tcfg.backbone, tcfg.minimalistic) if cfg.mode == "int8" else None
    if backbone_warning:
        ex.note(backbone_warning)

    from edgecls.train.model_io import load_model

    model = ex.model = load_model(source)
    size = int(model.input_shape[1])
    if size != tcfg.size:
        raise EdgeclsError(f"{source.name} takes {size} px but the run's config says {tcfg.size}; the run is inconsistent")
    rep = None
    if cfg.mode == "int8":
        rep = representative_images(run, size, cfg.representative_samples, tcfg.seed)
    ptq = ex.stage("ptq", convert_model(model, cfg.mode, representative=rep, io=cfg.io,
                                         allow_float_fallback=cfg.allow_float_fallback), size)
    tried: list[Candidate] = []
    diagnosis = None
    if cfg.mode == "int8":
        chosen, tried, diagnosis = int8_attempts(ex, cfg, float_names, model, rep, size, ptq)
    else:
        chosen = ptq
    for w in chosen.warnings:
        ex.note(w)

    card = _card(ex, chosen, ptq, tried, size, rep)
    shipped = chosen.passed
    report = chosen.report
    if report is not None:
        atomic_write_json(tx.path(paths.parity.name), report)
    write_labels(tx.path(paths.labels.name), ex.labels)

    os.replace(chosen.file, tx.path(paths.model.name))
    publish = [paths.labels.name] + ([paths.parity.name] if report is not None else [])
    if shipped:
        golden = _write_golden(ex, tx.path(paths.model.name), size)
        if golden:
            publish.append(paths.golden.name)
        card["golden"] = paths.golden.name if golden else None
        atomic_write_json(tx.path(paths.card.name), card)
        tx.commit(publish + [paths.card.name, paths.model.name])
        return card
    from edgecls.optimize.parity import more_images_could_pass
    from edgecls.optimize.transaction import rejected_name

    card["golden"] = None
    card["model"] = rejected_name(paths.model.name)
    if report is not None:
        card["parity"]["report"] = rejected_name(paths.parity.name)
        report["model"] = str(paths.model.with_name(card["model"]).resolve())
        atomic_write_json(tx.path(paths.parity.name), report)
    atomic_write_json(tx.path(paths.card.name), card)
    rejected = tx.reject([n for n in publish if n != paths.labels.name] + [paths.card.name, paths.model.name])
    kept = paths.model.with_name(rejected[-1])
    tries = ", ".join(f"{c.path} (agreement {c.report['agreement']:.4f})" for c in tried if c.report)
    gates = report["failure"].split("; ")[0][len("parity failed: "):] if report else "?"
    ties = (report or {}).get("near_ties") or {}
    if ties.get("flipped") and not ties.get("flipped_clear"):  # what kind of error the best one has left
        tied = (f"; {ties['output_ties']} exact ties in the file's 8-bit output" if ties.get("output_ties") else "")
        gates += (f" (all {ties['flipped']} changed top-1s near-ties, float margin < {ties['margin']:g}; "
                  f"none of the {ties['n_clear']} clearly decided images changed{tied})")
    advice = ("repairs were off (--no-repair)" if not cfg.repair else
              "try more --representative-samples, more --qat-epochs, or a backbone that quantizes better "
              "(mobilenet_v2)")
    if report is not None and more_images_could_pass(report):
        low, high = report["agreement_ci95"]
        advice += (f"; the gate's {report['n_images']} images are too few to decide (the failed gate lies inside its "
                   f"95% interval; agreement {low:.3f}-{high:.3f}): --parity-data DIR gates on more held-out photos")
    raise ExportFailed(
        f"int8 parity failed: {gates}; tried {tries}; {advice}. Nothing was replaced; the best candidate is "
        f"kept as {kept} (do not ship it)", card, report)


def _write_golden(ex: _Exporter, model_file: Path, size: int) -> Optional[Path]:
    """~N held-out images (test split, else val; stratified) and this runtime's outputs."""
    if ex.cfg.golden_images == 0:
        return None
    from edgecls import data
    from edgecls.runtime.golden import write_golden_set

    root, split = data.load_split(ex.run)
    items = split.get("test") or split.get("val") or []
    if not items:
        ex.note("no test or validation images in the run: no golden set written (edgecls verify needs one)")
        return None
    x, y = data.load_images(root, data.stratified_sample(items, ex.cfg.golden_images, ex.tcfg.seed), size)
    return write_golden_set(model_file, x, y, ex.labels, out=ex.tx.path(ex.paths.golden.name))


def _card(ex: _Exporter, chosen: Candidate, ptq: Candidate, tried: list[Candidate], size: int, rep: Any) -> dict[str, Any]:
    cfg, run, tcfg, paths = ex.cfg, ex.run, ex.tcfg, ex.paths
    info = chosen.info
    sparsity = None
    if cfg.pruned and run.pruning_json.is_file():
        pj = read_json(run.pruning_json)
        sparsity = {"measured": pj.get("sparsity"), "target": pj.get("target_sparsity")}
    quantization = None
    if cfg.mode == "int8":
        cost = None
        if chosen is not ptq and chosen.latency_ms is not None:
            if ptq.latency_ms is None:
                ptq.latency_ms = measure_latency_ms(ptq.file, size)
            cost = {"latency_ms_1thread": {"ptq": ptq.latency_ms, "shipped": chosen.latency_ms,
                                           "ratio": round(chosen.latency_ms / ptq.latency_ms, 3) if ptq.latency_ms else None},
                    "file_bytes": {"ptq": len(ptq.data), "shipped": len(chosen.data),
                                   "difference": len(chosen.data) - len(ptq.data)}}
        quantization = {"path": chosen.path, "float_layers": chosen.float_layers, "qat": chosen.qat,
                        "selection": chosen.selection, "bias_correction": chosen.bias_correction, "gptq": chosen.gptq, "attempts": [c.summary() for c in tried], "cost_vs_ptq": cost, "repair": cfg.repair}
    card: dict[str, Any] = {
        "model": paths.model.name,
        "mode": cfg.mode,
        "backbone": tcfg.backbone,
        "alpha": tcfg.alpha,
        "minimalistic": tcfg.minimalistic,
        "input": {"size": size, **asdict(info.input)},
        "output": asdict(info.output),
        "labels": ex.labels,
        "mixed": bool(info.float_ops) if cfg.mode == "int8" else None,
        "float_ops": info.float_ops if cfg.mode == "int8" else [],
        "pruned": cfg.pruned,
        "sparsity": sparsity,
        "file_bytes": len(chosen.data),
        "gzip_bytes": len(gzip.compress(chosen.data, compresslevel=9)),
        "sha256": _sha256(chosen.data),
        "metadata": ex.metadata_reason is None,
        "metadata_missing_reason": ex.metadata_reason,
        "representative_samples": int(len(rep)) if rep is not None else None,
        "run": str(run.path.resolve()),
        "float_model": ex.source.name,
        "quantization": quantization,
        "parity": None,
        "parity_passed": None,
        "warnings": ex.warnings,
        "export_config": asdict(cfg),
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    r = chosen.report
    if r is not None:
        card["parity"] = {k: r.get(k) for k in (
            "float_accuracy", "tflite_accuracy", "accuracy_drop_points", "accuracy_drop_ci95_points", "agreement",
            "agreement_ci95", "conclusive", "n_images", "mean_abs_prob_diff", "max_abs_prob_diff")}
        card["parity"]["report"] = paths.parity.name
        card["parity_passed"] = bool(r["passed"])
    return card
