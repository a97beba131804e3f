#!/usr/bin/env python
"""Export benchmark: file sizes per mode, float32 vs int8 latency, 50% pruning, parity.

For each MobileNetV2 configuration (default 1.0 @ 224 and 0.35 @ 96; random init, weights
"none": size and latency do not depend on the weights) it trains a 1-epoch run on synthetic data
(just so a real run folder exists), prunes it to 50% (tfmot, 1 epoch), exports float32 /
float16 / dynamic / int8 / pruned int8, and measures latency of float32 vs int8 at 1 and 2
threads with ``edgecls bench`` in a subprocess (the device code path, no TensorFlow loaded).

Parity: a MobileNetV2 0.35 @ 96 trained from scratch on synthetic data and, when the offline
file /work/shared/pretrained/mobilenet_v2_1.0_160_no_top.h5 exists, a MobileNetV2 1.0 @ 160
fine-tuned from it; both exported to int8 and checked by ``run_parity``.

    .venv/bin/python tools/bench_export.py                 # everything (~10 min on 2 cores)
    .venv/bin/python tools/bench_export.py --quick         # 0.35@96 only, fewer runs
Prints a Markdown section for BENCHMARKS.md and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = Path("/work/shared/pretrained/mobilenet_v2_1.0_160_no_top.h5")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _train(data: Path, out: Path, *, alpha: float, size: int, weights: str, epochs: int, fine_tune: int) -> Path:
    from edgecls.core.config import TrainConfig
    from edgecls.train.fit import train

    cfg = TrainConfig(data=str(data), out=str(out), backbone="mobilenet_v2", alpha=alpha, size=size, weights=weights,
                      epochs=epochs, fine_tune_epochs=fine_tune, batch_size=32, augment=False, cache="memory", seed=0)
    return train(cfg, force=True, verbose=0).path


def _bench(models: list[Path], threads: str, runs: int, json_out: Path) -> dict:
    cmd = [str(REPO / ".venv/bin/edgecls"), "bench", *map(str, models), "--threads", threads, "--runs", str(runs),
           "--warmup", "20", "--json", str(json_out), "--force"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(json_out.read_text())


def size_and_latency(work: Path, alpha: float, size: int, runs: int, threads: str, rounds: int) -> dict:
    from edgecls.core.config import ExportConfig, PruneConfig
    from edgecls.optimize.export import export_run
    from edgecls.optimize.prune import prune_run
    from edgecls.data.synth import write_synthetic_dataset

    tag = f"mnv2_{alpha}_{size}"
    data = work / f"data_{size}"
    if not data.is_dir():
        write_synthetic_dataset(data, classes=4, per_class=40, size=size, seed=1)
    _log(f"{tag}: train 1 epoch (weights none)")
    run = _train(data, work / tag, alpha=alpha, size=size, weights="none", epochs=1, fine_tune=0)
    _log(f"{tag}: prune 50%")
    pr = prune_run(PruneConfig(run=str(run), sparsity=0.5, epochs=1, force=True))
    cards = {}
    for mode, pruned in (("float32", False), ("float16", False), ("dynamic", False), ("int8", False), ("int8", True)):
        _log(f"{tag}: export {'pruned ' if pruned else ''}{mode}")
        cards[f"{'pruned_' if pruned else ''}{mode}"] = export_run(
            ExportConfig(run=str(run), mode=mode, pruned=pruned, force=True, parity=False, representative_samples=100))
    exp = run / "export"
    # Shared machines are noisy: several rounds, each measuring both models side by side; the
    # figure is the median over rounds of each round's p50 (min p50 kept too).
    samples: dict[tuple[str, int], list[float]] = {}
    for i in range(rounds):
        _log(f"{tag}: bench float32 vs int8, threads {threads}, round {i + 1}/{rounds}")
        bench = _bench([exp / "model_float32.tflite", exp / "model_int8.tflite"], threads, runs,
                       work / f"{tag}_bench_{i}.json")
        for r in bench["results"]:
            samples.setdefault((Path(r["model"]).name, r["threads"]), []).append(r["latency_ms"]["p50"])
    return {"tag": tag, "alpha": alpha, "size": size, "pruning": {k: pr[k] for k in ("sparsity", "gzip_ratio")},
            "files": {k: {"bytes": c["file_bytes"], "gzip": c["gzip_bytes"]} for k, c in cards.items()},
            "latency": [{"model": m, "threads": t, "p50_ms": statistics.median(v), "min_p50_ms": min(v),
                         "rounds": v} for (m, t), v in samples.items()],
            "machine": bench["machine"]}


def parity_case(work: Path, name: str, *, alpha: float, size: int, weights: str, epochs: int, fine_tune: int,
                per_class: int) -> dict:
    from edgecls.core.config import ExportConfig
    from edgecls.optimize.export import ExportFailed, export_run
    from edgecls.data.synth import write_synthetic_dataset

    data = work / f"pdata_{size}"
    if not data.is_dir():
        write_synthetic_dataset(data, classes=4, per_class=per_class, size=max(size, 128), seed=2)
    _log(f"parity {name}: train {epochs}+{fine_tune} epochs ({weights})")
    run = _train(data, work / f"parity_{name}", alpha=alpha, size=size, weights=weights, epochs=epochs,
                 fine_tune=fine_tune)
    _log(f"parity {name}: export int8 + parity")
    try:
        card = export_run(ExportConfig(run=str(run), mode="int8", force=True))
    except ExportFailed as e:
        card = e.card
    return {"name": name, "alpha": alpha, "size": size, "weights": weights, **card["parity"],
            "passed": card["parity_passed"]}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "## Export: size, latency, parity (`tools/bench_export.py`)",
        "",
        f"Measured {res['date']} on {m.get('cpu_model', platform.processor())} ({m.get('cores')} cores, shared and busy), "
        f"{res['versions']}; latency with `edgecls bench` ({m.get('runtime')} {m.get('runtime_version')} + XNNPACK, random input, "
        f"{res['runs']} runs after 20 warm-up, p50). Sizes/latency use random-init weights (weights none); "
        "pruning is tfmot magnitude pruning to 50% during a 1-epoch fine-tune; gzip level 9.",
        "",
        "| model | float32 | float16 | dynamic | int8 | pruned int8 | int8 gzip / pruned int8 gzip |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in res["configs"]:
        f = c["files"]
        cell = lambda k: f"{f[k]['bytes'] / 1e6:.2f} MB (gz {f[k]['gzip'] / 1e6:.2f})"  # noqa: E731
        lines.append(f"| MobileNetV2 {c['alpha']} {c['size']} | " + " | ".join(
            cell(k) for k in ("float32", "float16", "dynamic", "int8", "pruned_int8"))
            + f" | **{f['int8']['gzip'] / f['pruned_int8']['gzip']:.2f}x** (sparsity {c['pruning']['sparsity']:.2f}) |")
    lines += ["", f"Latency: median over {res['rounds']} rounds of each round's p50 (min over rounds in brackets).", "",
              "| model | threads | float32 p50 | int8 p50 | int8 speed-up (median / min) |", "|---|---|---|---|---|"]
    for c in res["configs"]:
        lat = {(x["model"], x["threads"]): x for x in c["latency"]}
        for t in sorted({x["threads"] for x in c["latency"]}):
            f32, i8 = lat[("model_float32.tflite", t)], lat[("model_int8.tflite", t)]
            lines.append(f"| MobileNetV2 {c['alpha']} {c['size']} | {t} | {f32['p50_ms']:.2f} ms ({f32['min_p50_ms']:.2f}) | "
                         f"{i8['p50_ms']:.2f} ms ({i8['min_p50_ms']:.2f}) | **{f32['p50_ms'] / i8['p50_ms']:.2f}x** / "
                         f"{f32['min_p50_ms'] / i8['min_p50_ms']:.2f}x |")
    if res["parity"]:
        lines += ["", "| parity case (int8 vs float, run's test split) | n | float acc | int8 acc | drop (points) | "
                  "agreement | mean abs prob diff | passed |", "|---|---|---|---|---|---|---|---|"]
        for p in res["parity"]:
            lines.append(f"| {p['name']} | {p['n_images']} | {100 * p['float_accuracy']:.1f}% | "
                         f"{100 * p['tflite_accuracy']:.1f}% | {p['accuracy_drop_points']:.2f} | {p['agreement']:.3f} | "
                         f"{p['mean_abs_prob_diff']:.4f} | {p['passed']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/edgecls-bench-export"))
    ap.add_argument("--quick", action="store_true", help="0.35@96 only, 50 runs, no pretrained parity")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5, help="latency rounds (median of per-round p50)")
    ap.add_argument("--no-parity", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EDGECLS_VERBOSE", "0")
    from edgecls import __version__
    from edgecls.core.keras import tf

    configs = [(0.35, 96)] if args.quick else [(1.0, 224), (0.35, 96)]
    runs = 50 if args.quick else args.runs
    started = time.time()
    res = {"date": dt.date.today().isoformat(), "runs": runs, "rounds": args.rounds,
           "versions": f"edgecls {__version__}, TensorFlow {tf.__version__}, Python {platform.python_version()}",
           "configs": [size_and_latency(args.out, a, s, runs, args.threads, args.rounds) for a, s in configs], "parity": []}
    res["machine"] = res["configs"][0]["machine"]
    if not args.no_parity:
        res["parity"].append(parity_case(args.out, "MobileNetV2 0.35 96, from scratch, synthetic 4x80",
                                         alpha=0.35, size=96, weights="none", epochs=8, fine_tune=0, per_class=80))
        if PRETRAINED.is_file() and not args.quick:
            res["parity"].append(parity_case(args.out, "MobileNetV2 1.0 160, fine-tuned from the offline no-top file, "
                                             "synthetic 4x80", alpha=1.0, size=160, weights=str(PRETRAINED), epochs=3,
                                             fine_tune=1, per_class=80))
    res["elapsed_s"] = round(time.time() - started, 1)
    (args.out / "bench_export.json").write_text(json.dumps(res, indent=2, default=str))
    print(markdown(res))
    _log(f"done in {res['elapsed_s']} s; JSON in {args.out / 'bench_export.json'}")


if __name__ == "__main__":
    main()
