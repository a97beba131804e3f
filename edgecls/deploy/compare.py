"""Bench reports of several machines in one table: the host beside a Pi, or Pi 4 beside Pi 5.

Each column is one ``edgecls bench --json`` report; rows are the machine's facts (board, CPU
features, runtime and version), then p50/mean latency and init time per (model, threads,
XNNPACK). A model is matched across machines by its file name, so the same bundle measured on
two devices lines up even though its path differs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from edgecls.core.errors import EdgeclsError


def read_report(path: str | os.PathLike) -> dict[str, Any]:
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EdgeclsError(f"cannot read bench JSON {path}: {e}") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), list) \
            or not isinstance(report.get("machine"), dict):
        raise EdgeclsError(f"{path} is not an 'edgecls bench --json' report")
    for i, r in enumerate(report["results"]):
        problem = _result_problem(r)
        if problem:
            raise EdgeclsError(f"{path} is not an 'edgecls bench --json' report (result {i + 1}: {problem}); "
                               "write it again with 'edgecls bench --json FILE'")
    return report


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _result_problem(r: Any) -> str:
    """What is wrong with one result row of a bench report ('' when nothing is)."""
    if not isinstance(r, dict):
        return "not an object"
    if not isinstance(r.get("model"), str):
        return "no model name"
    if not isinstance(r.get("threads"), int) or isinstance(r.get("threads"), bool):
        return "no thread count"
    if not isinstance(r.get("xnnpack"), bool):
        return "no xnnpack flag"
    lat = r.get("latency_ms")
    if not isinstance(lat, dict) or not all(_is_number(lat.get(k)) for k in ("p50", "mean")):
        return "no latency_ms p50/mean"
    if not _is_number(r.get("init_ms")):
        return "no init_ms"
    return ""


def machine_label(report: dict[str, Any]) -> str:
    m = report["machine"]
    return m.get("board") or m.get("cpu_model") or m.get("arch") or "?"


def _fmt_ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.2f}"


def side_by_side(columns: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """``[(title, report), ...]`` -> a text table, one column per machine."""
    rows: list[tuple[str, list[str]]] = []

    def fact(name: str, get) -> None:
        rows.append((name, [str(get(r["machine"])) for _, r in columns]))

    fact("machine", lambda m: m.get("board") or m.get("cpu_model") or "?")
    fact("arch, cores", lambda m: f"{m.get('arch')}, {m.get('cores')}")
    fact("cpu features", lambda m: " ".join(m.get("cpu_features") or []) or "?")
    fact("int8 dot-product", lambda m: {True: "yes", False: "no"}.get(m.get("dot_product"), "?"))
    fact("runtime", lambda m: f"{m.get('runtime')} {m.get('runtime_version')}")
    fact("python, numpy", lambda m: f"{m.get('python')}, {m.get('numpy')}")
    keys: list[tuple[str, int, bool]] = []
    for _, report in columns:
        for r in report["results"]:
            k = (Path(r["model"]).name, int(r["threads"]), bool(r["xnnpack"]))
            if k not in keys:
                keys.append(k)
    for name, threads, xnn in keys:
        found = []
        for _, report in columns:
            found.append(next((r for r in report["results"]
                               if (Path(r["model"]).name, int(r["threads"]), bool(r["xnnpack"])) == (name, threads, xnn)),
                              None))
        tag = f"{name} {threads} thr{'' if xnn else ' no-xnnpack'}"
        rows.append((f"{tag} p50 ms", [_fmt_ms(r["latency_ms"]["p50"]) if r else "-" for r in found]))
        rows.append((f"{tag} mean ms", [_fmt_ms(r["latency_ms"]["mean"]) if r else "-" for r in found]))
        rows.append((f"{tag} init ms", [f"{r['init_ms']:.1f}" if r else "-" for r in found]))
    titles = [t for t, _ in columns]
    w0 = max(len(n) for n, _ in rows)
    widths = [max(len(titles[i]), *(len(v[i]) for _, v in rows)) for i in range(len(columns))]
    lines = [" ".join([" " * w0, *(t.rjust(w) for t, w in zip(titles, widths))])]
    lines.append("-" * len(lines[0]))
    for name, values in rows:
        lines.append(" ".join([name.ljust(w0), *(v.rjust(w) for v, w in zip(values, widths))]))
    return "\n".join(lines)
