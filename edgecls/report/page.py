"""The report page: :func:`render` turns a :class:`~edgecls.report.content.Report` into one HTML file.

Self-contained: styles inline, pictures as ``data:`` URIs, charts as inline SVG, no script, no
link outside the page, so it opens from the file system, offline, and the camera's web view can
serve it as one file. A pure function of its input: the same content gives the same page.

Every picture carries what a test (or a curious user) needs as attributes: ``data-name`` (the
image's path under the data root), ``data-true``, ``data-pred``, ``data-score``.
"""

from __future__ import annotations

from typing import Optional, Sequence

from edgecls import __version__
from edgecls.report import sections
from edgecls.report.content import DataPart, Report, TrainingPart
from edgecls.report.markup import THUMB_PX, Markup, data_uri, e, grid, pct, table

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#1d2733;color:#fff;padding:14px 24px} header h1{font-size:20px;margin:0 0 4px}
header p{margin:0;color:#b9c4d0;font-size:12px} nav a{color:#9fd0ff;margin-right:14px;text-decoration:none}
main{padding:8px 24px 40px;max-width:1280px} section{margin:22px 0} h2{border-bottom:2px solid #dde3ea;padding-bottom:4px}
h3{margin:16px 0 6px} table{border-collapse:collapse;margin:6px 0 10px;font-variant-numeric:tabular-nums}
th,td{padding:3px 9px;border-bottom:1px solid #e4e7eb;text-align:right} th:first-child,td:first-child{text-align:left}
th{background:#eef1f4;font-weight:600} .grid{display:flex;flex-wrap:wrap;gap:8px}
figure.shot{margin:0;width:""" + str(THUMB_PX) + """px;font-size:11px;line-height:1.3}
figure.shot img,.noimg{width:""" + str(THUMB_PX) + """px;height:""" + str(THUMB_PX) + """px;object-fit:cover;border-radius:4px;
display:block;background:#ddd} .noimg{display:flex;align-items:center;justify-content:center;color:#777}
figure.wrong figcaption b{color:#b3261e} figure.right figcaption b{color:#1b7f3b} figcaption{overflow-wrap:anywhere}
.strip{display:flex;gap:4px;align-items:center;margin:4px 0} .strip span{width:110px;font-weight:600}
.strip img{width:64px;height:64px;object-fit:cover;border-radius:3px}
.notes{background:#fff7e0;border:1px solid #f0d58a;padding:8px 14px;border-radius:6px}
.pass{color:#1b7f3b;font-weight:600} .fail{color:#b3261e;font-weight:600} .dim{color:#6b7280}
.charts{display:flex;flex-wrap:wrap;gap:14px} svg.chart{background:#fff;border:1px solid #e4e7eb;border-radius:6px}
svg.chart text{font-size:10px;fill:#374151} svg.chart .t{font-size:12px;font-weight:600}
svg.chart .ax{stroke:#6b7280} svg.chart .grid{stroke:#eceff3} svg.chart .vl{stroke:#999;stroke-dasharray:3 3}
svg.chart .diag{stroke:#9ca3af;stroke-dasharray:4 3} td.cm{text-align:center;min-width:30px}
.bar{display:inline-block;height:9px;background:#60a5fa;border-radius:2px;vertical-align:middle}
"""


def _data(d: Optional[DataPart]) -> str:
    if d is None:
        return ""
    splits = [s for s in ("train", "val", "test") if sum(d.counts.get(s, {}).values())]
    rows = [[name, *(d.counts[s][name] for s in splits), sum(d.counts[s][name] for s in splits)] for name in d.classes]
    rows.append([Markup("<b>all</b>"), *(sum(d.counts[s].values()) for s in splits),
                 sum(sum(d.counts[s].values()) for s in splits)])
    out = ['<section id="data"><h2>Data</h2>',
           f'<p class="dim">{e(d.root)} (layout: {e(d.layout)})'
           + (f"; {d.exif_oriented} photos turned upright by their EXIF orientation" if d.exif_oriented else "")
           + "</p>", table(["class", *splits, "total"], rows)]
    if d.skipped:
        out.append(f"<h3>Skipped files ({len(d.skipped)})</h3>")
        out.append(table(["file", "why"], d.skipped, cls="skipped"))
    else:
        out.append("<p>No file was skipped by the data check.</p>")
    if d.samples:
        out.append("<h3>Samples (training split)</h3>")
        for name, shots in d.samples.items():
            pics = "".join(f'<img src="{data_uri(s.jpeg)}" alt="{e(s.name)}" title="{e(s.name)}" width="64" height="64">'
                           for s in shots if s.jpeg)
            out.append(f'<div class="strip" data-class="{e(name)}"><span>{e(name)}</span>{pics}</div>')
    return "".join(out) + "</section>"


def _training(t: Optional[TrainingPart], labels: Sequence[str]) -> str:
    if t is None:
        return ""
    out = ['<section id="training"><h2>Training</h2>']
    cfg = t.config
    if cfg:
        out.append(f'<p class="dim">{e(cfg.get("backbone"))} alpha {e(cfg.get("alpha"))} at {e(cfg.get("size"))} px, '
                   f'weights {e(cfg.get("weights"))}, {e(cfg.get("epochs"))} + {e(cfg.get("fine_tune_epochs"))} epochs, '
                   f'seed {e(cfg.get("seed"))}</p>')
    out.append(sections.learning_curves(t.history))
    acc = f"accuracy {pct(t.accuracy)} on {t.n_images} {t.split} images"
    if t.recorded_accuracy is not None and t.accuracy is not None and abs(t.recorded_accuracy - t.accuracy) > 1e-9:
        acc += (f" (metrics.json, scored during training from cached backbone features, says "
                f"{pct(t.recorded_accuracy)}: near-ties can fall either way)")
    out.append(f"<h3>Per class, {e(t.split)} split</h3><p>{e(acc)}</p>")
    out.append(sections.per_class_table(t.per_class))
    out.append("<h3>Confusion matrix</h3>" + sections.confusion(t.confusion, labels))
    if t.pruning:
        p = t.pruning
        out.append(f'<p>Pruned: {pct(p.get("sparsity"))} zeros (target {pct(p.get("target_sparsity"), 0)}), '
                   f'{e(p.get("eval_split", ""))} accuracy {pct(p.get("accuracy_before"))} → {pct(p.get("accuracy_after"))}'
                   "</p>")
    out.append("</section>")
    shown = len(t.mistakes)
    more = f" (the {shown} worst shown)" if t.n_mistakes > shown else ""
    out.append(f'<section id="mistakes"><h2>Mistakes on the {e(t.split)} split: {t.n_mistakes} of {t.n_images}{more}</h2>'
               "<p class=\"dim\">Worst first: the least probability on the true class. Pictures are what the model "
               "saw (squashed to its square input).</p>")
    out.append(grid(t.mistakes, "mistake-grid", "wrong") if t.mistakes else "<p>No mistakes.</p>")
    return "".join(out) + "</section>"


def render(report: Report) -> str:
    """The whole page as HTML text."""
    parts = [
        _data(report.data),
        _training(report.training, report.labels),
        sections.attention(report.attention),
        sections.exports(report.exports),
        sections.devices(report.devices),
        sections.confidence(report.confidence),
    ]
    nav = [("data", report.data), ("training", report.training), ("mistakes", report.training),
           ("attention", report.attention), ("int8", report.exports), ("device", report.devices),
           ("confidence", report.confidence)]
    links = "".join(f'<a href="#{k}">{k}</a>' for k, v in nav if v)
    notes = ""
    if report.notes:
        notes = ('<section id="notes" class="notes"><b>Not on this page yet</b><ul>'
                 + "".join(f"<li>{e(n)}</li>" for n in report.notes) + "</ul></section>")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{e(report.title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{e(report.title)}</h1><p>{e(report.run)} · written {e(report.created)} by edgecls "
            f"{e(__version__)}</p><nav>{links}</nav></header><main>{notes}{''.join(parts)}</main></body></html>\n")
