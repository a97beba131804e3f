#!/usr/bin/env python
"""int8 repair benchmark: plain PTQ vs selective float layers vs QAT vs 16x8, side by side, one run.

Makes a deliberately hard synthetic set (more classes, low resolution upscaled, heavy noise, a
second class's image blended in, some labels flipped: many borderline images), fine-tunes the
shared pretrained MobileNetV2 1.0 @ 160 (/work/shared/pretrained) on it with ``edgecls train``,
then builds the int8 variants from the same calibration -- plain PTQ, selective float chosen by the
debugger's rmse/scale rule (tensors above twice rounding noise), selective float chosen by *effect*
on calibration images (:mod:`edgecls.optimize.selective`), PTQ after empirical bias correction
(:mod:`edgecls.optimize.bias_correction`), selective float (effect) on the bias-corrected model,
GPTQ error-compensating weight rounding alone and with bias correction on top
(:mod:`edgecls.optimize.gptq`; the latter is the default chain's first repair), QAT, 16x8 (int16 activations, int8
weights, float32 in/out), and two reference rows: dynamic range (int8 weights, float activations)
and float16 -- and measures each through the
device runtime on every held-out image (test + val, as parity does by default): top-1 agreement
with the float model (95% CI), accuracy, mean |prob diff|,
worst-tensor rmse/scale (QuantizationDebugger), file size, 1-thread latency (median of
--runs invokes after warm-up, all models timed in this one process, in turn). Finally the
default ``edgecls export --int8`` runs on the same run and its chosen path is recorded.

    .venv/bin/python tools/bench_quant.py --work /tmp/bq --out bench_quant.json
Prints a Markdown section for BENCHMARKS.md.
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
PRETRAINED = Path("/work/shared/pretrained/mobilenet_v2_1.0_160_no_top.h5")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _file_name(variant: str) -> str:
    """'selective-float (effect)' -> 'selective-float-effect.tflite'."""
    return "-".join(variant.replace("(", "").replace(")", "").replace("/", "").replace(",", "").split()) + ".tflite"


def make_hard_set(out: Path, *, classes: int, per_class: int, native_px: int, noise: float, blend: float,
                  flip: float, seed: int) -> None:
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


class _Skipped(Exception):
    """--skip export: the default export is not run."""


def _int16_selective(calibrated: bytes, tensors: list) -> dict:
    """Selective float on top of 16x8: the MLIR quantizer (the one that takes a denylist) asked for
    int16 activations on the same calibrated model. Returns what happened (it is recorded, not assumed)."""
    from tensorflow.compiler.mlir.lite import types_pb2
    from tensorflow.lite.python import convert as tfl_convert

    from edgecls.core.keras import quiet_native_stderr, tf

    try:
        with quiet_native_stderr():
            data = tfl_convert.mlir_quantize(calibrated, inference_type=types_pb2.QUANTIZED_INT16,
                                             input_data_type=tf.float32, output_data_type=tf.float32,
                                             denylisted_nodes=list(tensors) or None)
        return {"possible": True, "file_bytes": len(data)}
    except Exception as e:  # noqa: BLE001 - recorded
        return {"possible": False, "error": str(e).strip().splitlines()[0][:300] if str(e).strip() else repr(e)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_quant"))
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=140)
    ap.add_argument("--native-px", type=int, default=64)
    ap.add_argument("--noise", type=float, default=14.0)
    ap.add_argument("--blend", type=float, default=0.3)
    ap.add_argument("--flip", type=float, default=0.03)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--qat-lr", type=float, default=1e-5)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--conditions", default="not stated",
                    help="machine state during the run, recorded in the JSON (e.g. 'quiet', 'busy shared machine')")
    ap.add_argument("--skip", default="",
                    help="comma-separated rows to leave out: rmse-rule,16x8,reference,export,bc-selective,gptq-alone")
    args = ap.parse_args()
    if not PRETRAINED.is_file():
        print(f"needs {PRETRAINED}", file=sys.stderr)
        return 2

    import numpy as np

    from edgecls.core.config import ExportConfig, ParityConfig, TrainConfig
    from edgecls.core.rundir import RunDir
    from edgecls.optimize import qdebug
    from edgecls.optimize.convert import convert_model, representative_images
    from edgecls.optimize.bias_correction import corrected_with_shifts, shift_summary
    from edgecls.optimize.gptq import compensate_rounding
    from edgecls.optimize.export import export_run, measure_latency_ms
    from edgecls.optimize.parity import run_parity
    from edgecls.optimize.qat import qat_finetune
    from edgecls.optimize.selective import EFFECT_IMAGES, select_float_tensors, select_on_corrected
    from edgecls.train.fit import train
    from edgecls.train.model_io import load_model
    from importlib.metadata import version

    work = args.work
    data_dir, run_dir = work / "data", work / "run"
    if not data_dir.is_dir():
        _log("making the hard synthetic set")
        make_hard_set(data_dir, classes=args.classes, per_class=args.per_class, native_px=args.native_px,
                      noise=args.noise, blend=args.blend, flip=args.flip, seed=args.seed)
    if not (run_dir / "model.keras").is_file():
        _log("training MobileNetV2 1.0 @ 160 from the pretrained file")
        train(TrainConfig(data=str(data_dir), out=str(run_dir), backbone="mobilenet_v2", alpha=1.0, size=160,
                          weights=str(PRETRAINED), epochs=args.epochs, fine_tune_epochs=0, batch_size=32,
                          cache="memory", seed=args.seed), verbose=0)
    run = RunDir.open(run_dir)
    model = load_model(run.model_path)
    rep = representative_images(run, 160, 300, args.seed)
    files = work / "variants"
    files.mkdir(exist_ok=True)

    _log("PTQ + diagnosis")
    t = time.perf_counter()
    diag = qdebug.diagnose(model, rep, rep[: qdebug.DEBUG_IMAGES])
    variants = {"ptq": (convert_model(model, "int8", representative=rep), [], diag.summary(), time.perf_counter() - t)}
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if "rmse-rule" not in skip:
        rule = qdebug.auto_float_layers(diag.layers) or [e.tensor for e in diag.layers[:2]]  # none above: worst two
        _log(f"selective float by rmse/scale: {len(rule)} tensors")
        t = time.perf_counter()
        sel = qdebug.selective_int8(diag.calibrated, rule)
        sel_diag = qdebug.diagnose(model, rep, rep[: qdebug.DEBUG_IMAGES], denylisted=rule).summary()
        variants["selective-float (rmse rule)"] = (sel, rule, sel_diag, time.perf_counter() - t)
    _log("selective float by effect")
    t = time.perf_counter()
    images = rep[:EFFECT_IMAGES]
    p_float = model.predict(images.astype(np.float32), batch_size=32, verbose=0)
    selection = select_float_tensors(diag.calibrated, diag.layers, images, p_float, io="uint8", workdir=files,
                                     log=_log)
    sel = qdebug.selective_int8(diag.calibrated, selection.tensors)
    sel_diag = qdebug.diagnose(model, rep, rep[: qdebug.DEBUG_IMAGES], denylisted=selection.tensors).summary()
    variants["selective-float (effect)"] = (sel, selection.tensors, sel_diag, time.perf_counter() - t)
    _log("bias correction")
    t = time.perf_counter()
    corrected, shifts = corrected_with_shifts(model, rep)
    bias_info = shift_summary(shifts, len(rep))
    bias_info["seconds"] = round(time.perf_counter() - t, 1)
    bc_data = convert_model(corrected, "int8", representative=rep)
    bc_seconds = time.perf_counter() - t  # what the export's repair step costs before its gate
    bc_diag = qdebug.diagnose(corrected, rep, rep[: qdebug.DEBUG_IMAGES])
    variants["bias-corrected"] = (bc_data, [], bc_diag.summary(), bc_seconds)
    if "bc-selective" not in skip:
        # export's default selective step: chosen on the bias-corrected model, float ops' biases restored
        _log("selective float by effect on the bias-corrected model, float ops' biases restored")
        t = time.perf_counter()
        built = select_on_corrected(model, corrected, shifts, rep, io="uint8", workdir=files, log=_log)
        variants["bias-corrected + selective-float (export's step)"] = (
            built.data or bc_data, built.selection.tensors, built.summary, time.perf_counter() - t)
    gptq_info = {}
    for label, with_bc in (("gptq", False), ("gptq + bias correction", True)):
        if label == "gptq" and "gptq-alone" in skip:
            continue
        _log(label)
        t = time.perf_counter()
        rounded, gptq_info[label] = compensate_rounding(model, rep, bias_correction=with_bc)
        g_data = convert_model(rounded, "int8", representative=rep)
        g_seconds = time.perf_counter() - t  # what the export's repair step costs before its gate
        g_diag = qdebug.diagnose(rounded, rep, rep[: qdebug.DEBUG_IMAGES])
        variants[label] = (g_data, [], g_diag.summary(), g_seconds)
    _log("QAT")
    t = time.perf_counter()
    q, info = qat_finetune(model, rep, epochs=args.qat_epochs, learning_rate=args.qat_lr, seed=args.seed)
    variants["qat"] = (convert_model(q, "int8", representative=rep), [], None, time.perf_counter() - t)
    int16_selective = None
    if "16x8" not in skip:
        _log("16x8: int16 activations, int8 weights (float32 in/out: the converter refuses uint8)")
        t = time.perf_counter()
        variants["16x8"] = (convert_model(model, "int8", representative=rep, io="float32", activations="int16"), [],
                            None, time.perf_counter() - t)
        int16_selective = _int16_selective(diag.calibrated, selection.tensors)
    # Where the error comes from: int8 weights with float activations; float16 (the near-tie ceiling).
    for mode, label in (("dynamic", "dynamic (int8 weights, float activations)"), ("float16", "float16")):
        if "reference" in skip:
            break
        t = time.perf_counter()
        variants[label] = (convert_model(model, mode), [], None, time.perf_counter() - t)

    from edgecls import data as edata

    root, split = edata.load_split(run)
    held_x, _ = edata.load_images(root, [it for n in ("test", "val") for it in split.get(n) or []], 160)
    p_held = model.predict(held_x.astype(np.float32), batch_size=32, verbose=0)
    top2 = np.sort(p_held, 1)
    margin = top2[:, -1] - top2[:, -2]  # the float model's top-1/top-2 probability margin per held-out image
    rows = {}
    for name, (data, floats, qe, seconds) in variants.items():
        path = files / _file_name(name)
        path.write_bytes(data)
        r = run_parity(ParityConfig(run=str(run_dir), model=str(path), diagnose=False, threads=1), raise_on_fail=False,
                       quant_error=qe)
        rows[name] = {"agreement": r["agreement"], "agreement_ci95": r["agreement_ci95"],
                      "float_accuracy": r["float_accuracy"], "tflite_accuracy": r["tflite_accuracy"],
                      "accuracy_drop_points": r["accuracy_drop_points"], "mean_abs_prob_diff": r["mean_abs_prob_diff"],
                      "worst_rmse_scale": qe["worst"][0]["rmse_scale"] if qe else None, "file_bytes": len(data),
                      "float_layers": len(floats), "n_images": r["n_images"], "build_s": round(seconds, 1)}
        from edgecls.optimize.selective import tflite_probabilities

        flips = tflite_probabilities(data, held_x, files).argmax(1) != p_held.argmax(1)
        clear = margin >= 0.1
        rows[name]["flips_by_margin"] = {"<0.02": int((flips & (margin < 0.02)).sum()),
                                         "<0.05": int((flips & (margin < 0.05)).sum()),
                                         "<0.1": int((flips & (margin < 0.1)).sum()), "all": int(flips.sum())}
        rows[name]["agreement_margin_ge_0.1"] = round(float(1 - flips[clear].mean()), 4)
    _log("latency")
    for name in variants:  # in turn, in this process: the ratios are side by side
        rows[name]["latency_ms_1thread"] = float(np.median(
            [measure_latency_ms(files / _file_name(name), 160, threads=1) for _ in range(max(1, args.runs // 30))]))
    _log("default edgecls export --int8")
    if "export" in skip:
        shipped = {"skipped": True}
    try:
        if "export" in skip:
            raise _Skipped()
        card = export_run(ExportConfig(run=str(run_dir), force=True))
        shipped = {"path": card["quantization"]["path"], "agreement": card["parity"]["agreement"], "passed": True,
                   "attempts": card["quantization"]["attempts"], "float_layers": card["quantization"]["float_layers"]}
    except _Skipped:
        pass
    except Exception as e:  # noqa: BLE001 - the benchmark records a failure too
        card = getattr(e, "card", None) or {}
        shipped = {"path": None, "passed": False, "error": str(e)[:600],
                   "attempts": (card.get("quantization") or {}).get("attempts")}
    result = {
        "date": dt.date.today().isoformat(), "machine": platform.machine(), "cpu_isa": "AVX2 (no AVX-512/VNNI)",
        "runtime": f"ai-edge-litert {version('ai-edge-litert')}", "threads": 1, "conditions": args.conditions,
        "set": vars(args) | {"work": str(args.work), "out": str(args.out)}, "qat": info, "bias_correction": bias_info,
        "bias_corrected_selection": ({**built.selection.as_dict(), "biases_restored": built.biases_restored}
                                     if "bc-selective" not in skip else None),
        "gptq": gptq_info,
        "held_out_margins": {"n": int(len(margin)), "<0.02": int((margin < 0.02).sum()),
                             "<0.05": int((margin < 0.05).sum()), "<0.1": int((margin < 0.1).sum())},
        "int16_selective_float": int16_selective,
        "selection": selection.as_dict(), "variants": rows,
        "default_export": shipped,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))
    print("| variant | agreement (95% CI) | flips (margin <0.02/<0.05/<0.1/all) | agreement, margin >= 0.1 | float acc | "
          "int8 acc | mean abs prob diff | worst rmse/scale | float tensors | size | latency 1 thread | build |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        ci = r["agreement_ci95"]
        worst = f"{r['worst_rmse_scale']:.2f}" if r["worst_rmse_scale"] is not None else "n/a"
        fm = r["flips_by_margin"]
        print(f"| {name} | {r['agreement']:.4f} ({ci[0]:.3f}-{ci[1]:.3f}) | "
              f"{fm['<0.02']}/{fm['<0.05']}/{fm['<0.1']}/{fm['all']} | {r['agreement_margin_ge_0.1']:.4f} | "
              f"{100 * r['float_accuracy']:.1f}% | "
              f"{100 * r['tflite_accuracy']:.1f}% | {r['mean_abs_prob_diff']:.4f} | {worst} | {r['float_layers']} | "
              f"{r['file_bytes'] / 1e6:.3f} MB | {r['latency_ms_1thread']:.2f} ms | {r['build_s']:.0f} s |")
    print(f"\nheld-out float margins: {result['held_out_margins']}")
    print(f"bias correction: {bias_info}")
    print(f"gptq: {gptq_info}")
    print(f"\nQAT: {info}")
    print(f"selective float on top of 16x8: {int16_selective}")
    print(f"\ndefault export: {shipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
