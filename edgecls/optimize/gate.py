"""The parity gate: what an exported file promises about its decisions, as a typed report.

A quantized file is compared with the float model it came from on the same images
(:mod:`edgecls.optimize.parity` runs it). The default gate promises what a user can feel:

- **accuracy drop** (float minus file, in points) ``<= max_drop`` (1.0), and
- **clear-decision agreement** ``>= min_clear_agreement`` (0.99): of the images the float model
  decides clearly (its top-1 beats its top-2 by at least ``clear_margin``, 0.10, the margin
  ``edgecls verify`` uses), that share keeps its top-1.

Top-1 agreement over *all* images, the changed top-1s among near-ties, and the output ties are
reported, and gated only when asked (``min_agreement``): a near-tie flips under any rounding, and a
uint8 softmax cannot keep two classes apart that are closer than 1/256. Every gated figure comes
with a 95 % interval (Wilson for a rate, Newcombe's paired interval for the drop); a gate whose
interval crosses its limit is *undecided* on these images, and more images could change its verdict.

:class:`ParityReport` is what code reads (by attribute) and what ``parity_<mode>.json`` holds
(:meth:`ParityReport.as_json`, :meth:`ParityReport.from_json`). Pure numpy: no TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

import numpy as np

from edgecls.runtime.golden import CLEAR_MARGIN
from edgecls.runtime.scores import top1_margin
from edgecls.train.calibration import ece

Z95 = 1.959963984540054
"""Two-sided 95% normal quantile."""


@dataclass(frozen=True)
class Gates:
    """The limits a file must meet."""

    max_drop: float = 1.0
    """Largest accepted accuracy drop, in points."""
    min_clear_agreement: float = 0.99
    """Smallest accepted top-1 agreement on the clearly decided images."""
    min_agreement: Optional[float] = None
    """Smallest accepted top-1 agreement on all images (off: None)."""
    clear_margin: float = CLEAR_MARGIN
    """Float top-1 minus top-2 probability at which an image counts as clearly decided."""


AIM_CLEAR_AGREEMENT = 0.995
AIM_MAX_DROP = 0.5
"""What export aims for beyond the default gate (0.99, 1 point): a file that passes the gate but not this
is followed by the plan's next cheap method, and the better of the two ships (:func:`meets_aim`)."""


def meets_aim(report: "ParityReport") -> bool:
    """Clear-decision agreement >= 0.995 (or no clear decision to measure) and a drop <= 0.5 point."""
    clear = report.clear_agreement
    return (clear is None or clear >= AIM_CLEAR_AGREEMENT) and report.accuracy_drop_points <= AIM_MAX_DROP


@dataclass(frozen=True)
class Check:
    """One gate's verdict on one file."""

    gate: str
    """accuracy_drop | clear_agreement | agreement"""
    option: str
    """The option that sets its limit (named in messages)."""
    value: Optional[float]
    """None: nothing to measure (no clearly decided image)."""
    limit: float
    ci95: tuple[float, float]
    lower_is_better: bool = False

    @property
    def passed(self) -> bool:
        if self.value is None:
            return True
        return self.value <= self.limit if self.lower_is_better else self.value >= self.limit

    @property
    def decided(self) -> bool:
        """The whole 95% interval lies on one side of the limit: more images of the same kind agree."""
        if self.value is None:
            return False
        lo, hi = self.ci95
        if self.lower_is_better:
            return hi <= self.limit or lo > self.limit
        return lo >= self.limit or hi < self.limit

    def describe(self) -> str:
        """'clear-decision agreement 0.9712 < 0.99 (--min-clear-agreement)'."""
        name = {"accuracy_drop": "accuracy drop", "clear_agreement": "clear-decision agreement",
                "agreement": "top-1 agreement"}[self.gate]
        if self.value is None:
            return f"{name}: nothing to measure"
        value = f"{self.value:.2f} points" if self.gate == "accuracy_drop" else f"{self.value:.4f}"
        sign = ("<=" if self.passed else ">") if self.lower_is_better else (">=" if self.passed else "<")
        return f"{name} {value} {sign} {self.limit:g} ({self.option})"


@dataclass
class ParityReport:
    """Every figure of one parity check, and its verdict."""

    n_images: int
    float_accuracy: float
    tflite_accuracy: float
    accuracy_drop_points: float
    accuracy_drop_ci95_points: tuple[float, float]
    n_clear: int
    """Images the float model decides clearly (top-1 beats top-2 by >= the gates' clear margin)."""
    clear_agreement: Optional[float]
    """Share of those that keep their top-1 (None when there are none)."""
    clear_agreement_ci95: tuple[float, float]
    agreement: float
    """Top-1 agreement over all images, near-ties included."""
    agreement_ci95: tuple[float, float]
    changed: dict[str, int]
    """Changed top-1s: all, clear (among the clearly decided), near_ties, output_ties (scored exactly equal in
    the file's own output, which its 8-bit steps cannot separate)."""
    mean_abs_prob_diff: float
    max_abs_prob_diff: float
    ece_float: float
    """Expected calibration error (15 bins) of the float model's scores on these images."""
    ece_file: float
    """The same of the file's: how much quantization moved what its scores mean."""
    per_class: dict[str, dict[str, Any]]
    gates: Gates
    checks: list[Check]
    source: str = ""
    model: str = ""
    float_model: str = ""
    runtime: str = ""
    threads: int = 0
    quant_error: Optional[dict[str, Any]] = None
    """The worst int8 tensors (:mod:`edgecls.optimize.int8.debugger`), when measured."""
    quantization_path: Optional[str] = None
    """How the file was made (export's method name), when export gated it."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Figures other stages add (e.g. calibration error)."""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def conclusive(self) -> bool:
        """Every gate's 95% interval lies on one side of its limit."""
        return bool(self.n_images) and all(c.decided for c in self.checks)

    def more_images_could_pass(self) -> bool:
        """The gate failed, and every failed gate failed inside its own 95% interval: on more images it could
        pass. False when a failed gate's interval lies wholly on the failing side, and when nothing failed."""
        return bool(self.failed) and not any(c.decided for c in self.failed)

    def failure(self) -> Optional[str]:
        """One sentence: which gates failed and what kind of error is left, or None."""
        if self.passed:
            return None
        text = "parity failed: " + " and ".join(c.describe() for c in self.failed)
        ch = self.changed
        if ch["all"] and not ch["clear"]:
            text += (f"; every changed top-1 ({ch['all']}) was a near-tie (float margin < {self.gates.clear_margin:g}), "
                     f"none of the {self.n_clear} clearly decided images changed")
        if ch["output_ties"]:
            text += (f"; {ch['output_ties']} changed top-1s score exactly equal in the file's own output, which its "
                     "8-bit steps cannot separate")
        return text

    def as_json(self) -> dict[str, Any]:
        """The report as JSON values (intervals as lists), with its verdict."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("gates", "checks")}
        for key in ("accuracy_drop_ci95_points", "clear_agreement_ci95", "agreement_ci95"):
            out[key] = list(out[key])
        out["gates"] = asdict(self.gates)
        out["checks"] = [{**asdict(c), "ci95": list(c.ci95), "passed": c.passed, "decided": c.decided}
                         for c in self.checks]
        out.update(passed=self.passed, conclusive=self.conclusive, failure=self.failure())
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ParityReport":
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["gates"] = Gates(**d["gates"])
        keep = {f.name for f in fields(Check)}
        kwargs["checks"] = [Check(**{k: (tuple(v) if k == "ci95" else v) for k, v in c.items() if k in keep})
                            for c in d["checks"]]
        for key in ("accuracy_drop_ci95_points", "clear_agreement_ci95", "agreement_ci95"):
            kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def compare(p_float: np.ndarray, p_lite: np.ndarray, y: np.ndarray, labels: list[str],
            gates: Gates = Gates()) -> ParityReport:
    """The parity figures of two probability arrays [N, C] against the true labels ``y``, checked by ``gates``."""
    n = int(len(y))
    top_f, top_l = p_float.argmax(1), p_lite.argmax(1)
    right_f, right_l = top_f == y, top_l == y
    acc_f = float(np.mean(right_f)) if n else 0.0
    acc_l = float(np.mean(right_l)) if n else 0.0
    drop = round(100.0 * (acc_f - acc_l), 4)
    drop_ci = paired_difference_interval(int(np.sum(right_f & right_l)), int(np.sum(right_f & ~right_l)),
                                         int(np.sum(~right_f & right_l)), int(np.sum(~right_f & ~right_l)))
    drop_ci_points = (round(100.0 * drop_ci[0], 4), round(100.0 * drop_ci[1], 4))
    same = top_f == top_l
    agreement = float(np.mean(same)) if n else 0.0
    agree_ci = _rounded(wilson_interval(int(np.sum(same)), n))
    clear = top1_margin(p_float) >= gates.clear_margin if n else np.zeros(0, bool)
    n_clear = int(clear.sum())
    kept_clear = int(np.sum(same & clear))
    clear_agreement = kept_clear / n_clear if n_clear else None
    clear_ci = _rounded(wilson_interval(kept_clear, n_clear))
    tied = p_lite[np.arange(n), top_f] == p_lite.max(1) if n else np.zeros(0, bool)
    flipped = ~same
    changed = {"all": int(flipped.sum()), "clear": int(np.sum(flipped & clear)),
               "near_ties": int(np.sum(flipped & ~clear)), "output_ties": int(np.sum(flipped & tied))}
    checks = [
        Check("accuracy_drop", "--max-drop", drop, gates.max_drop, drop_ci_points, lower_is_better=True),
        Check("clear_agreement", "--min-clear-agreement", clear_agreement, gates.min_clear_agreement, clear_ci),
    ]
    if gates.min_agreement is not None:
        checks.append(Check("agreement", "--min-agreement", agreement, gates.min_agreement, agree_ci))
    diff = np.abs(p_float - p_lite)
    return ParityReport(
        n_images=n, float_accuracy=acc_f, tflite_accuracy=acc_l, accuracy_drop_points=drop,
        accuracy_drop_ci95_points=drop_ci_points, n_clear=n_clear, clear_agreement=clear_agreement,
        clear_agreement_ci95=clear_ci, agreement=agreement, agreement_ci95=agree_ci, changed=changed,
        mean_abs_prob_diff=float(diff.mean()) if n else 0.0, max_abs_prob_diff=float(diff.max()) if n else 0.0,
        ece_float=round(ece(p_float, y), 5), ece_file=round(ece(p_lite, y), 5),
        per_class=_per_class(top_f, top_l, y, labels), gates=gates, checks=checks)


def _per_class(top_f: np.ndarray, top_l: np.ndarray, y: np.ndarray, labels: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for i, name in enumerate(labels):
        m = y == i
        k = int(m.sum())
        fa = float(np.mean(top_f[m] == i)) if k else None
        la = float(np.mean(top_l[m] == i)) if k else None
        changed = int(np.sum(top_f[m] != top_l[m]))
        out[name] = {"n": k, "float_accuracy": fa, "tflite_accuracy": la, "changed_top1": changed,
                     "change_points": round(100.0 * (la - fa), 4) if k else None}
    return out


def _rounded(ci: tuple[float, float]) -> tuple[float, float]:
    return round(ci[0], 4), round(ci[1], 4)


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


def format_parity(report: ParityReport) -> str:
    """A readable table of a parity report: per class, then every figure, what is gated and the verdict."""
    r, g = report, report.gates
    lines = [
        f"Parity on {r.n_images} images ({r.source or '?'})",
        f"  float model : {r.float_model or '?'}",
        f"  tflite model: {r.model or '?'}",
        "",
        f"  {'class':<20} {'n':>5} {'float':>8} {'tflite':>8} {'change':>8}",
    ]
    for name, c in r.per_class.items():
        if c["n"]:
            lines.append(f"  {name:<20} {c['n']:>5} {100 * c['float_accuracy']:>7.1f}% "
                         f"{100 * c['tflite_accuracy']:>7.1f}% {c['change_points']:>+8.1f}")
        else:
            lines.append(f"  {name:<20} {0:>5} {'-':>8} {'-':>8} {'-':>8}")
    lines += [
        f"  {'all':<20} {r.n_images:>5} {100 * r.float_accuracy:>7.1f}% {100 * r.tflite_accuracy:>7.1f}% "
        f"{0.0 - r.accuracy_drop_points:>+8.1f}",
        "",
        f"  accuracy drop            : {r.accuracy_drop_points:.2f} points {_ci(r.accuracy_drop_ci95_points, '.2f')}"
        f" (gate <= {g.max_drop:g})",
    ]
    if r.clear_agreement is None:
        lines.append(f"  clear-decision agreement : no image is clearly decided (float margin >= {g.clear_margin:g}); "
                     "nothing to gate")
    else:
        lines.append(f"  clear-decision agreement : {r.clear_agreement:.4f} {_ci(r.clear_agreement_ci95, '.4f')} on the "
                     f"{r.n_clear} images with a float margin >= {g.clear_margin:g} (gate >= {g.min_clear_agreement:g})")
    gated = f" (gate >= {g.min_agreement:g})" if g.min_agreement is not None else " (reported, not gated)"
    lines.append(f"  top-1 agreement, all     : {r.agreement:.4f} {_ci(r.agreement_ci95, '.4f')}{gated}")
    ch = r.changed
    if ch["all"]:
        ties = f", {ch['output_ties']} of them exact ties in the file's 8-bit output" if ch["output_ties"] else ""
        lines.append(f"  changed top-1            : {ch['all']}: {ch['clear']} clear decisions, "
                     f"{ch['near_ties']} near-ties{ties}")
    lines.append(f"  |prob diff|              : mean {r.mean_abs_prob_diff:.4f}, max {r.max_abs_prob_diff:.4f}")
    lines.append(f"  calibration error (ECE)  : float {r.ece_float:.4f}, this file {r.ece_file:.4f}")
    from edgecls.optimize.int8.debugger import format_quant_error

    lines += format_quant_error(r.quant_error)
    result = "PASSED" if r.passed else "FAILED: " + "; ".join(c.describe() for c in r.failed)
    if not r.conclusive:
        result += (f" (inconclusive: a 95% interval crosses a gate; {r.n_images} images are too few to decide: more "
                   "held-out images would (a larger test split; parity --data DIR; export --parity-data DIR))")
    lines.append(f"  result                   : {result}")
    return "\n".join(lines)


def _ci(ci: tuple[float, float], fmt: str) -> str:
    return f"[95% CI {format(ci[0], fmt)} .. {format(ci[1], fmt)}]"
