"""Training defaults by measurement: accuracy and seconds of ``edgecls train`` variants, side by side.

One realistic synthetic set (``tools/train_bench_data.py``, 250 training images with lighting
changes and 6 % wrong training labels) and one larger held-out set drawn with another seed
(clean labels, 100 images per class) that no run sees while training: each variant's saved
``model.keras`` is scored on it, which resolves accuracy far finer than the 50-image test split.
Every variant runs ``train()`` in this process, in turn, with the shared pretrained MobileNetV2
1.0 at 160 px; ``train_s`` is the wall time of ``train()`` (scan to plots; the command adds
interpreter start and imports, the same for every variant).

    .venv/bin/python tools/bench_train_defaults.py --json /tmp/defaults.json [--only NAME,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import DEFAULT_WEIGHTS, SIZE_PX, _load, conditions, emit  # noqa: E402

HOLDOUT_PER_CLASS = 100

# name -> TrainConfig changes from the defaults of this checkout.
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "views_2": {"head_cache_views": 2},
    "head_cache_none": {"head_cache": "none"},
    "ft3_lr1e-5_frac0.3": {"fine_tune_epochs": 3, "fine_tune_learning_rate": 1e-5},
    "ft3_lr1e-4_frac0.3": {"fine_tune_epochs": 3, "fine_tune_learning_rate": 1e-4},
    "ft3_lr1e-4_frac0.1": {"fine_tune_epochs": 3, "fine_tune_learning_rate": 1e-4, "fine_tune_fraction": 0.1},
    "head20_patience5": {"epochs": 20, "patience": 5},
    "head30_patience5": {"epochs": 30, "patience": 5},
    "head30_patience5_ft3_lr1e-4": {"epochs": 30, "patience": 5, "fine_tune_epochs": 3,
                                    "fine_tune_learning_rate": 1e-4},
    "head_lr3e-3": {"learning_rate": 3e-3},
    "label_smoothing_0": {"label_smoothing": 0.0},
    "dropout_0_label_smoothing_0": {"dropout": 0.0, "label_smoothing": 0.0},
    "views_4_head20_patience5": {"head_cache_views": 4, "epochs": 20, "patience": 5},
    "head20_patience20": {"epochs": 20, "patience": 20},
    "head50_patience10": {"epochs": 50, "patience": 10},
    "views_4_head50_patience10": {"head_cache_views": 4, "epochs": 50, "patience": 10},
    "views_4_head30_patience5_lr3e-3": {"head_cache_views": 4, "epochs": 30, "patience": 5,
                                        "learning_rate": 3e-3},
    "views_3_head50_patience10_lr3e-3": {"head_cache_views": 3, "epochs": 50, "patience": 10,
                                         "learning_rate": 3e-3},
    "views_8_head20_patience5": {"head_cache_views": 8, "epochs": 20, "patience": 5},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args()
    from train_bench_data import make_realistic_set

    from edgecls.core.config import TrainConfig
    from edgecls.core.keras import tf
    from edgecls.train.fit import train
    from edgecls.train.model_io import load_model

    work = Path(tempfile.mkdtemp(prefix="bench_defaults_"))
    made = make_realistic_set(work / "data", seed=args.seed)
    make_realistic_set(work / "holdout_raw", seed=args.seed + 1000, per_class=HOLDOUT_PER_CLASS, label_noise=0.0)
    from edgecls.core.keras import keras

    images, labels = [], []
    for split in ("train", "val", "test"):  # the whole second set is held out
        ds = keras.utils.image_dataset_from_directory(str(work / "holdout_raw" / split), image_size=(SIZE_PX, SIZE_PX),
                                                      batch_size=64, shuffle=False, class_names=sorted(made["classes"]))
        for x, y in ds:
            images.append(x.numpy())
            labels.append(y.numpy())
    import numpy as np

    # Note: tf_keras resizes bilinearly without antialias, the project antialiases; both sets are
    # rendered at 192 px, so the difference is small and the same for every variant.
    images, labels = np.concatenate(images), np.concatenate(labels)
    names = [n for n in (args.only.split(",") if args.only else VARIANTS) if n]
    rows = []
    for name in names:
        cfg = dataclasses.replace(TrainConfig(), data=str(work / "data"), out=str(work / name), size=SIZE_PX,
                                  weights=args.weights, seed=args.seed, **VARIANTS[name])
        load0 = _load()
        t0 = time.perf_counter()
        run = train(cfg, verbose=0)
        secs = time.perf_counter() - t0
        m = json.loads(run.metrics_json.read_text())
        hist = json.loads(run.history_json.read_text())["epochs"]
        model = load_model(run.model_path)
        acc = float((model.predict(images, batch_size=64, verbose=0).argmax(1) == labels).mean())
        row = {"variant": name, "changes": VARIANTS[name], "train_s": round(secs, 1),
               "holdout_accuracy": round(acc, 4), "n_holdout": int(len(labels)), "test_accuracy": m["test_accuracy"],
               "epochs_run": {ph: sum(1 for r in hist if r["phase"] == ph) for ph in ("head", "fine_tune")},
               "stages_s": m["timings"]["stages_s"], "load": [load0, _load()]}
        row["holdout_acc_per_min"] = round(acc / (secs / 60), 4)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    emit({"what": f"edgecls train variants, MobileNetV2 1.0 @ {SIZE_PX}px shared pretrained weights, realistic set "
                  f"{made['counts']} ({made['noisy_labels']} noisy training labels), held-out "
                  f"{len(labels)} images of another seed",
          "rows": rows, "conditions": conditions(tf.__version__)}, args.json)


if __name__ == "__main__":
    main()
