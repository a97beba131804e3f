"""How far apart are the host's runtime and a device's, on a trained int8 model?

Trains a small real model (edgecls train on a synthetic set; the shared pretrained MobileNetV2
backbone when it is there, else random weights), converts it to full int8 with the project's
converter, writes a golden set from the held-out images with this process's runtime
(ai-edge-litert), then runs ``edgecls verify --json`` with the device Python given (e.g. the
tflite-runtime 2.14 venv the tests build) and summarises where predictions flipped relative
to the host's top-1 margin. Used to choose ``runtime.golden.CLEAR_MARGIN`` (docs/device.md).

Usage: python tools/measure_runtime_diff.py --device-python .venv-test/tflite-runtime-*/bin/python
       [--workdir /tmp/edgecls-rtdiff] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PRETRAINED = Path("/work/shared/pretrained/mobilenet_v2_1.0_160_no_top.h5")


def edgecls(python: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([python, "-c", "from edgecls.cli import main; main()", *args], env=env,
                          check=check, capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device-python", required=True)
    ap.add_argument("--workdir", default="/tmp/edgecls-rtdiff")
    ap.add_argument("--json", default=None)
    ap.add_argument("--per-class", type=int, default=60)
    args = ap.parse_args()
    work = Path(args.workdir)
    data, run = work / "data", work / "run"
    if not data.is_dir():
        edgecls(sys.executable, "data", "synth", str(data), "--classes", "3", "--per-class", str(args.per_class),
                "--size", "160")
    pretrained = PRETRAINED.is_file()
    if not (run / "model.keras").is_file():
        weights = ["--weights", str(PRETRAINED), "--size", "160"] if pretrained else \
            ["--weights", "none", "--size", "96", "--alpha", "0.35"]
        edgecls(sys.executable, "train", str(data), "--out", str(run), "--backbone", "mobilenet_v2", *weights,
                "--epochs", "3", "--fine-tune-epochs", "0", "--force")

    from edgecls import data as edata
    from edgecls.core.rundir import RunDir
    from edgecls.optimize.convert import convert_model
    from edgecls.runtime.golden import write_golden_set
    from edgecls.train.model_io import load_model

    r = RunDir.open(run)
    split, size, labels = r.read_split(), r.train_config().size, r.read_labels()
    model = load_model(r.model_path)
    rep, _ = edata.load_images(Path(split["root"]), [tuple(i) for i in split["train"]], size)
    # Runtime differences do not depend on whether an image was trained on: use every image.
    held = [tuple(i) for i in split["train"] + split["val"] + split.get("test", [])]
    x, y = edata.load_images(Path(split["root"]), held, size)
    out_dir = work / "export"
    out_dir.mkdir(exist_ok=True)
    tfl = out_dir / "model_int8.tflite"
    tfl.write_bytes(convert_model(model, "int8", representative=rep.astype(np.float32)))
    (out_dir / "labels.txt").write_text("".join(f"{n}\n" for n in labels))
    write_golden_set(tfl, x, labels=y, label_names=labels)

    results = {}
    for name, python in (("host", sys.executable), ("device", args.device_python)):
        rep_path = work / f"verify_{name}.json"
        proc = edgecls(python, "verify", str(tfl), "--json", str(rep_path), check=False)
        results[name] = json.loads(rep_path.read_text())
        results[name]["exit_code"] = proc.returncode
    from edgecls.runtime.golden import read_golden_set

    host = read_golden_set(out_dir / "model_int8.golden.npz")["probabilities"]
    srt = np.sort(host, 1)
    margins = srt[:, -1] - srt[:, -2]
    dev = results["device"]
    summary = {
        "model": f"mobilenet_v2 {'pretrained 160px' if pretrained else 'random 96px alpha 0.35'}, 3 synthetic classes",
        "n_images": int(len(host)),
        "host_runtime": dev["host_runtime"],
        "device_runtime": dev["device_runtime"],
        "max_abs_raw_diff": dev["max_abs_raw_diff"],
        "max_abs_prob_diff": dev["max_abs_prob_diff"],
        "max_margin_shift": dev["max_margin_shift"],
        "top1_agreement": dev["top1_agreement"],
        "flipped": dev["flipped"],
        "host_margin_of_flipped": dev["host_margin_of_flipped"],
        "share_of_images_with_host_margin_below": {str(m): float(np.mean(margins < m)) for m in (0.02, 0.05, 0.1, 0.2)},
        "host_vs_host_bit_identical": results["host"]["bit_identical"],
        "device_exit_code": dev["exit_code"],
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
