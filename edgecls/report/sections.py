"""The report's sections after training: learning curves, per-class figures, heatmaps, exported files,
devices, confidence. Each function takes its part of the content and returns HTML ("" when absent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from edgecls.report import svg
from edgecls.report.calibration import RELIABILITY_BINS
from edgecls.report.content import AttentionPart, ClassFigures, ConfidencePart, DevicePart, ExportPart
from edgecls.report.markup import Markup, e, grid, pct, table

BAR_PX = 80
"""Width of a full (100 %) bar in the per-class table."""


def _bar(v: float) -> Markup:
    return Markup(f'{100 * v:.1f}% <span class="bar" style="width:{max(0.0, min(1.0, v)) * BAR_PX:.0f}px"></span>')


def learning_curves(history: Sequence[dict[str, Any]]) -> str:
    if not history:
        return "<p>No history.json: no learning curves.</p>"
    xs = [float(r.get("epoch", i + 1)) for i, r in enumerate(history)]
    fine = next((float(r["epoch"]) for r in history if r.get("phase") == "fine_tune" and "epoch" in r), None)
    charts = []
    for metric in ("loss", "accuracy"):
        series = [svg.Series(name, xs, [r.get(key) for r in history], colour, dashed)
                  for name, key, colour, dashed in ((f"train {metric}", metric, svg.COLOURS[0], False),
                                                    (f"val {metric}", f"val_{metric}", svg.COLOURS[1], True))]
        charts.append(svg.line_chart(metric, series, vline=None if fine is None else fine - 0.5,
                                     vline_label="fine-tune", y_from_zero=metric == "loss"))
    return '<div class="charts" id="learning-curves">' + "".join(charts) + "</div>"


def per_class_table(per_class: dict[str, ClassFigures]) -> str:
    rows = [[name, _bar(f.precision), _bar(f.recall), f"{f.f1:.3f}", f.support] for name, f in per_class.items()]
    return table(["class", "precision", "recall", "F1", "images"], rows, cls="per-class")


def confusion(cm: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """Counts per (true row, predicted column), shaded by the share of the row: green on the diagonal, red off it."""
    if not cm:
        return "<p>No confusion matrix.</p>"
    head = "<tr><th>true \\ predicted</th>" + "".join(f"<th>{e(n)}</th>" for n in labels) + "</tr>"
    rows = []
    for i, row in enumerate(cm):
        total = sum(row) or 1
        cells = []
        for j, v in enumerate(row):
            share = v / total
            colour = f"rgba(27,127,59,{share:.2f})" if i == j else f"rgba(179,38,30,{min(1.0, 2 * share):.2f})"
            ink = "#fff" if share > 0.5 else "#111"
            cells.append(f'<td class="cm" style="background:{colour};color:{ink}" title="{e(labels[i])} as '
                         f'{e(labels[j])}: {v}">{v}</td>')
        rows.append(f"<tr><th>{e(labels[i] if i < len(labels) else i)}</th>{''.join(cells)}</tr>")
    return f'<table id="confusion">{head}{"".join(rows)}</table>'


def attention(a: Optional[AttentionPart]) -> str:
    if a is None:
        return ""
    return ('<section id="attention"><h2>Where the model looks</h2>'
            f'<p class="dim">Grad-CAM at <code>{e(a.layer)}</code> for the predicted class, on {e(a.split)} images: '
            "red regions raised that class's score most. A model that learned the background lights up the "
            "background.</p>"
            f"<h3>Right answers ({len(a.right)})</h3>" + grid(a.right, "cam-right", "right")
            + f"<h3>Mistakes ({len(a.wrong)})</h3>"
            + (grid(a.wrong, "cam-wrong", "wrong") if a.wrong else "<p>No mistakes to explain.</p>") + "</section>")


def _mb(n: Optional[int]) -> str:
    return "–" if n is None else f"{n / 1e6:.2f}"


def _verdict(x: ExportPart) -> Markup:
    if x.rejected:
        return Markup('<span class="fail">rejected</span>')
    if x.passed is None:
        return Markup('<span class="dim">not gated</span>')
    return Markup('<span class="pass">passed</span>' if x.passed else '<span class="fail">failed</span>')


def _ci(ci: Sequence[float], scale: float = 1.0, fmt: str = ".3f") -> str:
    return f"[{format(ci[0] * scale, fmt)} .. {format(ci[1] * scale, fmt)}]"


def _parity(x: ExportPart) -> str:
    r = x.parity
    ch = r.changed
    clear = "–" if r.clear_agreement is None else f"{r.clear_agreement:.4f} {_ci(r.clear_agreement_ci95, fmt='.4f')}"
    rows = [["images", f"{r.n_images} ({r.source})"],
            ["accuracy, float → file", f"{pct(r.float_accuracy)} → {pct(r.tflite_accuracy)}"],
            ["accuracy drop (points)", f"{r.accuracy_drop_points:.2f} {_ci(r.accuracy_drop_ci95_points, fmt='.2f')} "
                                       f"(gate ≤ {r.gates.max_drop:g})"],
            [f"clear-decision agreement (float margin ≥ {r.gates.clear_margin:g}, {r.n_clear} images)",
             f"{clear} (gate ≥ {r.gates.min_clear_agreement:g})"],
            ["top-1 agreement, all", f"{r.agreement:.4f} {_ci(r.agreement_ci95, fmt='.4f')}"],
            ["changed top-1", f"{ch.get('all', 0)}: {ch.get('clear', 0)} clear, {ch.get('near_ties', 0)} near-ties, "
                              f"{ch.get('output_ties', 0)} exact ties in the 8-bit output"],
            ["verdict", Markup(f'<span class="{"pass" if r.passed else "fail"}">'
                               f'{"passed" if r.passed else e(r.failure() or "failed")}</span>'
                               + ("" if r.conclusive else ' <span class="dim">(inconclusive on this many images)</span>'))]]
    out = [table(["parity", ""], rows, cls="parity")]
    per = [[name, c.get("n", 0), pct(c.get("float_accuracy")), pct(c.get("tflite_accuracy")),
            "–" if c.get("change_points") is None else f"{c['change_points']:+.1f}", c.get("changed_top1", 0)]
           for name, c in r.per_class.items()]
    out.append(table(["class", "images", "float", "file", "change (points)", "changed top-1"], per, cls="parity-class"))
    worst = (r.quant_error or {}).get("worst") or []
    if worst:
        noise = (r.quant_error or {}).get("rounding_noise", 0.29)
        out.append(f"<h4>Worst-quantized tensors</h4><p class=\"dim\">rmse in quantization steps; pure rounding gives "
                   f"{noise:g}</p>")
        out.append(table(["tensor", "op", "rmse / scale"], [[short_tensor(str(w.get("tensor"))), w.get("op"),
                                                              w.get("rmse_scale")] for w in worst], cls="worst"))
    return "".join(out)


def short_tensor(name: str) -> str:
    """A converter's tensor name made readable: its first fused op, without the model's own name in front
    ('edgecls_mobilenet_v2/backbone/out_relu/Relu6;...' -> 'backbone/out_relu/Relu6')."""
    first = name.split(";", 1)[0]
    head, sep, rest = first.partition("/")
    return rest if sep and head.startswith("edgecls_") else first


def exports(parts: Sequence[ExportPart]) -> str:
    if not parts:
        return ""
    rows = [[x.name, x.mode, _mb(x.file_bytes), _mb(x.gzip_bytes),
             "–" if x.latency_ms is None else f"{x.latency_ms:.2f}", _verdict(x),
             "–" if x.n_changed is None else f"{x.n_changed} ({x.n_changed_clear} clear) of {x.n_images}"]
            for x in parts]
    out = ['<section id="int8"><h2>Exported files</h2>',
           table(["file", "mode", "MB", "gzip MB", "latency ms (1 thread)", "parity", "changed top-1"], rows,
                 cls="exports"),
           '<p class="dim">Latency: the card\'s figure when export measured one, else measured on this host when the '
           "report was made (median of 30, 1 thread); the device's own figures are below.</p>"]
    for x in parts:
        if x.parity is None and x.n_changed is None:
            continue
        stem = Path(x.name).stem
        out.append(f'<h3 id="export-{e(stem)}">{e(x.name)}'
                   + (f' <span class="dim">({e(x.quantization_path)})</span>' if x.quantization_path else "") + "</h3>")
        if x.parity is not None:
            out.append(_parity(x))
        if x.n_changed is not None:
            agree = {True: " These are exactly the changes its parity report counts.",
                     False: " They do not match its parity report's counts (see the notes above).",
                     None: ""}[x.agrees_with_parity]
            out.append(f"<h4>Images whose top-1 changed: {x.n_changed} of {x.n_images}</h4><p class=\"dim\">Against "
                       f"the float model, on the held-out images; clear decisions first.{e(agree)}</p>")
            attrs = f' data-model="{e(x.name)}" data-count="{x.n_changed}"'
            out.append(grid(x.changed, f"changed-{stem}", "wrong", attrs) if x.changed else
                       f'<div class="grid" id="changed-{e(stem)}"{attrs}><p>None.</p></div>')
    return "".join(out) + "</section>"


def devices(parts: Sequence[DevicePart]) -> str:
    if not parts:
        return ""
    out = ['<section id="device"><h2>On the device</h2>']
    for d in parts:
        out.append(f'<h3>{e(d.host)}{f" ({e(d.machine)})" if d.machine else ""}</h3>')
        if d.verify:
            rows = [[v["_model"], Markup('<span class="pass">passed</span>' if v.get("passed")
                                         else f'<span class="fail">failed: {e(v.get("failure"))}</span>'),
                     v.get("n_images"), f"{v.get('top1_agreement', 0):.4f}", v.get("flipped"), v.get("flipped_clear"),
                     "yes" if v.get("bit_identical") else "no", v.get("host_runtime"), v.get("device_runtime")]
                    for v in d.verify]
            out.append(table(["model", "verify", "golden images", "top-1 agreement", "flipped", "flipped clear",
                              "bit-identical", "host runtime", "device runtime"], rows, cls="verify"))
        rows = []
        for b in d.bench:
            for r in b.get("results") or []:
                lat = r.get("latency_ms") or {}
                rows.append([Path(str(r.get("model", "?"))).name, r.get("threads"), "on" if r.get("xnnpack") else "off",
                             f"{lat.get('p50', 0):.2f}", f"{lat.get('p90', 0):.2f}", f"{r.get('fps', 0):.1f}",
                             f"{r.get('init_ms', 0):.0f}", _mb(r.get("size_bytes")), r.get("runtime")])
        if rows:
            out.append(table(["model", "threads", "XNNPACK", "p50 ms", "p90 ms", "FPS", "init ms", "MB", "runtime"],
                             rows, cls="bench"))
    return "".join(out) + "</section>"


def confidence(c: Optional[ConfidencePart]) -> str:
    if c is None:
        return ""
    out = ['<section id="confidence"><h2>Confidence</h2>']
    diagrams = [d for d in (c.reliability, c.scaled) if d is not None and d.n]
    if c.recorded is not None:
        diagrams += c.recorded.diagrams
    charts = []
    if diagrams:
        charts.append(svg.reliability_chart(diagrams, f"reliability, {c.split} split"))
    if sum(c.right_hist) + sum(c.wrong_hist):
        edges = [i / RELIABILITY_BINS for i in range(RELIABILITY_BINS + 1)]
        charts.append(svg.stacked_bars(f"how sure, {c.split} split", edges,
                                       [("right", c.right_hist, "#4caf50"), ("wrong", c.wrong_hist, "#e53935")],
                                       "top-1 probability"))
    out.append('<div class="charts" id="confidence-charts">' + "".join(charts) + "</div>")
    if c.reliability.n:
        out.append(f"<p>Expected calibration error of the scores as trained: {c.reliability.ece:.3f} "
                   f"({c.reliability.n} images, {RELIABILITY_BINS} bins). Bars under the diagonal: the model is "
                   "surer than it is right.</p>")
    if c.recorded is not None and c.recorded.figures:
        out.append("<h3>Calibration recorded by training</h3>")
        out.append(table(["figure", "value"], [[k, f"{v:.4g}"] for k, v in c.recorded.figures.items()],
                         cls="calibration"))
    return "".join(out) + "</section>"
