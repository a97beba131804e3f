#!/usr/bin/env python
"""int8 methods benchmark: every method of the export's plan, side by side, on real-photo sets and a hard set.

For each set it trains a run (``edgecls train`` defaults, the shared pretrained MobileNetV2 1.0 @ 160),
then builds one int8 file per method from one shared calibration (the export's own
:class:`edgecls.optimize.int8.method.Context`), with each in/out type asked for, plus float16 and
dynamic-range reference files; gates every file against the float model on the set's held-out
photos (the export's own gate, :mod:`edgecls.optimize.gate`); times every file at 1 thread in this
one process, in turn (ratios to plain PTQ side by side); and finally runs the default
``edgecls export --int8 --parity-data HOLDOUT`` and records what it shipped. Optionally (when the
package is installed) the same model goes through Google's ``ai-edge-quantizer`` for comparison.

Sets (``--set``, repeatable):

- ``hard``: synthetic shapes made hard (low resolution upscaled, noise, a second class blended in,
  3 % wrong labels): many borderline images; gated on the run's own test + val images;
- ``cifar10:SEED``: 5 CIFAR-10 classes drawn with SEED from ``/work/photo-cache/cifar10``
  (``tools/photo_sets.py cifar10-photos``; 32 px photos upscaled: blurry), 50/10/10 per class, gated
  on 200 held-out photos per class;
- ``NAME:SEED`` for a sharp set of ``tools/photo_sets.py`` (trashnet, clothing, grocery, flowers,
  scenes), built in the photo cache: 5 classes, 50/10/10, gated on ``--holdout-per-class`` photos.

    .venv/bin/python tools/bench_quant.py --set cifar10:0 --set flowers:0 --work /tmp/bq --out /tmp/bq.json \\
        --conditions quiet

Prints one Markdown table per set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
PRETRAINED = Path(os.environ.get("EDGECLS_BENCH_WEIGHTS",
                                 str(REPO / ".." / "shared" / "pretrained" / "mobilenet_v2_1.0_160_no_top.h5")))
METHODS = ("ptq", "bias-corrected", "stem-float", "float-search", "qat")
FLOAT_OUT_METHODS = ("ptq", "bias-corrected", "stem-float")
"""Also built with a float32 output (--io uint8-float32)."""
LATENCY_REPEATS = 5


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_hard_set(out: Path, *, classes: int = 8, per_class: int = 140, native_px: int = 64, noise: float = 14.0,
                  blend: float = 0.3, flip: float = 0.03, seed: int = 0) -> None:
    """Synthetic shapes made hard: rendered at ``native_px`` and upscaled, Gaussian noise of std
    ``noise`` (0..255), another class's image blended in at up to ``blend``, ``flip`` of labels wrong."""
    import numpy as np
    from PIL import Image

    from edgecls.data.synth import write_synthetic_dataset

    raw = out.parent / (out.name + "_clean")
    write_synthetic_dataset(raw, classes=classes, per_class=per_class, size=native_px, seed=seed)
    rng = np.random.default_rng(seed)
    names = sorted(p.name for p in raw.iterdir() if p.is_dir())
    files = {n: sorted((raw / n).glob("*.jpg")) for n in names}
    for ci, name in enumerate(names):
        for f in files[name]:
            img = np.asarray(Image.open(f).convert("RGB"), np.float32)
            other = names[(ci + 1 + rng.integers(len(names) - 1)) % len(names)]
            o = np.asarray(Image.open(files[other][rng.integers(len(files[other]))]).convert("RGB"), np.float32)
            a = rng.uniform(0.0, blend)
            img = (1 - a) * img + a * o + rng.normal(0, noise, img.shape)
            im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((160, 160), Image.BILINEAR)
            label = name if rng.random() >= flip else names[rng.integers(len(names))]
            (out / label).mkdir(parents=True, exist_ok=True)
            im.save(out / label / f"{name}_{f.stem}.jpg", quality=90)


def prepare(spec: str, work: Path, cache: Path, holdout_per_class: int) -> tuple[Path, Path | None]:
    """The set's trained run folder and its held-out folder (None: the run's own test + val)."""
    from edgecls.core.config import TrainConfig
    from edgecls.train.fit import train

    name, _, seed_text = spec.partition(":")
    seed = int(seed_text or 0)
    where = work / spec.replace(":", "-")
    data, holdout, run = where / "data", where / "holdout", where / "run"
    if not data.is_dir():
        if name == "hard":
            _log("making the hard synthetic set")
            make_hard_set(data, seed=seed)
        else:
            from photo_sets import draw_photo_set

            per_class = 200 if name == "cifar10" else holdout_per_class
            draw_photo_set(cache / name, data, holdout, seed=seed, holdout_per_class=per_class)
    if not (run / "model.keras").is_file():
        _log(f"training {spec}")
        options = dict(epochs=4, fine_tune_epochs=0) if name == "hard" else {}
        train(TrainConfig(data=str(data), out=str(run), size=160, weights=str(PRETRAINED), seed=seed, **options),
              verbose=0)
    return run, (holdout / "test" if name != "hard" else None)


def build_files(run_dir: Path, files: Path, methods: tuple[str, ...]) -> dict[str, dict]:
    """One file per (method, io), plus the float16 and dynamic references: {row: {file, build_s, ...}}."""
    from edgecls.core.rundir import RunDir
    from edgecls.optimize.convert import convert_model, representative_images
    from edgecls.optimize.int8.method import Context
    from edgecls.optimize.int8.plan import method_classes
    from edgecls.train.model_io import load_model

    run = RunDir.open(run_dir)
    model = load_model(run.model_path)
    rep = representative_images(run, 160, 300, run.train_config().seed)
    by_name = {cls.name: cls for cls in method_classes()}
    rows: dict[str, dict] = {}
    for io in ("uint8", "uint8-float32"):
        ctx = Context(model, rep, io=io, seed=run.train_config().seed, workdir=files, log=_log)
        for name in methods:
            if io != "uint8" and name not in FLOAT_OUT_METHODS:
                continue
            cls = by_name[name]
            method = cls(2, 1e-5) if name == "qat" else cls()
            _log(f"{name} ({io})")
            t = time.perf_counter()
            built = method.build(ctx)
            seconds = time.perf_counter() - t
            if built is None:
                continue
            row = name if io == "uint8" else f"{name}, float32 output"
            path = files / (row.replace(", ", "-").replace(" ", "-") + ".tflite")
            path.write_bytes(built.data)
            rows[row] = {"file": str(path), "build_s": round(seconds, 1), "float_tensors": len(built.float_tensors),
                         "io": io}
    for mode in ("float16", "dynamic"):
        path = files / f"{mode}.tflite"
        path.write_bytes(convert_model(model, mode))
        rows[mode] = {"file": str(path), "build_s": None, "float_tensors": None, "io": "float32"}
    try:
        rows.update(_ai_edge_quantizer(model, rep, files))
    except ImportError:
        _log("ai-edge-quantizer is not installed: its rows are left out")
    return rows


def _ai_edge_quantizer(model, rep, files: Path) -> dict[str, dict]:
    """Google's quantizer on the float .tflite: plain static int8, and with the stem left float."""
    from ai_edge_quantizer import quantizer as aeq_quantizer
    from ai_edge_quantizer import recipe as aeq_recipe

    from edgecls.core.keras import tf

    float_tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()  # it needs the SignatureDef
    signature = tf.lite.Interpreter(model_content=float_tflite).get_signature_list()
    key = next(iter(signature))
    input_name = signature[key]["inputs"][0]
    calibration = {key: [{input_name: img[None].astype("float32")} for img in rep]}
    rows = {}
    t = time.perf_counter()
    q = aeq_quantizer.Quantizer(float_tflite)
    q.load_quantization_recipe(aeq_recipe.static_wi8_ai8())
    result = q.quantize(q.calibrate(calibration))
    path = files / "ai-edge-quantizer.tflite"
    path.write_bytes(bytes(result.quantized_model))
    rows["ai-edge-quantizer static int8"] = {"file": str(path), "build_s": round(time.perf_counter() - t, 1),
                                             "float_tensors": 0, "io": "float32"}
    return rows


def measure(run_dir: Path, holdout: Path | None, rows: dict[str, dict]) -> None:
    """Gate figures of every row on the held-out photos, then 1-thread latency of every file, in turn."""
    import numpy as np

    from edgecls.core.config import ParityConfig
    from edgecls.core.rundir import RunDir
    from edgecls.optimize.card import measure_latency_ms
    from edgecls.optimize.parity import gate_images, run_parity
    from edgecls.train.model_io import load_model

    run = RunDir.open(run_dir)
    model = load_model(run.model_path)
    images = gate_images(run, str(holdout) if holdout else None, model)
    for name, row in rows.items():
        r = run_parity(ParityConfig(run=str(run_dir), model=row["file"], diagnose=False, threads=1,
                                    data=str(holdout) if holdout else None), raise_on_fail=False, float_keras=model,
                       images=images)
        row.update(n_images=r.n_images, n_clear=r.n_clear, float_accuracy=r.float_accuracy,
                   tflite_accuracy=r.tflite_accuracy, drop=r.accuracy_drop_points, drop_ci=r.accuracy_drop_ci95_points,
                   clear_agreement=r.clear_agreement, clear_ci=r.clear_agreement_ci95, agreement=r.agreement,
                   agreement_ci=r.agreement_ci95, changed=r.changed, mean_abs_prob_diff=r.mean_abs_prob_diff,
                   passed=r.passed, file_bytes=Path(row["file"]).stat().st_size)
    _log("latency")
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(LATENCY_REPEATS):  # in turn, so the ratios are side by side
        for name, row in rows.items():
            times[name].append(measure_latency_ms(Path(row["file"]), 160, threads=1))
    for name, row in rows.items():
        row["latency_ms"] = round(float(np.median(times[name])), 3)
    base = rows.get("ptq", {}).get("latency_ms")
    for row in rows.values():
        row["latency_vs_ptq"] = round(row["latency_ms"] / base, 3) if base else None


def default_export(run_dir: Path, holdout: Path | None) -> dict:
    from edgecls.core.config import ExportConfig
    from edgecls.optimize.export import export_run

    t = time.perf_counter()
    try:
        card = export_run(ExportConfig(run=str(run_dir), force=True, parity_data=str(holdout) if holdout else None))
        shipped = {"path": card["quantization"]["path"], "passed": True}
    except Exception as e:  # noqa: BLE001 - a failure is a result too
        card = getattr(e, "card", None) or {}
        shipped = {"path": (card.get("quantization") or {}).get("path"), "passed": False, "error": str(e)[:400]}
    shipped["seconds"] = round(time.perf_counter() - t, 1)
    if card.get("parity"):
        p = card["parity"]
        shipped.update(clear_agreement=p["clear_agreement"], agreement=p["agreement"], drop=p["accuracy_drop_points"],
                       attempts=[a["path"] for a in card["quantization"]["attempts"]])
    return shipped


def table(spec: str, result: dict) -> str:
    lines = [f"**{spec}** ({result['rows']['ptq']['n_images']} held-out images, {result['rows']['ptq']['n_clear']} "
             f"clearly decided; float accuracy {100 * result['rows']['ptq']['float_accuracy']:.1f} %)", "",
             "| file | drop (points) | clear-decision agreement | all-image agreement | changed: clear / near-tie / "
             "output ties | size | latency 1 thread (x PTQ) |", "|---|---|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        clear = f"{r['clear_agreement']:.4f}" if r["clear_agreement"] is not None else "n/a"
        ch = r["changed"]
        lines.append(f"| {name} | {r['drop']:+.2f} | {clear} | {r['agreement']:.4f} | {ch['clear']} / {ch['near_ties']} / "
                     f"{ch['output_ties']} | {r['file_bytes'] / 1e6:.3f} MB | {r['latency_ms']:.2f} ms "
                     f"({r['latency_vs_ptq']:.2f}x) |")
    s = result["default_export"]
    lines.append(f"\nDefault export: shipped `{s.get('path')}` (passed: {s['passed']}; tried "
                 f"{' -> '.join(s.get('attempts') or [])}; {s['seconds']:.0f} s)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="sets", action="append", required=True, help="hard, cifar10:SEED or NAME:SEED")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_quant"))
    ap.add_argument("--cache", type=Path, default=REPO.parent / "photo-cache", help="the photo cache")
    ap.add_argument("--holdout-per-class", type=int, default=150)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-export", action="store_true", help="leave out the default export's run")
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    ap.add_argument("--conditions", default="not stated", help="machine state during the run (quiet, busy)")
    args = ap.parse_args()
    if not PRETRAINED.is_file():
        print(f"needs {PRETRAINED}", file=sys.stderr)
        return 2
    from importlib.metadata import version

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    results = {}
    for spec in args.sets:
        run_dir, holdout = prepare(spec, args.work, args.cache, args.holdout_per_class)
        files = args.work / spec.replace(":", "-") / "files"
        files.mkdir(parents=True, exist_ok=True)
        rows = build_files(run_dir, files, methods)
        measure(run_dir, holdout, rows)
        result = {"rows": rows, "default_export": {"skipped": True, "passed": None, "seconds": 0}}
        if not args.no_export:
            _log(f"default export of {spec}")
            result["default_export"] = default_export(run_dir, holdout)
        results[spec] = result
        print(table(spec, result), flush=True)
    out = {"date": dt.date.today().isoformat(), "machine": platform.machine(), "processor": platform.processor(),
           "runtime": f"ai-edge-litert {version('ai-edge-litert')}", "tensorflow": version("tensorflow"),
           "conditions": args.conditions, "sets": results}
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
