"""How big the report page of a run is and how long it takes to make.

    python tools/bench_report.py RUN [--repeat 5] [--json OUT.json]

Works on a copy of RUN (RUN itself is never written). Measures, in this order:

1. ``collect``: everything RUN/report/ needs made from scratch (the float model loaded, the held-out
   photos decoded, predictions, Grad-CAM heatmaps, each export's changed top-1s and host latency,
   thumbnails), in this process with TensorFlow already imported (``edgecls train``/``export`` pay
   this at their end, TensorFlow loaded);
2. ``redraw``: the page from RUN's files and RUN/report/ alone (what ``deploy`` and every stage pay
   once nothing is stale), median of ``--repeat`` runs after one warm-up;
3. ``redraw_process``: the same in a fresh Python process (imports included, no TensorFlow), median.

Prints one JSON object (also written to --json, default bench_report_<host>_<date>.json in the
current folder): the figures, the page's size and picture count, and the conditions (machine,
load average before and after, versions). The timings are wall-clock on whatever else the machine
runs: read them with the load figures beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _conditions() -> dict:
    import numpy

    from edgecls import __version__
    from edgecls.core.keras import tf
    from edgecls.runtime.machine import cpu_model

    return {"host": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": numpy.__version__, "tensorflow": tf.__version__, "edgecls": __version__, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def _run_facts(run: Path) -> dict:
    split = json.loads((run / "split.json").read_text())
    cfg = json.loads((run / "config.json").read_text())["train"]
    return {"images": sum(len(split.get(s, [])) for s in ("train", "val", "test")),
            "held_out": len(split.get("test", [])) + len(split.get("val", [])), "size_px": cfg["size"],
            "backbone": f"{cfg['backbone']} {cfg['alpha']}", "classes": len(split.get("classes") or []),
            "exports": sorted(p.name for p in (run / "export").glob("*.tflite")) if (run / "export").is_dir() else []}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from edgecls.core.keras import tf  # noqa: F401 - imported before timing: a stage has it loaded already
    from edgecls.report.refresh import write_report

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(args.run, run, ignore=shutil.ignore_patterns("checkpoints", "logs", "cache", "report",
                                                                     "report.html", "explain"))
        t = time.perf_counter()
        page = write_report(run, collect=True)
        collect_s = time.perf_counter() - t
        write_report(run, collect=False)  # warm-up: imports, file cache
        redraw = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            write_report(run, collect=False)
            redraw.append(time.perf_counter() - t)
        code = f"from edgecls.report.refresh import write_report; write_report({str(run)!r}, collect=False)"
        process = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
            process.append(time.perf_counter() - t)
        html = page.read_text()
        store_bytes = sum(p.stat().st_size for p in (run / "report").rglob("*") if p.is_file())
        result = {
            "run": str(args.run.resolve()), **_run_facts(run),
            "page_bytes": page.stat().st_size, "page_images": html.count("<img "),
            "report_folder_bytes": store_bytes,
            "collect_s": round(collect_s, 2),
            "redraw_s_median": round(statistics.median(redraw), 3), "redraw_s": [round(v, 3) for v in redraw],
            "redraw_process_s_median": round(statistics.median(process), 3),
            "conditions": {**_conditions(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        }
    out = args.json or Path(f"bench_report_{platform.node()}_{time.strftime('%Y%m%d')}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
