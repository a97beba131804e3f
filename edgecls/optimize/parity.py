"""Parity: does the .tflite classify like the float Keras model it came from?

Both models see the *same* uint8 images (``data.load_images``: the training decode/resize): by
default every held-out image of the run (test + val splits), else ``--data DIR``.
The float model gets them as 0..255 float32; the .tflite goes through the device runtime's
``Classifier`` at batch 1 — the very code a Pi runs — so parity measures what ships.

Gates: accuracy drop (float minus tflite, in points) <= ``max_drop`` and top-1 agreement
>= ``min_agreement``. Both figures come with 95% confidence intervals (Wilson for agreement,
Newcombe's paired hybrid score interval for the drop): the gates decide on the point estimate,
and a report whose interval crosses a gate says the set is too small to be sure (``conclusive``).
For int8 models the report also names the tensors with the largest quantization error
(:mod:`edgecls.optimize.qdebug`). The float reference is the model named in the .tflite's card
(``model_pruned.keras`` for a pruned export), unless ``float_model`` overrides it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from edgecls.core.config import ParityConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json, read_json
from edgecls.core.rundir import RunDir, card_path_for
from edgecls.runtime.golden import CLEAR_MARGIN
from edgecls.runtime.scores import top1_margin

if TYPE_CHECKING:
    from edgecls.data import ScanReport

FLOAT_BATCH = 32
HELD_OUT_SPLITS = ("test", "val")
"""Splits parity uses by default: all held-out images (training images calibrate int8)."""
Z95 = 1.959963984540054
"""Two-sided 95% normal quantile."""


class ParityFailed(EdgeclsError):
    """A gate failed; ``report`` holds every figure."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


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
    """The scan of a ``--data`` image set whose classes are exactly the run's; else one clear error."""
    from edgecls import data

    scan = (data.scan_labels_csv(data_dir, labels_csv, decode=decode) if labels_csv
            else data.scan_dataset(data_dir, decode=decode))
    unknown = sorted(set(scan.classes) - set(labels))
    missing = sorted(set(labels) - set(scan.classes))
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
        names = [n for n in HELD_OUT_SPLITS if split.get(n)]
        items = [it for n in names for it in split[n]]
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
    """Per-tensor error of the PTQ model this .tflite came from; None for a QAT model (its float
    twin is not the run's model, so the debugger would describe something else)."""
    card_path = card_path_for(model_path)
    card = read_json(card_path) if card_path.is_file() else {}
    quant = card.get("quantization") or {}
    if quant.get("path") == "qat":
        return None
    from edgecls.optimize.convert import representative_images
    from edgecls.optimize.qdebug import DEBUG_IMAGES, diagnose

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


def run_parity(cfg: ParityConfig, *, raise_on_fail: bool = True, quant_error: Optional[dict[str, Any]] = None,
               float_keras: Any = None, images: Optional[GateImages] = None) -> dict[str, Any]:
    """Compare the float model and ``cfg.model`` on the same images; write ``cfg.json`` if set.

    ``quant_error`` (export passes the diagnosis it already made) goes into the report as is;
    otherwise an int8 model that came from post-training quantization is diagnosed here
    (``cfg.diagnose``). ``float_keras``: the float model already loaded from ``cfg.float_model``
    (export gates every candidate against the model it converted; loading it again per gate
    cost seconds each). ``images``: the images and the float model's outputs, made once by
    :func:`gate_images` (export gates up to five candidates on the same images; on 1000 photos
    each load and float pass cost seconds)."""
    from edgecls.runtime.classifier import Classifier

    if not 0.0 <= cfg.min_agreement <= 1.0:
        raise EdgeclsError(f"--min-agreement is a rate between 0 and 1, got {cfg.min_agreement}")
    if cfg.max_drop < 0:
        raise EdgeclsError(f"--max-drop is in accuracy points and must be >= 0, got {cfg.max_drop}")
    run = RunDir.open(cfg.run)
    model_path = Path(cfg.model)
    labels = run.read_labels()
    size = run.train_config().size
    clf = Classifier(model_path, labels=labels, num_threads=cfg.threads)
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
    report = compare(ref.p_float, p_lite, ref.y, labels, max_drop=cfg.max_drop, min_agreement=cfg.min_agreement)
    if quant_error is None and cfg.diagnose and clf.input_dtype != np.float32:
        quant_error = _diagnose_here(run, model_path, model, size)
    report["quant_error"] = quant_error
    report.update({
        "source": ref.source,
        "model": str(model_path.resolve()),
        "float_model": str(float_path.resolve()),
        "runtime": clf.runtime,
        "threads": cfg.threads,
    })
    if cfg.json:
        atomic_write_json(cfg.json, report)
    if raise_on_fail and not report["passed"]:
        raise ParityFailed(report["failure"], report)
    return report


def compare(
    p_float: np.ndarray, p_lite: np.ndarray, y: np.ndarray, labels: list[str], *, max_drop: float, min_agreement: float
) -> dict[str, Any]:
    """Parity figures of two probability arrays [N, C] against the true labels ``y``."""
    n = int(len(y))
    top_f, top_l = p_float.argmax(1), p_lite.argmax(1)
    acc_f = float(np.mean(top_f == y)) if n else 0.0
    acc_l = float(np.mean(top_l == y)) if n else 0.0
    drop = round(100.0 * (acc_f - acc_l), 4)
    agreement = float(np.mean(top_f == top_l)) if n else 0.0
    diff = np.abs(p_float - p_lite)
    per_class = {}
    for i, name in enumerate(labels):
        m = y == i
        k = int(m.sum())
        fa = float(np.mean(top_f[m] == i)) if k else None
        la = float(np.mean(top_l[m] == i)) if k else None
        per_class[name] = {"n": k, "float_accuracy": fa, "tflite_accuracy": la,
                           "change_points": round(100.0 * (la - fa), 4) if k else None}
    failures = []
    if drop > max_drop:
        failures.append(f"accuracy drop {drop:.2f} points > --max-drop {max_drop:g}")
    if agreement < min_agreement:
        failures.append(f"top-1 agreement {agreement:.4f} < --min-agreement {min_agreement:g}")
    agree_ci = wilson_interval(int(np.sum(top_f == top_l)), n)
    right_f, right_l = top_f == y, top_l == y
    drop_ci = paired_difference_interval(
        int(np.sum(right_f & right_l)), int(np.sum(right_f & ~right_l)),
        int(np.sum(~right_f & right_l)), int(np.sum(~right_f & ~right_l)))
    drop_ci_points = [round(100.0 * drop_ci[0], 4), round(100.0 * drop_ci[1], 4)]
    # Conclusive: the whole interval is on one side of each gate.
    agree_sure = agree_ci[0] >= min_agreement or agree_ci[1] < min_agreement
    drop_sure = drop_ci_points[1] <= max_drop or drop_ci_points[0] > max_drop
    conclusive = bool(n) and agree_sure and drop_sure
    ties = near_ties(p_float, p_lite)
    failure = None
    if failures:
        where = ""
        if ties["flipped"] and not ties["flipped_clear"]:  # says what kind of error is left
            where = (f"; every changed top-1 ({ties['flipped']}) was a near-tie (float margin < {CLEAR_MARGIN:g}), "
                     f"none of the {ties['n_clear']} clearly decided images changed")
            if ties["output_ties"]:
                where += (f"; {ties['output_ties']} of them are exact ties in the model's own output, which its "
                          "8-bit resolution cannot tell apart")
        failure = ("parity failed: " + " and ".join(failures) + where
                   + "; try more representative samples (--representative-samples), 'edgecls export --int8' "
                   "(it repairs: float layers, QAT), or a backbone that quantizes better (mobilenet_v2)")
    return {
        "float_accuracy": acc_f,
        "tflite_accuracy": acc_l,
        "accuracy_drop_points": drop,
        "agreement": agreement,
        "n_images": n,
        "per_class": per_class,
        "mean_abs_prob_diff": float(diff.mean()) if n else 0.0,
        "max_abs_prob_diff": float(diff.max()) if n else 0.0,
        "agreement_ci95": [round(agree_ci[0], 4), round(agree_ci[1], 4)],
        "accuracy_drop_ci95_points": drop_ci_points,
        "conclusive": conclusive,
        "near_ties": ties,
        "passed": not failures,
        "failure": failure,
        "gates": {"max_drop": max_drop, "min_agreement": min_agreement},
    }


def near_ties(p_float: np.ndarray, p_lite: np.ndarray, margin: float = CLEAR_MARGIN) -> dict[str, Any]:
    """Where the changed top-1s are: among images the float model decides with a clear margin (top-1
    minus top-2 probability >= ``margin``, the rule ``edgecls verify`` gates on) or among near-ties,
    whose top-1 any rounding can swap. On the hard benchmark set every flip left after bias
    correction was a near-tie (BENCHMARKS.md, issue 8).

    ``output_ties`` counts the changed top-1s where the model's output gives the float top-1 exactly
    the score of its own top-1: a uint8 softmax has steps of 1/256, so two classes closer than that
    come out equal and argmax takes the first. No file with that output can keep those images: on
    the hard set, the float model's own probabilities rounded to 1/256 already tie 2 of 336.
    """
    top_f = p_float.argmax(1)
    flipped = top_f != p_lite.argmax(1)
    clear = top1_margin(p_float) >= margin
    n_clear = int(clear.sum())
    flipped_clear = int(np.sum(flipped & clear))
    tied = p_lite[np.arange(len(top_f)), top_f] == p_lite.max(1)
    ci = wilson_interval(n_clear - flipped_clear, n_clear)
    return {"margin": margin, "n_clear": n_clear, "flipped": int(np.sum(flipped)), "flipped_clear": flipped_clear,
            "output_ties": int(np.sum(flipped & tied)),
            "agreement_clear": (1.0 - flipped_clear / n_clear) if n_clear else None,
            "agreement_clear_ci95": [round(ci[0], 4), round(ci[1], 4)] if n_clear else None}


def more_images_could_pass(report: dict[str, Any]) -> bool:
    """The gate failed, and every gate that failed did so inside its own 95% interval: on more images it
    could pass. False when one failed gate's interval lies wholly on the failing side (more images of the
    same kind would fail it too), and when nothing failed."""
    g = report["gates"]
    failed = []
    if report["agreement"] < g["min_agreement"]:
        failed.append(report["agreement_ci95"][1] >= g["min_agreement"])
    if report["accuracy_drop_points"] > g["max_drop"]:
        failed.append(report["accuracy_drop_ci95_points"][0] <= g["max_drop"])
    return bool(failed) and all(failed)


def format_parity(report: dict[str, Any]) -> str:
    """A readable table of a parity report."""
    lines = [
        f"Parity on {report['n_images']} images ({report.get('source', '?')})",
        f"  float model : {report.get('float_model', '?')}",
        f"  tflite model: {report.get('model', '?')}",
        "",
        f"  {'class':<20} {'n':>5} {'float':>8} {'tflite':>8} {'change':>8}",
    ]
    for name, c in report["per_class"].items():
        if c["n"]:
            lines.append(f"  {name:<20} {c['n']:>5} {100 * c['float_accuracy']:>7.1f}% "
                         f"{100 * c['tflite_accuracy']:>7.1f}% {c['change_points']:>+8.1f}")
        else:
            lines.append(f"  {name:<20} {0:>5} {'-':>8} {'-':>8} {'-':>8}")
    g = report["gates"]
    lines += [
        f"  {'all':<20} {report['n_images']:>5} {100 * report['float_accuracy']:>7.1f}% "
        f"{100 * report['tflite_accuracy']:>7.1f}% {0.0 - report['accuracy_drop_points']:>+8.1f}",
        "",
        f"  accuracy drop : {report['accuracy_drop_points']:.2f} points{_ci(report, 'accuracy_drop_ci95_points', '.2f')}"
        f" (gate <= {g['max_drop']:g})",
        f"  agreement     : {report['agreement']:.4f}{_ci(report, 'agreement_ci95', '.4f')} (gate >= {g['min_agreement']:g})",
        f"  |prob diff|   : mean {report['mean_abs_prob_diff']:.4f}, max {report['max_abs_prob_diff']:.4f}",
    ]
    t = report.get("near_ties")
    if t and t["flipped"]:
        clear = (f"; agreement on them {t['agreement_clear']:.4f}{_ci(t, 'agreement_clear_ci95', '.4f')}"
                 if t["n_clear"] else "")
        lines.append(f"  changed top-1 : {t['flipped']}, {t['flipped_clear']} of them on the {t['n_clear']} images the "
                     f"float model decides with a margin >= {t['margin']:g}{clear}")
        if t.get("output_ties"):
            lines.append(f"  output ties   : {t['output_ties']} of the changed top-1s score exactly equal in the model's "
                         "output (its 8-bit steps cannot separate them)")
    from edgecls.optimize.qdebug import format_quant_error

    lines += format_quant_error(report.get("quant_error"))
    result = "PASSED" if report["passed"] else "FAILED"
    if report.get("conclusive") is False:
        result += (f" (inconclusive: a 95% interval crosses a gate; {report['n_images']} images are too few "
                   "to decide: more held-out images would (a larger test split; parity --data DIR; export --parity-data DIR))")
    lines.append(f"  result        : {result}")
    return "\n".join(lines)


def _ci(report: dict[str, Any], key: str, fmt: str) -> str:
    ci = report.get(key)
    return f" [95% CI {format(ci[0], fmt)} .. {format(ci[1], fmt)}]" if ci else ""


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a rate k/n (good near 0 and 1, where the plain one is not)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_interval(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of p1 - p2 for paired outcomes (Newcombe 1998, method 10).

    a: both right, b: only the first (float) right, c: only the second (tflite) right, d: both
    wrong. The same images are scored twice, so the two accuracies are correlated and an
    unpaired interval would be far too wide.
    """
    n = a + b + c + d
    if n == 0:
        return -1.0, 1.0
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if den > 0:
        num = a * d - b * c
        # Newcombe's continuity correction of the correlation estimate.
        num = max(num - n / 2, 0.0) if num > 0 else num
        phi = num / math.sqrt(den)
    diff = p1 - p2
    lower = diff - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    upper = diff + math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return max(-1.0, lower), min(1.0, upper)
