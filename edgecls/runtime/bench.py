"""Latency of .tflite models on this machine: percentiles per thread count, XNNPACK on/off.

Init (interpreter construction + tensor allocation) is timed separately; warm-up invokes
(XNNPACK packs weights on the first ones) are excluded; only ``invoke()`` is inside the timer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls.core.device_config import BenchConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.options import validate
from edgecls.core.io import atomic_write_json, ensure_writable
from edgecls.runtime.classifier import Classifier
from edgecls.runtime.machine import machine_info, peak_rss_mb

# The JSON's layout; bump when a key changes meaning, so tables of several devices stay honest.
BENCH_FORMAT = "edgecls-bench/1"
MAX_BENCH_IMAGES = 64  # real images fed in turn; more adds load time, not information


def _validate(cfg: BenchConfig) -> None:
    validate(cfg)  # each option's bounds (a config changed after it was made)
    if not cfg.models:
        raise EdgeclsError("give at least one .tflite model to benchmark")
    if cfg.json and Path(cfg.json).is_dir():
        raise EdgeclsError(f"--json {cfg.json} is a folder; give a file path")
    if cfg.json and Path(cfg.json).exists() and not cfg.force:
        raise EdgeclsError(f"{cfg.json} already exists; choose another --json path or pass --force")
    if cfg.json:
        ensure_writable(cfg.json, "--json")  # before the benchmark, not after it
    for model in cfg.models:
        if str(model).lower().endswith(".rpk"):
            raise EdgeclsError(f"{model} is an IMX500 network: it runs on the AI Camera's sensor, which this host cannot "
                               "time; 'edgecls camera --source imx500 --model NETWORK.rpk --stats-json S' records the "
                               "sensor's own DNN time per frame (outputs.imx500.dnn_ms) and the loop's FPS")
        if not Path(model).is_file():
            raise EdgeclsError(f"model not found: {model}")
    if cfg.images and not Path(cfg.images).is_dir():
        raise EdgeclsError(f"image folder not found: {cfg.images}")


def load_frames(images: Optional[str], size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """RGB frames to feed: real images from a folder, else one seeded random image."""
    if images:
        from edgecls.runtime.sources import open_source

        frames = []
        with open_source(images) as src:
            while len(frames) < MAX_BENCH_IMAGES:
                ok, rgb = src.read()
                if not ok:
                    break
                frames.append(rgb)
        if not frames:
            raise EdgeclsError(f"no readable images in {images}")
        return frames
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)]


def latency_summary(ns: np.ndarray) -> dict[str, float]:
    ms = np.asarray(ns, dtype=np.float64) / 1e6
    return {
        "mean": float(ms.mean()),
        "std": float(ms.std()),
        "min": float(ms.min()),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
    }


def bench_one(
    model: str, *, threads: int, xnnpack: bool, runs: int, warmup: int, images: Optional[str], seed: int
) -> dict[str, Any]:
    """One (model, threads, delegate) measurement."""
    t0 = time.perf_counter_ns()
    clf = Classifier(model, num_threads=threads, xnnpack=xnnpack)
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    tensors = [clf.preprocess(f) for f in load_frames(images, clf.input_size, seed)]
    for i in range(warmup):
        clf.set_input(tensors[i % len(tensors)])
        clf.invoke_only()
    times = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        clf.set_input(tensors[i % len(tensors)])
        start = time.perf_counter_ns()
        clf.invoke_only()
        times[i] = time.perf_counter_ns() - start
    lat = latency_summary(times)
    return {
        "model": str(model),
        "threads": threads,
        "xnnpack": xnnpack,
        "latency_ms": lat,
        "fps": 1e3 / lat["mean"] if lat["mean"] > 0 else 0.0,
        "init_ms": init_ms,
        "size_bytes": Path(model).stat().st_size,
        "peak_rss_mb": peak_rss_mb(),
        "runtime": clf.runtime,
        "runtime_version": clf.runtime_version,
        "input": f"{clf.input_size[0]}x{clf.input_size[1]} {clf.input_dtype.name}",
        "images": "real" if images else "random",
        "runs": runs,
        "warmup": warmup,
    }


def ratios(results: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """p50 latency of each later model over the first, per thread count and delegate setting."""
    out = []
    if len(models) < 2:
        return out
    by_key = {(r["model"], r["threads"], r["xnnpack"]): r for r in results}
    base = models[0]
    for other in models[1:]:
        for r in results:
            if r["model"] != base:
                continue
            o = by_key.get((other, r["threads"], r["xnnpack"]))
            if o is None:
                continue
            out.append({
                "base": base, "model": other, "threads": r["threads"], "xnnpack": r["xnnpack"],
                "p50_ratio": o["latency_ms"]["p50"] / r["latency_ms"]["p50"],
            })
    return out


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Measure every model x thread count (x delegate setting); write --json when asked."""
    _validate(cfg)
    models = [str(m) for m in cfg.models]
    results = []
    for model in models:
        for threads in cfg.threads:
            for xnnpack in ((True, False) if cfg.compare_delegates else (True,)):
                results.append(bench_one(
                    model, threads=threads, xnnpack=xnnpack, runs=cfg.runs, warmup=cfg.warmup,
                    images=cfg.images, seed=cfg.seed,
                ))
    report = {
        "format": BENCH_FORMAT,
        "results": results,
        "machine": machine_info(results[0]["runtime"], results[0]["runtime_version"]),
        "ratios": ratios(results, models),
        "config": {"runs": cfg.runs, "warmup": cfg.warmup, "threads": list(cfg.threads),
                   "images": cfg.images, "seed": cfg.seed},
    }
    if cfg.json:
        atomic_write_json(cfg.json, report)
    return report


def _ms(v: float) -> str:
    """Milliseconds with enough digits for tiny models (0.012) and big ones (46.31)."""
    return f"{v:.3f}" if v < 10 else f"{v:.2f}"


def format_table(report: dict[str, Any]) -> str:
    head = f"{'model':<32} {'thr':>3} {'xnn':>3} {'init ms':>8} {'mean':>7} {'std':>6} {'p50':>7} {'p90':>7} {'p99':>7} {'fps':>7} {'size MB':>7}"
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        lat = r["latency_ms"]
        name = Path(r["model"]).name
        name = name if len(name) <= 32 else "..." + name[-29:]
        lines.append(
            f"{name:<32} {r['threads']:>3} {'on' if r['xnnpack'] else 'off':>3} {r['init_ms']:>8.1f} "
            f"{_ms(lat['mean']):>7} {_ms(lat['std']):>6} {_ms(lat['p50']):>7} {_ms(lat['p90']):>7} {_ms(lat['p99']):>7} "
            f"{r['fps']:>7.1f} {r['size_bytes'] / 1e6:>7.3f}"
        )
    for q in report["ratios"]:
        ratio = q["p50_ratio"]
        faster = f"{1 / ratio:.2f}x faster" if ratio < 1 else f"{ratio:.2f}x slower"
        lines.append(
            f"p50 ratio {Path(q['model']).name} / {Path(q['base']).name} at {q['threads']} thread(s)"
            f"{'' if q['xnnpack'] else ' (XNNPACK off)'}: {ratio:.2f}x ({Path(q['model']).name} is {faster})"
        )
    m = report["machine"]
    lines.append(
        f"machine: {m['cpu_model']} ({m['cores']} cores, {m['arch']}), Python {m['python']}, "
        f"{m['runtime']} {m['runtime_version']}, numpy {m['numpy']}; peak RSS {max(r['peak_rss_mb'] for r in report['results']):.0f} MB"
    )
    return "\n".join(lines)
