"""Small inline SVG charts for the report: lines over epochs, a reliability diagram, stacked bars.

Inline SVG needs no image library at render time and stays sharp at any zoom; each chart is a few
KB. Every function returns one ``<svg>`` element as text; labels are escaped here.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Optional, Sequence

from edgecls.report.calibration import Reliability

WIDTH_PX = 420
HEIGHT_PX = 240
PAD = (34, 24, 12, 30)
"""Room for the axes' labels: left, top, right, bottom, in pixels."""
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


@dataclass
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[Optional[float]]
    colour: str
    dashed: bool = False


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


class _Frame:
    """Maps data coordinates to the plot area, and draws its axes."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, w: int = WIDTH_PX, h: int = HEIGHT_PX,
                 below: int = 0) -> None:
        """``below``: pixels kept under the axis label (for legend rows)."""
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1)
        self.w, self.h, self.below = w, h, below
        left, top, right, bottom = PAD
        self.px0, self.px1, self.py0, self.py1 = left, w - right, h - bottom - below, top

    def x(self, v: float) -> float:
        return self.px0 + (v - self.x0) / (self.x1 - self.x0) * (self.px1 - self.px0)

    def y(self, v: float) -> float:
        return self.py0 + (v - self.y0) / (self.y1 - self.y0) * (self.py1 - self.py0)

    def axes(self, title: str, xlabel: str, xticks: Sequence[float], yticks: Sequence[float]) -> list[str]:
        out = [f'<text x="{self.px0}" y="13" class="t">{_e(title)}</text>',
               f'<line x1="{self.px0}" y1="{self.py0}" x2="{self.px1}" y2="{self.py0}" class="ax"/>',
               f'<line x1="{self.px0}" y1="{self.py0}" x2="{self.px0}" y2="{self.py1}" class="ax"/>',
               f'<text x="{(self.px0 + self.px1) / 2:.0f}" y="{self.py0 + 26}" text-anchor="middle">{_e(xlabel)}</text>']
        for t in xticks:
            out.append(f'<text x="{self.x(t):.1f}" y="{self.py0 + 13}" text-anchor="middle">{_fmt(t)}</text>')
        for t in yticks:
            out.append(f'<line x1="{self.px0}" y1="{self.y(t):.1f}" x2="{self.px1}" y2="{self.y(t):.1f}" class="grid"/>')
            out.append(f'<text x="{self.px0 - 3}" y="{self.y(t) + 3:.1f}" text-anchor="end">{_fmt(t)}</text>')
        return out


def _svg(body: list[str], label: str, w: int = WIDTH_PX, h: int = HEIGHT_PX) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_e(label)}" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" class="chart">' + "".join(body) + "</svg>")


def _ticks(lo: float, hi: float, n: int = 5, whole: bool = False) -> list[float]:
    """Round tick values between ``lo`` and ``hi``; ``whole``: integers only (epochs)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    if whole:
        step = max(1.0, round(step))
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(title: str, series: Sequence[Series], *, xlabel: str = "epoch", vline: Optional[float] = None,
               vline_label: str = "", y_from_zero: bool = False) -> str:
    """Lines of ``series`` (None values leave a gap); ``vline`` marks an x (e.g. where fine-tuning starts)."""
    xs = [x for s in series for x in s.xs]
    ys = [y for s in series for y in s.ys if y is not None and math.isfinite(y)]
    if not xs or not ys:
        return _svg([f'<text x="20" y="40">{_e(title)}: no data</text>'], title)
    lo = 0.0 if y_from_zero else min(ys)
    f = _Frame(min(xs), max(xs), lo, max(ys))
    whole = all(float(x).is_integer() for x in xs)
    body = f.axes(title, xlabel, _ticks(f.x0, f.x1, 6, whole), _ticks(f.y0, f.y1, 4))
    if vline is not None:
        body.append(f'<line x1="{f.x(vline):.1f}" y1="{f.py0}" x2="{f.x(vline):.1f}" y2="{f.py1}" class="vl"/>'
                    f'<text x="{f.x(vline) + 3:.1f}" y="{f.py0 - 4}">{_e(vline_label)}</text>')
    for k, s in enumerate(series):
        runs, cur = [], []
        for x, y in zip(s.xs, s.ys):
            if y is None or not math.isfinite(y):
                if cur:
                    runs.append(cur)
                cur = []
            else:
                cur.append(f"{f.x(x):.1f},{f.y(y):.1f}")
        if cur:
            runs.append(cur)
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        for pts in runs:
            body.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>')
        lx = f.px1 - 105 * (len(series) - k)
        body.append(f'<line x1="{lx}" y1="9" x2="{lx + 18}" y2="9" stroke="{s.colour}" stroke-width="2"{dash}/>'
                    f'<text x="{lx + 22}" y="13">{_e(s.name)}</text>')
    return _svg(body, title)


def reliability_chart(diagrams: Sequence[Reliability], title: str = "reliability") -> str:
    """Accuracy against mean confidence per bin (the diagonal is a perfectly calibrated model); bar
    width spans the bin, a dot marks the bin's mean confidence."""
    row = 14
    f = _Frame(0.0, 1.0, 0.0, 1.0, h=HEIGHT_PX + row * len(diagrams), below=row * len(diagrams))
    body = f.axes(title, "confidence (top-1 probability)", _ticks(0, 1, 5), _ticks(0, 1, 5))
    body.append(f'<line x1="{f.x(0)}" y1="{f.y(0)}" x2="{f.x(1)}" y2="{f.y(1)}" class="diag"/>')
    n = max(len(diagrams), 1)
    for k, d in enumerate(diagrams):
        colour = COLOURS[k % len(COLOURS)]
        for b in range(len(d.count)):
            if d.accuracy[b] is None:
                continue
            lo, hi = d.edges[b], d.edges[b + 1]
            width = (hi - lo) / n
            x = lo + k * width
            body.append(f'<rect x="{f.x(x):.1f}" y="{f.y(d.accuracy[b]):.1f}" width="{f.x(x + width) - f.x(x) - 1:.1f}" '
                        f'height="{f.y(0) - f.y(d.accuracy[b]):.1f}" fill="{colour}" fill-opacity="0.55">'
                        f'<title>{_e(d.name)}: {lo:.1f}-{hi:.1f}: accuracy {d.accuracy[b]:.2f}, mean confidence '
                        f'{(d.confidence[b] or 0):.2f}, {d.count[b]} images</title></rect>')
            if d.confidence[b] is not None:
                body.append(f'<circle cx="{f.x(d.confidence[b]):.1f}" cy="{f.y(d.accuracy[b]):.1f}" r="2.5" '
                            f'fill="{colour}"/>')
        ece = f" (ECE {d.ece:.3f})" if d.ece is not None else ""
        ly = f.h - f.below + row * k + 10  # legend rows under the axis: bars may fill any part of the plot
        body.append(f'<rect x="{f.px0}" y="{ly - 9}" width="10" height="10" fill="{colour}" fill-opacity="0.55"/>'
                    f'<text x="{f.px0 + 14}" y="{ly}">{_e(d.name + ece)}</text>')
    return _svg(body, title, h=f.h)


def stacked_bars(title: str, edges: Sequence[float], stacks: Sequence[tuple[str, Sequence[int], str]],
                 xlabel: str) -> str:
    """Counts per bin, one stacked bar per bin: ``stacks`` is [(name, counts, colour), ...], bottom first."""
    totals = [sum(s[1][b] for s in stacks) for b in range(len(edges) - 1)]
    f = _Frame(edges[0], edges[-1], 0.0, float(max(totals) if totals and max(totals) else 1))
    body = f.axes(title, xlabel, _ticks(edges[0], edges[-1], 5), _ticks(0, f.y1, 4))
    for b in range(len(edges) - 1):
        base = 0
        for name, counts, colour in stacks:
            c = counts[b]
            if c:
                body.append(f'<rect x="{f.x(edges[b]):.1f}" y="{f.y(base + c):.1f}" '
                            f'width="{f.x(edges[b + 1]) - f.x(edges[b]) - 1:.1f}" height="{f.y(base) - f.y(base + c):.1f}" '
                            f'fill="{colour}"><title>{_e(name)}: {c}</title></rect>')
            base += c
    for k, (name, _, colour) in enumerate(stacks):
        lx = f.px1 - 70 * (len(stacks) - k)
        body.append(f'<rect x="{lx}" y="4" width="10" height="10" fill="{colour}"/>'
                    f'<text x="{lx + 14}" y="13">{_e(name)}</text>')
    return _svg(body, title)
