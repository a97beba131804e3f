"""A run folder -> the page's content (:class:`edgecls.report.content.Report`), with no TensorFlow.

Reads the run's own files (scan.json, split.json, history.json, metrics.json, pruning.json, the
export cards and parity reports, RUN/device/<host>/) and what :mod:`edgecls.report.collect` kept in
RUN/report/. Whatever is missing becomes a note on the page saying how to get it, never an error:
a run from before the report existed, or whose photos moved, still gets a page.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls.core.io import read_json
from edgecls.core.rundir import RunDir
from edgecls.report import calibration as cal
from edgecls.report.collect import MAX_CHANGED_SHOWN, MAX_MISTAKES_SHOWN, evaluated_split, worst_first
from edgecls.report.content import (
    AttentionPart, ClassFigures, ConfidencePart, DataPart, DevicePart, ExportPart, Report, Shot, TrainingPart,
)
from edgecls.report.store import HeldOut, Store, file_sha256, thumb_name

DEVICE_DIR = "device"  # RUN/device/<host>/, where deploy brings the device's results (edgecls.deploy.bundle)
COLLECT_HINT = "edgecls report RUN"


def _json(path: Path) -> Optional[Any]:
    """A JSON file of the run, or None when it is absent or unreadable (the page notes it, never fails on it)."""
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


class _Assembler:
    def __init__(self, run: RunDir) -> None:
        self.run, self.store = run, Store(run)
        self.labels = run.read_labels()
        self.notes: list[str] = []

    def label(self, i: int) -> str:
        return self.labels[i] if 0 <= i < len(self.labels) else f"class {i}"

    # -- data ------------------------------------------------------------------------------------
    def data(self) -> Optional[DataPart]:
        scan, split = _json(self.run.scan_json), _json(self.run.split_json)
        if split is None:
            self.notes.append("split.json is missing: the data section is empty")
            return None
        counts = {s: {name: 0 for name in self.labels} for s in ("train", "val", "test")}
        for s in counts:
            for _, lab in split.get(s, []):
                counts[s][self.label(int(lab))] += 1
        skipped = [(str(d.get("path")), str(d.get("reason"))) for d in (scan or {}).get("skipped", [])]
        part = DataPart(root=str(split.get("root", "")), layout=str(split.get("layout", "")), classes=self.labels,
                        counts=counts, skipped=skipped, exif_oriented=len((scan or {}).get("exif_oriented") or []))
        if scan is None:
            self.notes.append("scan.json is missing (a resumed or copied run): skipped files are not listed")
        for name, rels in self.store.samples().items():
            part.samples[name] = [Shot(rel, self.store.picture(thumb_name(rel)), name, name, 1.0) for rel in rels]
        return part

    # -- training --------------------------------------------------------------------------------
    def training(self, held: Optional[HeldOut]) -> Optional[TrainingPart]:
        from edgecls.train.report import classification_metrics

        history = (_json(self.run.history_json) or {}).get("epochs") or []
        metrics = _json(self.run.metrics_json) or {}
        config = (_json(self.run.config_json) or {}).get("train", {})
        pruning = _json(self.run.pruning_json)
        if held is None:
            if not history and not metrics:
                return None
            split = str(metrics.get("evaluated_on") or "test")
            return TrainingPart(history, split, metrics.get(f"{split}_accuracy"),
                                {k: ClassFigures(v["precision"], v["recall"], v["f1"], v["support"])
                                 for k, v in (metrics.get("per_class") or {}).items()},
                                metrics.get("confusion_matrix") or [], [], 0, int(metrics.get(f"n_{split}") or 0),
                                metrics.get(f"{split}_accuracy"), pruning, config)
        split = evaluated_split(held)
        part = held.split(split)
        m = classification_metrics(part.y, part.probs, self.labels)
        order = worst_first(part)
        mistakes = []
        for i in order[:MAX_MISTAKES_SHOWN]:
            name, y, _ = part.items[i]
            pred = int(part.probs[i].argmax())
            mistakes.append(Shot(name, self.store.picture(thumb_name(name)), self.label(y), self.label(pred),
                                 float(part.probs[i, pred]), f"p({self.label(y)}) = {part.probs[i, y]:.2f}"))
        recorded = metrics.get(f"{split}_accuracy") if metrics.get("evaluated_on") == split else None
        return TrainingPart(history, split, m["accuracy"],
                            {k: ClassFigures(v["precision"], v["recall"], v["f1"], v["support"])
                             for k, v in m["per_class"].items()},
                            m["confusion_matrix"], mistakes, len(order), m["n"], recorded, pruning, config)

    # -- where the model looks -------------------------------------------------------------------
    def attention(self, held: Optional[HeldOut]) -> Optional[AttentionPart]:
        cams = self.store.gradcam()
        if cams is None or held is None or cams.model_sha256 != held.model_sha256:
            return None
        right, wrong = [], []
        for c in cams.images:
            shot = Shot(c.name, self.store.picture(c.file), self.label(c.label), self.label(c.pred), c.score)
            (right if c.pred == c.label else wrong).append(shot)
        return AttentionPart(cams.layer, cams.split, right, wrong)

    # -- exported files --------------------------------------------------------------------------
    def exports(self) -> list[ExportPart]:
        from edgecls.optimize.gate import ParityReport

        out = []
        folder = self.run.export_dir
        for card_path in sorted(folder.glob("*.card.json")) if folder.is_dir() else []:
            card = _json(card_path) or {}
            name = str(card.get("model") or card_path.name.replace(".card.json", ".tflite"))
            q = card.get("quantization") or {}
            cost = (q.get("cost_vs_ptq") or {}).get("latency_ms_1thread") or {}
            changes = self.store.changes(name)
            latency, source = cost.get("shipped"), "card: 1 thread, this host, at export"
            if latency is None and changes is not None and changes.host_latency_ms is not None:
                latency, source = changes.host_latency_ms, "report: 1 thread, this host, median of 30"
            part = ExportPart(name, str(card.get("mode", "?")), card.get("file_bytes"), card.get("gzip_bytes"),
                              latency, source if latency is not None else "", passed=card.get("parity_passed"),
                              rejected=".REJECTED." in name, quantization_path=q.get("path"))
            parity_name = (card.get("parity") or {}).get("report")
            pj = _json(folder / parity_name) if parity_name else None
            if pj is not None:
                try:
                    part.parity = ParityReport.from_json(pj)
                except (KeyError, TypeError, ValueError):
                    self.notes.append(f"{parity_name} could not be read (another edgecls version?)")
            self._changes(part, changes)
            out.append(part)
        return out

    def _changes(self, part: ExportPart, changes: Any) -> None:
        model = self.run.export_dir / part.name
        if changes is None or (model.is_file() and changes.model_sha256 != file_sha256(model)):
            if part.name.endswith(".tflite"):
                self.notes.append(f"the images {part.name} changed are not computed yet: run '{COLLECT_HINT}'")
            return
        part.n_changed, part.n_images = len(changes.changed), changes.n_images
        part.n_changed_clear = sum(c.clear for c in changes.changed)
        part.changed_per_class = dict(changes.per_class)
        for c in changes.changed[:MAX_CHANGED_SHOWN]:
            part.changed.append(Shot(c.name, self.store.picture(thumb_name(c.name)), self.label(c.label),
                                     self.label(c.file_top), c.file_score,
                                     f"float: {self.label(c.float_top)} {c.float_score:.2f} (margin {c.float_margin:.2f}"
                                     f"{', clear' if c.clear else ', near-tie'})"))
        r = part.parity
        if r is not None and r.source.startswith("run ") and r.n_images == changes.n_images:
            per_class = {k: int(v.get("changed_top1", 0)) for k, v in r.per_class.items()}
            part.agrees_with_parity = (r.changed.get("all") == part.n_changed
                                       and r.changed.get("clear") == part.n_changed_clear
                                       and per_class == part.changed_per_class)
            if not part.agrees_with_parity:
                self.notes.append(f"{part.name}: the changed images recomputed for this page differ from "
                                  f"{Path(r.model).name}'s parity report ({r.changed.get('all')} changed there, "
                                  f"{part.n_changed} here); the parity report may be older than the file")

    # -- devices ---------------------------------------------------------------------------------
    def devices(self) -> list[DevicePart]:
        root = self.run.path / DEVICE_DIR
        out = []
        for host_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            verify = _latest(host_dir, "verify_")
            bench = _latest(host_dir, "bench_")
            if not verify and not bench:
                continue
            machine = next((b.get("machine", {}) for b in bench if isinstance(b.get("machine"), dict)), {})
            label = machine.get("board") or machine.get("cpu_model") or machine.get("arch") or ""
            out.append(DevicePart(host_dir.name, verify, bench, str(label)))
        return out

    # -- confidence ------------------------------------------------------------------------------
    def confidence(self, held: Optional[HeldOut]) -> Optional[ConfidencePart]:
        metrics = _json(self.run.metrics_json) or {}
        recorded = cal.from_metrics(metrics.get("calibration"))
        if held is None:
            if recorded is None:
                return None
            empty = cal.reliability(np.zeros((0, len(self.labels))), np.zeros(0, np.int64))
            return ConfidencePart(str(metrics.get("evaluated_on") or "test"), empty, [], [], recorded)
        split = evaluated_split(held)
        part = held.split(split)
        rel = cal.reliability(part.probs, part.y, name=f"{held.model} (its scores as shipped)")
        right, wrong = cal.confidence_histogram(part.probs, part.y)
        unscaled = None
        if recorded is not None and recorded.temperature:
            # Training put its temperature inside the saved model: undoing it shows what the scores were before.
            unscaled = cal.reliability(cal.with_temperature(part.probs, 1.0 / recorded.temperature), part.y,
                                       name=f"before temperature scaling (T = {recorded.temperature:.3g})")
        return ConfidencePart(split, rel, right, wrong, recorded, unscaled)


def _latest(folder: Path, prefix: str) -> list[dict[str, Any]]:
    """The newest ``<prefix><model stem>_<stamp>.json`` per model in ``folder`` (stamps sort as text)."""
    newest: dict[str, Path] = {}
    for p in sorted(folder.glob(f"{prefix}*.json")):
        stem = p.name[len(prefix):].rsplit("_", 1)[0]
        newest[stem] = p  # sorted: the last one seen is the newest
    out = []
    for stem, p in sorted(newest.items()):
        d = _json(p)
        if isinstance(d, dict):
            out.append({**d, "_file": p.name, "_model": stem})
    return out


def assemble(run: RunDir) -> Report:
    """The page's content for ``run``, from its files and RUN/report/ (no TensorFlow)."""
    a = _Assembler(run)
    held = a.store.predictions(run.model_path.name)
    if held is not None and run.model_path.is_file():
        if held.model_sha256 != file_sha256(run.model_path):
            a.notes.append(f"{run.model_path.name} changed since its predictions were made: run '{COLLECT_HINT}'")
            held = None
    elif held is None:
        a.notes.append(f"no predictions of {run.model_path.name} yet (mistakes, heatmaps, confidence): "
                       f"run '{COLLECT_HINT}' on the host")
    config = (_json(run.config_json) or {}).get("train", {})
    title = f"{run.path.resolve().name}: {config.get('backbone', '?')} {config.get('size', '?')} px, " \
            f"{len(a.labels)} classes"
    report = Report(title=title, run=str(run.path.resolve()),
                    created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), labels=a.labels)
    report.data = a.data()
    report.training = a.training(held)
    report.attention = a.attention(held)
    report.exports = a.exports()
    report.devices = a.devices()
    report.confidence = a.confidence(held)
    report.notes = a.notes
    return report

