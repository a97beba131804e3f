"""Training benchmark: pretrained weights file vs random init on the same synthetic set, side by side.

Prints one JSON object (and writes it with --json): test accuracy, epochs, wall time per run,
plus the conditions (CPU, threads, versions, date). Needs the offline MobileNetV2 1.0 no-top
weights file (``--weights``); random init runs the very same recipe for the ratio.

    .venv/bin/python tools/bench_train.py --json /tmp/bench_train.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

DEFAULT_WEIGHTS = "/work/shared/pretrained/mobilenet_v2_1.0_160_no_top.h5"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--fine-tune-epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args()

    from edgecls import __version__
    from edgecls.core.config import TrainConfig
    from edgecls.core.keras import keras, tf
    from edgecls.data.synth import write_synthetic_dataset
    from edgecls.train.fit import train

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    write_synthetic_dataset(work / "data", classes=args.classes, per_class=args.per_class, size=128, seed=args.seed)
    results = {}
    for name, weights in (("pretrained_file", args.weights), ("random_init", "none")):
        cfg = TrainConfig(data=str(work / "data"), out=str(work / name), backbone="mobilenet_v2", alpha=1.0,
                          size=args.size, weights=weights, epochs=args.epochs,
                          fine_tune_epochs=args.fine_tune_epochs, batch_size=32, seed=args.seed, cache="memory")
        t0 = time.perf_counter()
        run = train(cfg, verbose=0)
        secs = time.perf_counter() - t0
        m = json.loads(run.metrics_json.read_text())
        rows = json.loads(run.history_json.read_text())["epochs"]
        results[name] = {"test_accuracy": m["test_accuracy"], "n_test": m["n_test"], "epochs_run": len(rows),
                         "best_epoch": m["best_epoch"], "wall_s": round(secs, 1)}
    out = {
        "what": f"mobilenet_v2 1.0 @ {args.size}px, synthetic {args.classes} classes x {args.per_class} images, "
                f"{args.epochs} head + {args.fine_tune_epochs} fine-tune epochs (early stopping on)",
        "results": results,
        "conditions": {"cpu": _cpu(), "cores": os.cpu_count(), "tensorflow": tf.__version__,
                       "tf_keras": keras.__version__, "edgecls": __version__,
                       "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")},
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
