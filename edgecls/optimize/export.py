"""Export a run's Keras model to TFLite: float32, float16, dynamic-range or full int8.

``export_run(ExportConfig)`` writes one file set per mode into ``RUN/export/`` (modes coexist)::

    model_<mode>.tflite          model_pruned_<mode>.tflite with --pruned
    model_<mode>.card.json       what the file is, where it came from, how it did in parity
    parity_<mode>.json           int8 (the gate's full report)
    model_<mode>.golden.npz      held-out images + this host runtime's outputs (edgecls verify)
    labels.txt

The set is a transaction (:mod:`edgecls.optimize.transaction`): candidates are built, checked
and gated in a staging folder and the set is moved into place only when it passed.

int8: the methods of :func:`edgecls.optimize.int8.plan.plan` build one file each, in order; each
is checked (:mod:`edgecls.optimize.checks`) and gated (:mod:`edgecls.optimize.gate`); the first
that passes and meets the aim (:func:`edgecls.optimize.gate.meets_aim`) ships, or, after the cheap
methods, the best that passed. When none passes, the best is kept as ``model_<mode>.REJECTED.tflite``
(+ card and report) and export fails. The card is written by :mod:`edgecls.optimize.card`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from edgecls import __version__
from edgecls.core.config import ExportConfig, ParityConfig, TrainConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes, atomic_write_json, moved_error
from edgecls.core.rundir import ExportFiles, RunDir, RunLock, write_labels
from edgecls.optimize.gate import meets_aim
from edgecls.optimize.transaction import ExportTransaction, lock_name, recover

# Measured with ai-edge-litert + XNNPACK, 1 thread, 224 px, on a 2-core AVX2 machine.
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

    def __init__(self, message: str, card: dict[str, Any], parity: Any = None):
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


@dataclass
class Candidate:
    """One file export tried: how it was made, the checks' warnings, and its gate report."""

    method: str
    built: Any  # int8.method.Built
    file: Path
    info: Any  # checks.TfliteInfo
    warnings: list[str] = field(default_factory=list)
    report: Any = None  # gate.ParityReport; None when nothing was gated
    latency_ms: Optional[float] = None

    @property
    def data(self) -> bytes:
        return self.built.data

    @property
    def passed(self) -> bool:
        return self.report is None or self.report.passed

    def rank(self) -> tuple[float, float, float]:
        """Higher is better: clear-decision agreement, all-image agreement, then a smaller drop."""
        r = self.report
        clear = r.clear_agreement if r.clear_agreement is not None else 1.0
        return clear, r.agreement, -r.accuracy_drop_points

    def summary(self) -> dict[str, Any]:
        r = self.report
        return {"path": self.method, "float_layers": len(self.built.float_tensors), "file_bytes": len(self.data),
                "clear_agreement": r.clear_agreement if r else None, "agreement": r.agreement if r else None,
                "accuracy_drop_points": r.accuracy_drop_points if r else None,
                "mean_abs_prob_diff": r.mean_abs_prob_diff if r else None, "passed": r.passed if r else None}


@dataclass(frozen=True)
class _RunFacts:
    """What export reads of the run, read once before anything is written."""

    model: Path
    """The float model file: the trained one, or the pruned one with --pruned."""
    train: TrainConfig
    labels: list[str]
    unknown: Optional[dict[str, Any]]
    """The run's unknown rule (chosen by training, or again by pruning), written into the file's metadata."""


def export_run(cfg: ExportConfig) -> dict[str, Any]:
    """Convert, check, gate (int8: the plan's methods in turn), write the file set as one transaction.
    Returns the card; raises :class:`ExportFailed` (nothing replaced) when no candidate passes."""
    cfg.check()
    run = RunDir.open(cfg.run)
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
    facts = _RunFacts(source, run.train_config(), run.read_labels(), run.unknown_rule(cfg.pruned))
    if cfg.parity_data:
        from edgecls.optimize.parity import check_gate_data

        check_gate_data(run, cfg.parity_data)
    names = [paths.parity.name, paths.golden.name, paths.labels.name, paths.card.name, paths.model.name]
    stem = paths.model.name[: -len(".tflite")]
    try:
        paths.model.parent.mkdir(parents=True, exist_ok=True)
        lock = RunLock(paths.model.parent, f"edgecls export {run.path} --{cfg.mode}", name=lock_name(stem),
                       remove=True).acquire()
    except OSError as e:
        raise EdgeclsError(f"cannot write into {paths.model.parent}: {e.strerror or e}") from None
    try:  # one export of a file set at a time: a second would delete the first's staging folder
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
            return _Export(cfg, run, facts, paths, tx).execute()
        except OSError as e:
            raise moved_error(e, tx.staging, paths.model.parent) from None
        finally:
            tx.abort()  # a no-op after commit/reject (the staging folder is gone)
    finally:
        lock.release()


class _Export:
    """One export: the run, its float model, the staging transaction, and the candidates tried."""

    def __init__(self, cfg: ExportConfig, run: RunDir, facts: _RunFacts, paths: ExportFiles, tx: ExportTransaction):
        self.cfg, self.run, self.paths, self.tx = cfg, run, paths, tx
        self.source, self.tcfg, self.labels, self.unknown = facts.model, facts.train, facts.labels, facts.unknown
        self.warnings: list[str] = []
        self.metadata_reason: Optional[str] = None
        self.model: Any = None
        self.size = 0
        self.temperature: Optional[float] = None
        self.representative: Any = None
        self._gate_images: Any = None

    def note(self, message: str) -> None:
        self.warnings.append(message)
        warn(message)

    def execute(self) -> dict[str, Any]:
        from edgecls.train.model_io import load_model

        cfg = self.cfg
        if cfg.mode == "int8":
            backbone_warning = int8_backbone_warning(self.tcfg.backbone, self.tcfg.minimalistic)
            if backbone_warning:
                self.note(backbone_warning)
        from edgecls.train.calibration import temperature_of

        self.model = load_model(self.source)
        self.size = int(self.model.input_shape[1])
        self.temperature = temperature_of(self.model)
        if self.size != self.tcfg.size:
            raise EdgeclsError(f"{self.source.name} takes {self.size} px but the run's config says {self.tcfg.size}; "
                               "the run is inconsistent")
        chosen, tried = self._int8() if cfg.mode == "int8" else (self._float(), [])
        for w in chosen.warnings:
            self.note(w)
        return self._finish(chosen, tried)

    # -- making candidates ----------------------------------------------------------------------

    def _float(self) -> Candidate:
        from edgecls.optimize.convert import convert_model
        from edgecls.optimize.int8.method import Built

        return self.stage(self.cfg.mode, Built(convert_model(self.model, self.cfg.mode)))

    def _int8(self) -> tuple[Candidate, list[Candidate]]:
        """The plan's methods in turn until one passes the gate and meets the aim (:func:`meets_aim`). One that
        passes short of the aim is followed by the plan's next cheap methods only, and the best passing file
        ships; when none passes, the best of them is kept as REJECTED."""
        from edgecls.optimize.convert import representative_images
        from edgecls.optimize.int8.method import Context
        from edgecls.optimize.int8.plan import plan

        cfg = self.cfg
        self.representative = representative_images(self.run, self.size, cfg.representative_samples, self.tcfg.seed)
        ctx = Context(self.model, self.representative, io=cfg.io, allow_float_fallback=cfg.allow_float_fallback,
                      seed=self.tcfg.seed, workdir=self.tx.staging, log=lambda m: print(m, file=sys.stderr))
        tried: list[Candidate] = []
        for method in plan(cfg):
            passing = [c for c in tried if c.passed]
            if passing and not method.cheap:
                break  # a file passed, short of the aim: only a cheap method is worth trying for more
            built = method.build(ctx)
            if built is None:  # nothing to try on this model (said through ctx.log)
                continue
            cand = self.stage(method.name, built)
            if cfg.parity:
                self.gate(cand)
            tried.append(cand)
            if cand.passed and (cand.report is None or meets_aim(cand.report)):
                return cand, tried
        if not tried:
            raise EdgeclsError("no int8 method had anything to try on this model")
        passing = [c for c in tried if c.passed]
        return max(passing or tried, key=Candidate.rank), tried

    def stage(self, method: str, built: Any) -> Candidate:
        """Write a candidate into the staging folder (with metadata) and check it against its promise."""
        from edgecls.optimize.checks import check_tflite, inspect_tflite

        built.data = self.with_metadata(built.data)
        file = self.tx.path(f"candidate-{method}.tflite")
        atomic_write_bytes(file, built.data)
        info = inspect_tflite(file)
        # Float tensors a selective file keeps on purpose are not a broken promise.
        allow = self.cfg.allow_float_fallback or bool(built.float_tensors)
        warnings = check_tflite(info, mode=self.cfg.mode, size=self.size, io=self.cfg.io,
                                allow_float_fallback=allow, path=self.paths.model.name)
        if built.float_tensors:
            warnings = [w for w in warnings if not w.startswith("mixed model")]
        return Candidate(method, built, file, info, warnings)

    def with_metadata(self, tflite: bytes) -> bytes:
        from edgecls.optimize.metadata import MetadataUnavailable, add_image_classifier_metadata
        from edgecls.core.unknown import RULE_FILE, rule_file

        t, rule = self.tcfg, self.unknown
        files = {RULE_FILE: rule_file(rule["threshold"], keep=rule.get("keep"), temperature=self.temperature,
                                      chosen_on=rule.get("chosen", ""), class_index=rule.get("class_index"))} if rule else {}
        try:
            return add_image_classifier_metadata(
                tflite, self.labels, name=f"edgecls {t.backbone} {self.cfg.mode}",
                description=f"{t.backbone} alpha {t.alpha} {self.size}px, {len(self.labels)} classes, "
                f"exported by edgecls {__version__}; input raw RGB 0..255",
                score_threshold=rule["threshold"] if rule and rule["threshold"] > 0 else None, files=files,
            )
        except MetadataUnavailable as e:
            if self.metadata_reason is None:
                self.metadata_reason = str(e)
                self.note(f"the model has no metadata (labels/normalisation): {e}")
            return tflite

    def gate(self, cand: Candidate) -> None:
        """The candidate's parity report against the float model, on images loaded and scored once."""
        from edgecls.optimize.parity import gate_images, run_parity

        if self._gate_images is None:
            self._gate_images = gate_images(self.run, self.cfg.parity_data, self.model)
        cfg = self.cfg
        cand.report = run_parity(
            ParityConfig(run=str(self.run.path), model=str(cand.file), max_drop=cfg.max_drop,
                         min_clear_agreement=cfg.min_clear_agreement, min_agreement=cfg.min_agreement,
                         float_model=str(self.source), diagnose=False, data=cfg.parity_data),
            raise_on_fail=False, quant_error=cand.built.quant_error, float_keras=self.model, images=self._gate_images)
        cand.report.model = str(self.paths.model.resolve())
        cand.report.quantization_path = cand.method
        r = cand.report
        clear = f"{r.clear_agreement:.4f}" if r.clear_agreement is not None else "n/a"
        print(f"int8 {cand.method}: clear-decision agreement {clear}, all-image agreement {r.agreement:.4f}, "
              f"accuracy drop {r.accuracy_drop_points:.2f} points -> {'passed' if r.passed else 'failed'}",
              file=sys.stderr)

    # -- writing the set ------------------------------------------------------------------------

    def _finish(self, chosen: Candidate, tried: list[Candidate]) -> dict[str, Any]:
        from edgecls.optimize.card import make_card

        paths, tx = self.paths, self.tx
        card = make_card(self, chosen, tried)
        if chosen.report is not None:
            atomic_write_json(tx.path(paths.parity.name), chosen.report.as_json())
        write_labels(tx.path(paths.labels.name), self.labels)
        os.replace(chosen.file, tx.path(paths.model.name))
        publish = [paths.labels.name] + ([paths.parity.name] if chosen.report is not None else [])
        if chosen.passed:
            golden = self._write_golden(tx.path(paths.model.name))
            if golden:
                publish.append(paths.golden.name)
            card["golden"] = paths.golden.name if golden else None
            atomic_write_json(tx.path(paths.card.name), card)
            tx.commit(publish + [paths.card.name, paths.model.name])
            return card
        self._reject(chosen, tried, card, publish)
        raise AssertionError("unreachable")  # _reject raises

    def _reject(self, chosen: Candidate, tried: list[Candidate], card: dict[str, Any], publish: list[str]) -> None:
        from edgecls.optimize.transaction import rejected_name

        paths, report = self.paths, chosen.report
        card["golden"] = None
        card["model"] = rejected_name(paths.model.name)
        card["parity"]["report"] = rejected_name(paths.parity.name)
        report.model = str(paths.model.with_name(card["model"]).resolve())
        atomic_write_json(self.tx.path(paths.parity.name), report.as_json())
        atomic_write_json(self.tx.path(paths.card.name), card)
        rejected = self.tx.reject([n for n in publish if n != paths.labels.name] + [paths.card.name, paths.model.name])
        raise ExportFailed(f"int8 {report.failure()}; tried {_tries(tried)}; {self._advice(report)}. Nothing was "
                           f"replaced; the best candidate is kept as {paths.model.with_name(rejected[-1])} "
                           "(do not ship it)", card, report)

    def _advice(self, report: Any) -> str:
        if not self.cfg.repair:
            return "repairs were off (--no-repair)"
        advice = "try more --representative-samples or more --qat-epochs"
        if self.tcfg.backbone in POOR_INT8_BACKBONES:
            advice += ", or a backbone that quantizes better (mobilenet_v2)"
        if report.more_images_could_pass():
            advice += (f"; the gate's {report.n_images} images are too few to decide (every failed gate lies inside its "
                       "95% interval): --parity-data DIR gates on more held-out photos")
        return advice

    def _write_golden(self, model_file: Path) -> Optional[Path]:
        """~N held-out images (test split, else val; stratified) and this runtime's outputs."""
        if self.cfg.golden_images == 0:
            return None
        from edgecls import data
        from edgecls.runtime.golden import write_golden_set

        root, split = data.load_split(self.run)
        items = split.get("test") or split.get("val") or []
        if not items:
            self.note("no test or validation images in the run: no golden set written (edgecls verify needs one)")
            return None
        x, y = data.load_images(root, data.stratified_sample(items, self.cfg.golden_images, self.tcfg.seed), self.size)
        return write_golden_set(model_file, x, y, self.labels, out=self.tx.path(self.paths.golden.name))


def _tries(tried: list[Candidate]) -> str:
    out = []
    for c in tried:
        clear = c.report.clear_agreement
        out.append(f"{c.method} (clear-decision agreement {clear:.4f})" if clear is not None else c.method)
    return ", ".join(out)
