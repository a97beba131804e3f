"""HTML pieces the report's sections share: escaping, pictures as data URIs, answer cards, tables."""

from __future__ import annotations

import base64
import html
from typing import Iterable, Optional, Sequence

from edgecls.report.content import Shot

THUMB_PX = 112
"""Shown size of a thumbnail (the stored ones are at most this, so nothing is upscaled on screen)."""


def e(text: object) -> str:
    """Escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def shot(s: Shot, kind: str = "") -> str:
    """One picture with its answer; a missing picture is a grey box, never a broken <img>."""
    pic = (f'<img src="{data_uri(s.jpeg)}" alt="{e(s.name)}" title="{e(s.name)}" width="{THUMB_PX}" height="{THUMB_PX}">'
           if s.jpeg else '<div class="noimg">no picture</div>')
    true = f"<br>true: {e(s.true)}" if s.true != s.pred else ""
    detail = f'<br><span class="dim">{e(s.detail)}</span>' if s.detail else ""
    return (f'<figure class="shot {kind}" data-name="{e(s.name)}" data-true="{e(s.true)}" data-pred="{e(s.pred)}" '
            f'data-score="{s.score:.4f}">{pic}<figcaption><b>{e(s.pred)}</b> {s.score:.2f}{true}{detail}'
            "</figcaption></figure>")


def grid(shots: Iterable[Shot], grid_id: str, kind: str = "", attrs: str = "") -> str:
    return f'<div class="grid" id="{e(grid_id)}"{attrs}>' + "".join(shot(s, kind) for s in shots) + "</div>"


def table(head: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    """A table of escaped cells (a cell already made of HTML is passed as ``Markup``)."""
    out = [f'<table class="{cls}"><tr>' + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c if isinstance(c, Markup) else e(c)}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"


class Markup(str):
    """Text that is already HTML (not escaped again by :func:`table`)."""


def pct(v: Optional[float], digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"
