"""Does XLA (``jit_compile=True``) speed up edgecls's training steps on this CPU? Side by side, one process.

Times, with and without XLA, after warm-up (tracing and compilation excluded, reported apart):
the fine-tune step (MobileNetV2 1.0 @ 160 px, top 30 % unfrozen, batch 32, Adam) and the
feature-cache forward pass (frozen backbone, batch 32). Rounds alternate between the two
settings so a change of load on a shared machine hits both alike; the median is reported.

    .venv/bin/python tools/bench_train_xla.py [--rounds 5] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import DEFAULT_WEIGHTS, SIZE_PX, _cpu, _isa, _load  # noqa: E402

BATCH = 32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    import numpy as np

    from edgecls.core.keras import keras, tf
    from edgecls.train.backbones import BackboneChoice, build_classifier, get_backbone
    from edgecls.train.models import compile_for, set_trainable

    x = np.random.default_rng(0).integers(0, 256, (BATCH, SIZE_PX, SIZE_PX, 3)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[np.arange(BATCH) % 5]
    models, forwards, warm = {}, {}, {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        m = build_classifier(BackboneChoice("mobilenet_v2", size=SIZE_PX, alpha=1.0, weights=args.weights), 5)
        set_trainable(m, 0.3)
        compile_for(m, 1e-5, 0.1)
        m.compile(optimizer=m.optimizer, loss=m.loss, metrics=["accuracy"], jit_compile=jit)
        base = get_backbone(m)
        fwd = tf.function(lambda t, base=base: base(t, training=False), jit_compile=jit)
        t0 = time.perf_counter()
        m.train_on_batch(x, y)
        fwd(x)
        warm[jit] = round(time.perf_counter() - t0, 2)
        models[jit], forwards[jit] = m, fwd
    step = {False: [], True: []}
    forward = {False: [], True: []}
    for _ in range(args.rounds):
        for jit in (False, True):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                models[jit].train_on_batch(x, y)
            step[jit].append((time.perf_counter() - t0) / args.steps)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                np.asarray(forwards[jit](x))
            forward[jit].append((time.perf_counter() - t0) / args.steps)
    med = {k: {j: statistics.median(v[j]) for j in v} for k, v in (("fine_tune_step", step), ("forward", forward))}
    out = {
        "what": f"MobileNetV2 1.0 @ {SIZE_PX}px, batch {BATCH}: fine-tune train step (top 30% unfrozen) and frozen forward",
        "median_s": {k: {("xla" if j else "no_xla"): round(v, 4) for j, v in d.items()} for k, d in med.items()},
        "xla_speedup": {k: round(d[False] / d[True], 3) for k, d in med.items()},
        "first_call_s (trace+compile)": {("xla" if j else "no_xla"): v for j, v in warm.items()},
        "conditions": {"cpu": _cpu(), "isa": _isa(), "cores": os.cpu_count(), "tensorflow": tf.__version__,
                       "threads": "TensorFlow default (all cores)", "load": _load(),
                       "note": "busy shared machine"},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
