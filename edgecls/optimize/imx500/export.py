"""``edgecls export RUN --imx500``: a run's model as a Raspberry Pi AI Camera package, gated.

The steps, one transaction like every export (:mod:`edgecls.optimize.transaction`)::

    checks      Java 17, CPython 3.11 and the Sony venv (built on first use), before anything slow
    host        the float model's probabilities on the gate's images (test + val, or --parity-data),
                the calibration sample (the training split, as int8 export draws it), the golden images
    worker      in the Sony venv: the architecture rebuilt without its Rescaling, the weights in order,
                MCT post-training quantization (IMX500 TPC v1), both models' probabilities
    gate        rebuilt float == host float (to FLOAT_TOLERANCE), then accuracy drop and clear-decision
                agreement (gate.py); a failed gate keeps card + report + MCT's model as *.REJECTED*
    converter   imxconv-tf -> packerOut.zip; its memory report and dnnParams.xml are checked and recorded

Files (RunDir.imx500_files): model_imx500.packerOut.zip, .card.json, .golden.npz,
parity_imx500.json, labels.txt. On the Pi, ``imx500-package`` makes network.rpk of the zip
(``edgecls deploy RUN pi@HOST --imx500``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls import __version__
from edgecls.core.config import ExportConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.options import validate
from edgecls.core.io import atomic_write_bytes, atomic_write_json
from edgecls.core.rundir import Imx500Files, RunDir, write_labels
from edgecls.optimize.imx500 import toolchain
from edgecls.optimize.imx500.golden import write_golden
from edgecls.optimize.imx500.graph import (INPUT_RANGE, SENSOR_INPUT_SCALE, SENSOR_ZERO_CODE, SUPPORTED_BACKBONES)
from edgecls.optimize.imx500.package import PACKER_ZIP, read_memory_report, read_packer_zip
from edgecls.optimize.card import card_parity
from edgecls.optimize.transaction import ExportTransaction, recover

FLOAT_TOLERANCE = 1e-4
"""Largest |probability difference| between the host model and its rebuild in the Sony venv (2e-5 measured)."""
WORKER_TIMEOUT_S = 3600
CONVERTER_TIMEOUT_S = 3600
LOG_LINES_SHOWN = 1
# Export options that belong to the .tflite path; --imx500 refuses them rather than ignore them.
NOT_FOR_IMX500 = {"io": "uint8", "allow_float_fallback": False, "qat": False, "float_layers": "auto",
                  "parity": True, "repair": True}


class Imx500ExportFailed(EdgeclsError):
    """The gate failed: nothing was replaced; ``card`` and ``parity`` hold what was recorded."""

    def __init__(self, message: str, card: dict[str, Any], parity: Any):
        super().__init__(message)
        self.card = card
        self.parity = parity


def _validate(cfg: ExportConfig) -> None:
    validate(cfg)
    wrong = [k for k, v in NOT_FOR_IMX500.items() if getattr(cfg, k) != v]
    if wrong:
        flags = ", ".join("--no-parity" if k == "parity" else "--no-repair" if k == "repair" else
                          f"--{k.replace('_', '-')}" for k in wrong)
        raise EdgeclsError(f"{flags} apply to .tflite exports, not --imx500 (MCT quantizes for the sensor; "
                           "its parity gate always runs)")
    if cfg.out and str(cfg.out).endswith((".tflite", ".zip")):
        raise EdgeclsError(f"--out takes a folder for --imx500, got {cfg.out}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tail(log: Path) -> str:
    """The last meaningful line of a tool's log (progress bars and warnings skipped)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    keep = [ln for ln in lines if not ln.startswith(("WARNING", "W0000", "I0000")) and "it/s]" not in ln]
    return (keep or lines or ["no output"])[-1][:300]


def _log_path(paths: Imx500Files) -> Path:
    return paths.package.with_name(paths.package.name.replace(".packerOut.zip", ".log"))


def _keep_log(log: Path, paths: Imx500Files) -> Path:
    """Copy a failed tool's log out of the staging folder (which the failure deletes)."""
    return atomic_write_bytes(_log_path(paths), log.read_bytes() if log.is_file() else b"")


def _run(cmd: list[str], env: dict[str, str], log: Path, timeout: int, cwd: Optional[Path] = None) -> int:
    with open(log, "ab") as out:
        try:
            return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                  cwd=cwd, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return -1


def run_worker(tc: toolchain.Toolchain, job: Path, log: Path) -> tuple[int, dict[str, Any]]:
    """Run :mod:`.worker` in the Sony venv on ``job``; (exit code, result.json or {})."""
    # Only this package goes on the Sony venv's path (a link to it): the host's site-packages must not.
    shim = job / "pythonpath"
    shim.mkdir(exist_ok=True)
    link = shim / "edgecls"
    if not link.exists():
        link.symlink_to(Path(__file__).resolve().parents[2], target_is_directory=True)
    env = tc.env()
    env["PYTHONPATH"] = str(shim)
    rc = _run([str(tc.python), "-m", "edgecls.optimize.imx500.worker", str(job)], env, log, WORKER_TIMEOUT_S, cwd=job)
    result = job / "result.json"
    return rc, (json.loads(result.read_text()) if result.is_file() else {})


def run_converter(tc: toolchain.Toolchain, keras_file: Path, out_dir: Path, log: Path) -> int:
    """``imxconv-tf -i MODEL -o DIR`` (input persistency on: the input tensor stays readable for debugging)."""
    return _run([str(tc.converter), "-i", str(keras_file), "-o", str(out_dir), "--overwrite-output"], tc.env(), log,
                CONVERTER_TIMEOUT_S, cwd=out_dir.parent)


def export_imx500(cfg: ExportConfig) -> dict[str, Any]:
    """Quantize (MCT), gate, convert (imxconv-tf) and write the file set as one transaction; returns the card.

    Raises :class:`Imx500ExportFailed` when the gate fails (nothing replaced), EdgeclsError otherwise.
    """
    _validate(cfg)
    run = RunDir.open(cfg.run)
    tcfg = run.train_config()
    if tcfg.backbone not in SUPPORTED_BACKBONES:
        raise EdgeclsError(f"--imx500 supports {', '.join(SUPPORTED_BACKBONES)} runs (checked end to end); "
                           f"{run.path} is {tcfg.backbone}")
    if cfg.parity_data:
        from edgecls.optimize.parity import check_gate_data

        check_gate_data(run, cfg.parity_data)
    source = run.pruned_model_path if cfg.pruned else run.model_path
    if not source.is_file():
        raise EdgeclsError(f"{source} is missing; " + (f"run 'edgecls prune {run.path}' first" if cfg.pruned
                                                       else "train the run first ('edgecls train')"))
    paths = run.imx500_files(cfg.pruned, cfg.out)
    folder = paths.package.parent
    if folder.exists() and not folder.is_dir():
        raise EdgeclsError(f"{folder} is a file; --out takes a folder")
    names = [paths.parity.name, paths.golden.name, paths.labels.name, paths.card.name, paths.quantized.name,
             paths.package.name]
    stem = paths.package.name[: -len(".packerOut.zip")]
    for line in recover(folder, stem, names):
        print(f"Warning: {line}", file=sys.stderr)
    existing = [p for p in (paths.package, paths.card) if p.exists()]
    if existing and not cfg.force:
        raise EdgeclsError(f"{existing[0]} exists; pass --force to export --imx500 again and replace it")
    tc = toolchain.ensure()  # Java 17 and Python 3.11 are checked first; the venv is built on first use

    tx = ExportTransaction(folder, stem, names)
    try:
        tx.begin()
    except OSError as e:
        raise EdgeclsError(f"cannot write into {folder}: {e.strerror or e}") from None
    try:
        return _export(cfg, run, source, paths, tx, tc)
    finally:
        tx.abort()


def _export(cfg: ExportConfig, run: RunDir, source: Path, paths: Imx500Files, tx: ExportTransaction,
            tc: toolchain.Toolchain) -> dict[str, Any]:
    from edgecls import data
    from edgecls.optimize.convert import representative_images
    from edgecls.optimize.gate import compare
    from edgecls.optimize.parity import gate_images, gates_of
    from edgecls.train.model_io import load_model

    tcfg, labels = run.train_config(), run.read_labels()
    model = load_model(source)
    size = int(model.input_shape[1])
    if size != tcfg.size:
        raise EdgeclsError(f"{source.name} takes {size} px but the run's config says {tcfg.size}; the run is inconsistent")
    rep = representative_images(run, size, cfg.representative_samples, tcfg.seed)
    ref = gate_images(run, cfg.parity_data, model)
    root, split = data.load_split(run)
    held = split.get("test") or split.get("val") or []
    golden_x, golden_y = (data.load_images(root, data.stratified_sample(held, cfg.golden_images, tcfg.seed), size)
                          if held and cfg.golden_images else (np.zeros((0, size, size, 3), np.uint8), np.zeros(0)))

    job = tx.path("job")
    job.mkdir()
    (job / "job.json").write_text(json.dumps({"backbone": tcfg.backbone, "size": size, "alpha": tcfg.alpha,
                                              "num_classes": len(labels), "dropout": tcfg.dropout, "batch": 32}))
    np.savez(job / "weights.npz", *_sensor_weights(model))
    np.save(job / "calibration.npy", rep)
    np.save(job / "eval.npy", np.concatenate([ref.x, golden_x]).astype(np.uint8))
    log = job / "toolchain.log"
    print(f"imx500: quantizing with MCT in {tc.venv} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    rc, result = run_worker(tc, job, log)
    if rc != 0 or "error" in result:
        if "error" in result:
            raise EdgeclsError(f"IMX500 quantization: {result['error']}")
        raise EdgeclsError(f"the IMX500 quantizer (MCT) failed (exit {rc}): {_tail(log)}; log: {_keep_log(log, paths)}")
    quant_s = time.perf_counter() - t0
    n = len(ref.x)
    float_rebuilt, quant = np.load(job / "float_probs.npy"), np.load(job / "quant_probs.npy")
    rebuild_diff = float(np.abs(float_rebuilt[:n] - ref.p_float).max()) if n else 0.0
    if rebuild_diff > FLOAT_TOLERANCE:
        raise EdgeclsError(f"{source.name} rebuilt in the IMX500 toolchain gives other probabilities than on this host "
                           f"(max |diff| {rebuild_diff:.2e} > {FLOAT_TOLERANCE:g}): the architectures differ")
    report = compare(ref.p_float, quant[:n], ref.y, labels, gates_of(cfg))
    report.source, report.model, report.float_model = ref.source, str(paths.package.resolve()), str(source.resolve())
    report.runtime = f"MCT {result['versions'].get('model-compression-toolkit')} quantized Keras model (host)"
    report.quantization_path = "mct"
    report.extra["input_codes"] = f"pixel - {SENSOR_ZERO_CODE} (the sensor's signed 8-bit input)"
    card = _card(cfg, run, source, paths, tc, result, report, rebuild_diff, len(rep), quant_s)
    write_labels(tx.path(paths.labels.name), labels)
    os.replace(job / "quantized.keras", tx.path(paths.quantized.name))
    if not report.passed:
        return _reject(paths, tx, card, report)

    print("imx500: converting with imxconv-tf ...", file=sys.stderr, flush=True)
    t1 = time.perf_counter()
    conv = job / "converted"
    conv.mkdir()
    rc = run_converter(tc, tx.path(paths.quantized.name), conv, log)
    packer = conv / PACKER_ZIP
    if rc != 0 or not packer.is_file():
        raise EdgeclsError(f"the IMX500 converter (imxconv-tf) failed (exit {rc}): {_tail(log)}; log: {_keep_log(log, paths)}")
    card["seconds"]["convert"] = round(time.perf_counter() - t1, 1)
    memory = read_memory_report(conv)
    info = read_packer_zip(packer)
    _check_package(info, memory, size, len(labels), packer)
    os.replace(packer, tx.path(paths.package.name))
    sha = _sha256(tx.path(paths.package.name))
    card["memory"] = {k: v for k, v in memory.items() if k != "report"}
    card["dnn_params"] = info.as_dict()
    card["package"] = {"file": paths.package.name, "bytes": tx.path(paths.package.name).stat().st_size, "sha256": sha}
    publish = [paths.labels.name, paths.parity.name]
    atomic_write_json(tx.path(paths.parity.name), report.as_json())
    if len(golden_x):
        write_golden(tx.path(paths.golden.name), golden_x, quant[n:], golden_y, labels, package_sha256=sha,
                     input_codes=report.extra["input_codes"])
        publish.append(paths.golden.name)
    card["golden"] = paths.golden.name if len(golden_x) else None
    atomic_write_json(tx.path(paths.card.name), card)
    shutil.rmtree(job, ignore_errors=True)
    tx.path(paths.quantized.name).unlink()  # kept only beside a rejected gate, for inspection (~4x the package)
    tx.commit(publish + [paths.card.name, paths.package.name])
    _log_path(paths).unlink(missing_ok=True)  # a log left by an earlier failure no longer describes these files
    return card


def _sensor_weights(model: Any) -> list[np.ndarray]:
    """The model's weights in order, its temperature folded into the classifier (the sensor's network ends in a
    softmax Dense: logits / T = x (W / T) + b / T, exactly)."""
    from edgecls.train.calibration import temperature_of

    weights = model.get_weights()
    t = temperature_of(model)
    if t is not None:
        weights[-2], weights[-1] = weights[-2] / t, weights[-1] / t
    return weights


def _check_package(info: Any, memory: dict[str, Any], size: int, classes: int, packer: Path) -> None:
    """The converter's own description must match what the stage promised (input, output, fit)."""
    if len(info.inputs) != 1 or sorted(info.inputs[0].shape) != sorted([size, size, 3]):
        raise EdgeclsError(f"{packer.name}: the converted network's input is {[t.shape for t in info.inputs]}, "
                           f"expected {size}x{size}x3")
    inp = info.inputs[0]
    if not inp.signed or inp.bits != 8 or abs(inp.scale - SENSOR_INPUT_SCALE) > 1e-9:
        raise EdgeclsError(f"{packer.name}: the converted input tensor is {inp.bits}-bit signed={inp.signed} scale "
                           f"{inp.scale}; the parity gate assumed signed 8-bit at scale {SENSOR_INPUT_SCALE}")
    if len(info.outputs) != 1 or int(np.prod(info.outputs[0].shape)) != classes:
        raise EdgeclsError(f"{packer.name}: the converted network's outputs are {[t.shape for t in info.outputs]}, "
                           f"expected one of {classes} scores")
    if not memory["fits"]:
        raise EdgeclsError(f"the network does not fit the IMX500's memory ({memory['utilization_percent']}% of "
                           f"{memory['available_bytes']} bytes): use a smaller --alpha or --size")


def _reject(paths: Imx500Files, tx: ExportTransaction, card: dict[str, Any], report: Any) -> dict[str, Any]:
    from edgecls.optimize.transaction import rejected_name

    card["model"] = None
    card["quantized_model"] = rejected_name(paths.quantized.name)
    card["parity"]["report"] = rejected_name(paths.parity.name)
    report.model = ""
    atomic_write_json(tx.path(paths.parity.name), report.as_json())
    atomic_write_json(tx.path(paths.card.name), card)
    shutil.rmtree(tx.path("job"), ignore_errors=True)
    kept = tx.reject([paths.parity.name, paths.card.name, paths.quantized.name])
    raise Imx500ExportFailed(
        f"IMX500 {report.failure()}; nothing was converted or replaced; MCT's model and its report are kept as "
        f"{paths.card.with_name(kept[1])} (do not ship it)", card, report)


def _card(cfg: ExportConfig, run: RunDir, source: Path, paths: Imx500Files, tc: toolchain.Toolchain,
          result: dict[str, Any], report: Any, rebuild_diff: float, n_rep: int, quant_s: float) -> dict[str, Any]:
    from edgecls.core.keras import tf

    tcfg = run.train_config()
    return {
        "model": paths.package.name,
        "mode": "imx500",
        "target": "Sony IMX500 (Raspberry Pi AI Camera): on-sensor inference",
        "backbone": tcfg.backbone,
        "alpha": tcfg.alpha,
        "input": {"size": tcfg.size, "channels": "RGB", "graph_range": list(INPUT_RANGE),
                  "graph_norm": "pixel / 127.5 - 1 (the run's Rescaling layer; not in the packaged network)",
                  "sensor_codes": f"pixel - {SENSOR_ZERO_CODE}, signed 8-bit", "sensor_scale": SENSOR_INPUT_SCALE,
                  "sensor_norm": f"(pixel - {SENSOR_ZERO_CODE}) / 128: the input-norm the packager derives from the "
                                 "input tensor's quantization (dnnParams.xml); parity fed exactly these codes",
                  "resize": "the sensor's ISP scales its whole field of view to the input size (a squash, like training)"},
        "output": {"scores": "softmax probabilities, inside the network: do not apply another softmax",
                   "classes": len(run.read_labels())},
        "labels": run.read_labels(),
        "pruned": cfg.pruned,
        "float_model": source.name,
        "run": str(run.path.resolve()),
        "quantization": {"tool": "MCT post-training quantization", "tpc": result.get("tpc"),
                         "representative_samples": n_rep, "input_quantizer": result.get("input_quantizer")},
        "rebuild": {"max_abs_prob_diff": rebuild_diff, "tolerance": FLOAT_TOLERANCE,
                    "why": "tf_keras 2.21 .keras files do not load in TF 2.15: the architecture is rebuilt there"},
        "parity": card_parity(report, paths.parity.name) | {"quantized_is": "tflite_accuracy"},
        "parity_passed": report.passed,
        "memory": None,
        "dnn_params": None,
        "package": None,
        "device": {"package_with": "imx500-package -i <packerOut.zip> -o <dir> (apt imx500-tools, on the Pi)",
                   "run_with": "edgecls camera --source imx500 --model network.rpk"},
        "seconds": {"quantize": round(quant_s, 1)},
        "versions": {"edgecls": __version__, "tensorflow_host": tf.__version__, "toolchain": result.get("versions"),
                     "java": str(tc.java)},
        "toolchain": str(tc.venv),
        "export_config": asdict(cfg),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
