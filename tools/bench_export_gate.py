"""Export's parity gate with and without reloading the float model, side by side in one process.

    .venv/bin/python tools/bench_export_gate.py [--repeats 2] [--json out.json]

Trains the test suite's tiny run (tests/conftest.py ``tiny_run``: MobileNetV2 alpha 0.35,
64 px, random init, 3 classes x 30 images), then exports it to int8 (lenient gates, as the
``exported_run`` fixture does) alternately:

* ``reload``: the gate loads the float model from disk again (export before this change),
* ``reuse``: the gate compares with the model export already loaded (now).

Runs alternate (reload/reuse, then reuse/reload) ``--repeats`` times; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from edgecls.core.config import ExportConfig, TrainConfig
    from edgecls.data.synth import write_synthetic_dataset
    from edgecls.optimize import export
    from edgecls.train.fit import train

    root = Path(tempfile.mkdtemp(prefix="edgecls-bench-gate-"))
    write_synthetic_dataset(root / "data", classes=3, per_class=30, size=64, seed=0)
    run = train(TrainConfig(data=str(root / "data"), out=str(root / "run"), backbone="mobilenet_v2", alpha=0.35,
                            size=64, weights="none", epochs=4, fine_tune_epochs=1, batch_size=16,
                            learning_rate=3e-2, augment=False, cache="memory", seed=0), verbose=0).path

    real_gate = export._Exporter.gate

    def reload_gate(self, cand, quant_error, size):
        model, self.model = self.model, None  # run_parity loads the float model itself, as before
        try:
            return real_gate(self, cand, quant_error, size)
        finally:
            self.model = model

    times: dict[str, list[float]] = {"reload": [], "reuse": []}
    order = []
    for i in range(args.repeats):
        order += ["reload", "reuse"] if i % 2 == 0 else ["reuse", "reload"]
    for n, mode in enumerate(order):
        export._Exporter.gate = reload_gate if mode == "reload" else real_gate
        cfg = ExportConfig(run=str(run), mode="int8", out=str(root / f"export-{n}"), max_drop=100.0,
                           min_agreement=0.0)
        start = time.perf_counter()
        export.export_run(cfg)
        times[mode].append(time.perf_counter() - start)
        print(f"{mode}: {times[mode][-1]:.1f} s", flush=True)
    export._Exporter.gate = real_gate
    result = {m: round(statistics.median(v), 2) for m, v in times.items()}
    result["reuse_over_reload"] = round(result["reuse"] / result["reload"], 3)
    result["runs"] = times
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
