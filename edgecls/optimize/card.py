"""The model card written beside every exported file: what it is, where it came from, how it did.

The card is JSON (``model_<mode>.card.json``). For int8 it says which method made the file, what the
others tried did, what the file costs against plain PTQ (latency and size, measured here), and the
parity gate's figures: what was gated, what was only reported, and the verdict.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgecls import __version__
from edgecls.core.io import read_json

LATENCY_WARMUP = 5
LATENCY_RUNS = 30
"""Invokes timed (1 thread, after warm-up) for the card's latency cost of a method against plain PTQ."""
GATED = {
    "accuracy_drop": "float accuracy minus the file's, in points",
    "clear_agreement": "top-1 agreement on the images the float model decides clearly (top-1 beats top-2 by the "
                       "clear margin): the decisions a user relies on",
}
REPORTED = {
    "agreement": "top-1 agreement on all images, near-ties included (gated only with --min-agreement): a near-tie "
                 "flips under any rounding",
    "changed": "changed top-1s, split into clear decisions, near-ties and exact ties in the file's 8-bit output "
               "(a uint8 softmax cannot separate classes closer than 1/256)",
}


def measure_latency_ms(path: Path, size: int, threads: int = 1) -> float:
    """Median invoke time (ms) of ``path`` on one seeded image, after warm-up (the card's cost figure)."""
    import numpy as np

    from edgecls.runtime.classifier import Classifier

    clf = Classifier(path, labels=None, num_threads=threads)
    img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    tensor = clf.preprocess(img)
    for _ in range(LATENCY_WARMUP):
        clf.invoke(tensor)
    times = []
    for _ in range(LATENCY_RUNS):
        t = time.perf_counter()
        clf.invoke(tensor)
        times.append(time.perf_counter() - t)
    return round(1000.0 * float(np.median(times)), 4)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from edgecls.core.keras import tf

    out = {"edgecls": __version__, "tensorflow": tf.__version__}
    try:
        out["ai_edge_litert"] = version("ai-edge-litert")
    except PackageNotFoundError:
        pass
    return out


def _quantization(export: Any, chosen: Any, tried: list[Any]) -> dict[str, Any]:
    """How the int8 file was made, what else was tried, and its cost against plain PTQ."""
    ptq = next((c for c in tried if c.method == "ptq"), None)
    cost = None
    if ptq is not None and chosen is not ptq:
        ptq.latency_ms = measure_latency_ms(ptq.file, export.size)
        chosen.latency_ms = measure_latency_ms(chosen.file, export.size)
        cost = {"latency_ms_1thread": {"ptq": ptq.latency_ms, "shipped": chosen.latency_ms,
                                       "ratio": round(chosen.latency_ms / ptq.latency_ms, 3) if ptq.latency_ms else None},
                "file_bytes": {"ptq": len(ptq.data), "shipped": len(chosen.data),
                               "difference": len(chosen.data) - len(ptq.data)}}
    return {"path": chosen.method, "float_layers": chosen.built.float_tensors, **chosen.built.record,
            "attempts": [c.summary() for c in tried], "cost_vs_ptq": cost, "repair": export.cfg.repair}


def card_parity(report: Any, name: str) -> dict[str, Any]:
    """The card's parity section: the gate's figures, what was gated and what only reported, the report's name."""
    keys = ("float_accuracy", "tflite_accuracy", "accuracy_drop_points", "accuracy_drop_ci95_points", "n_clear",
            "clear_agreement", "clear_agreement_ci95", "agreement", "agreement_ci95", "changed", "n_images",
            "mean_abs_prob_diff", "max_abs_prob_diff", "ece_float", "ece_file")
    full = report.as_json()
    out = {k: full[k] for k in keys}
    out.update(gates=full["gates"], gated=GATED, reported=REPORTED, conclusive=full["conclusive"],
               source=full["source"], report=name)
    return out


def make_card(export: Any, chosen: Any, tried: list[Any]) -> dict[str, Any]:
    """The card of ``chosen`` (a Candidate of ``export``, an :class:`edgecls.optimize.export._Export`)."""
    cfg, run, tcfg, paths = export.cfg, export.run, export.tcfg, export.paths
    info = chosen.info
    sparsity = None
    if cfg.pruned and run.pruning_json.is_file():
        pj = read_json(run.pruning_json)
        sparsity = {"measured": pj.get("sparsity"), "target": pj.get("target_sparsity")}
    int8 = cfg.mode == "int8"
    r = chosen.report
    return {
        "model": paths.model.name,
        "mode": cfg.mode,
        "backbone": tcfg.backbone,
        "alpha": tcfg.alpha,
        "minimalistic": tcfg.minimalistic,
        "input": {"size": export.size, **asdict(info.input)},
        "output": asdict(info.output),
        "labels": export.labels,
        "mixed": bool(info.float_ops) if int8 else None,
        "float_ops": info.float_ops if int8 else [],
        "pruned": cfg.pruned,
        "sparsity": sparsity,
        "file_bytes": len(chosen.data),
        "gzip_bytes": len(gzip.compress(chosen.data, compresslevel=9)),
        "sha256": hashlib.sha256(chosen.data).hexdigest(),
        "temperature": export.temperature,
        "unknown": export.unknown,
        "metadata": export.metadata_reason is None,
        "metadata_missing_reason": export.metadata_reason,
        "representative_samples": int(len(export.representative)) if export.representative is not None else None,
        "run": str(run.path.resolve()),
        "float_model": export.source.name,
        "quantization": _quantization(export, chosen, tried) if int8 else None,
        "parity": card_parity(r, paths.parity.name) if r is not None else None,
        "parity_passed": r.passed if r is not None else None,
        "warnings": export.warnings,
        "export_config": asdict(cfg),
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
