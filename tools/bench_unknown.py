#!/usr/bin/env python
"""Unknown-photo benchmark: how many photos of things a run never saw does its unknown rule let through?

Per CIFAR-10 seed (``tools/photo_sets.py cifar10-photos``: 5 classes drawn with the seed are the run's
classes, 50/10/10 per class and 200 held-out photos per class), four runs of ``edgecls train`` (shared
pretrained MobileNetV2 1.0 @ 160) side by side on the same photos:

- ``plain``: ``--no-calibrate``, no negatives: a plain max-softmax threshold;
- ``calibrated``: the default (temperature scaling), no negatives;
- ``negatives``: the default with ``--negatives`` (the negatives trained as the class ``unknown``; a photo whose
  top-1 is that class is unknown too);


Negatives for training: photos of the other 5 CIFAR-10 classes and of a sharp set (``--negatives-set``).
Unknowns for testing, never trained on: other photos of those 5 CIFAR-10 classes (*near*: same source,
other classes) and photos of another sharp set (*far*: ``--far-set``). Each run's own threshold (chosen by
training to keep ``--keep`` of the correct validation answers) is applied to the float model's held-out
probabilities; also the int8 file's calibration error. Figures: in-distribution accuracy, share of correct
answers kept, accuracy on the accepted photos, share of near and far unknowns accepted, AUROC and FPR at 95 %
TPR of the top-1 score (in-distribution vs unknown), ECE before/after (test split) and of the int8 file.

    .venv/bin/python tools/bench_unknown.py --seeds 0,1 --work /tmp/bu --out /tmp/bu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
PRETRAINED = REPO / ".." / "shared" / "pretrained" / "mobilenet_v2_1.0_160_no_top.h5"
VARIANTS = ("plain", "calibrated", "negatives")


def _copy(files: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, dest / f"{f.parent.name}_{f.name}")


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def prepare(seed: int, work: Path, cache: Path, negatives_set: str, far_set: str, per_unknown: int) -> dict[str, Path]:
    """The in-distribution set, the training negatives, and the near and far unknowns, disjoint."""
    from photo_sets import draw_photo_set

    where = work / f"cifar10-{seed}"
    paths = {k: where / k for k in ("data", "holdout", "negatives", "near", "far")}
    if paths["far"].is_dir():
        return paths
    made = draw_photo_set(cache / "cifar10", paths["data"], paths["holdout"], seed=seed, holdout_per_class=200)
    others = sorted(set(p.name for p in (cache / "cifar10").iterdir() if p.is_dir()) - set(made["classes"]))
    rng = random.Random(seed)
    pool = {c: _photos(cache / "cifar10" / c) for c in others}
    for c in others:
        rng.shuffle(pool[c])
        _copy(pool[c][:60], paths["negatives"])  # 5 classes x 60: the run may train on these
        _copy(pool[c][60:60 + per_unknown // len(others)], paths["near"])  # never trained on
    sharp = _photos(cache / negatives_set)
    rng.shuffle(sharp)
    _copy(sharp[:200], paths["negatives"])
    far = _photos(cache / far_set)
    rng.shuffle(far)
    _copy(far[:per_unknown], paths["far"])
    return paths


def train_variant(variant: str, paths: dict[str, Path], run: Path, seed: int, keep: float) -> None:
    from edgecls.core.config import TrainConfig
    from edgecls.train.fit import train

    if (run / "model.keras").is_file():
        return
    data = paths["data"]
    extra = {"negatives": str(paths["negatives"])} if variant == "negatives" else {}
    train(TrainConfig(data=str(data), out=str(run), size=160, weights=str(PRETRAINED), seed=seed, keep=keep,
                      calibrate=variant != "plain", **extra), verbose=0)


def _images(folder: Path):
    from edgecls import data

    x, _ = data.load_images(Path("/"), [(str(f), 0) for f in _photos(folder)], 160)
    return x.astype("float32")


def _scores(model, x):
    import numpy as np

    return np.asarray(model.predict(x, batch_size=64, verbose=0), np.float32)


def _logits(model, folder_or_x):
    """The classifier's logits (before temperature and softmax): features times the head's kernel plus bias."""
    import numpy as np

    from edgecls.core.keras import keras

    head = model.get_layer("predictions")
    features = keras.Model(model.input, head.input).predict(folder_or_x, batch_size=64, verbose=0)
    kernel, bias = head.get_weights()
    return np.asarray(features, np.float64) @ kernel + bias


def _energy(z):
    """Negative free energy logsumexp(z) (Liu et al. 2020): higher for in-distribution inputs."""
    import numpy as np

    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def _auroc(pos, neg) -> float:
    """P(score of an in-distribution photo > score of an unknown one), ties counted half."""
    import numpy as np

    s = np.concatenate([pos, neg])
    ranks = s.argsort().argsort().astype(np.float64) + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _fpr_at(pos, neg, tpr: float = 0.95) -> float:
    import numpy as np

    t = np.quantile(pos, 1 - tpr)
    return float(np.mean(neg >= t))


def measure(variant: str, run: Path, paths: dict[str, Path]) -> dict:
    import numpy as np

    from edgecls.core.io import read_json
    from edgecls.core.rundir import RunDir
    from edgecls.train.calibration import ece
    from edgecls.train.model_io import load_model

    r = RunDir.open(run)
    labels = r.read_labels()
    model = load_model(r.model_path)
    m = read_json(r.metrics_json)
    threshold = m["unknown"]["threshold"]
    classes = sorted(p.name for p in (paths["holdout"] / "test").iterdir())
    x_items = [(str(f), labels.index(f.parent.name)) for f in _photos(paths["holdout"] / "test")]
    from edgecls import data

    x, y = data.load_images(Path("/"), x_items, 160)
    p_in = np.asarray(model.predict(x.astype(np.float32), batch_size=64, verbose=0), np.float32)
    x_near, x_far = _images(paths["near"]), _images(paths["far"])
    near, far = _scores(model, x_near), _scores(model, x_far)
    none = m["unknown"].get("class_index")  # the unknown class of a run trained with negatives

    def answered(p):
        ok = p.max(axis=1) >= threshold
        return ok & (p.argmax(axis=1) != none) if none is not None else ok

    def known_score(p):  # the score the rule thresholds: the top-1 among the real classes
        q = np.delete(p, none, axis=1) if none is not None else p
        return q.max(axis=1) * (p.argmax(axis=1) != none) if none is not None else q.max(axis=1)

    acc_in = answered(p_in)
    right = p_in.argmax(axis=1) == y
    s_in, s_near, s_far = known_score(p_in), known_score(near), known_score(far)
    return {"variant": variant, "classes": classes, "threshold": threshold, "n_in": int(len(y)),
            "accuracy": round(float(right.mean()), 4), "correct_kept": round(float(acc_in[right].mean()), 4),
            "in_answered": round(float(acc_in.mean()), 4),
            "accuracy_accepted": round(float(right[acc_in].mean()), 4) if acc_in.any() else None,
            "near_accepted": round(float(answered(near).mean()), 4), "far_accepted": round(float(answered(far).mean()), 4),
            "auroc_near": round(_auroc(s_in, s_near), 4), "auroc_far": round(_auroc(s_in, s_far), 4),
            "fpr95_near": round(_fpr_at(s_in, s_near), 4), "fpr95_far": round(_fpr_at(s_in, s_far), 4),
            "ece_float_holdout": round(ece(p_in if none is None else np.delete(p_in, none, axis=1), y), 4),
            **(_energy_figures(model, x, x_near, x_far) if none is None else {}),
            "calibration": {k: (m.get("calibration") or {}).get(k) for k in ("temperature", "ece_before", "ece_after")}}


def _energy_figures(model, x, x_near, x_far) -> dict:
    """The energy score's separation of in-distribution from unknown photos, beside max-probability's."""
    e_in, e_near, e_far = (_energy(_logits(model, v.astype("float32"))) for v in (x, x_near, x_far))
    return {"auroc_near_energy": round(_auroc(e_in, e_near), 4), "auroc_far_energy": round(_auroc(e_in, e_far), 4),
            "fpr95_near_energy": round(_fpr_at(e_in, e_near), 4), "fpr95_far_energy": round(_fpr_at(e_in, e_far), 4)}


def int8_ece(run: Path, paths: dict[str, Path]) -> float:
    """ECE of the exported int8 file on the held-out photos (the file the device runs)."""

    from edgecls import data
    from edgecls.core.config import ExportConfig
    from edgecls.core.rundir import RunDir
    from edgecls.optimize.export import export_run
    from edgecls.optimize.parity import tflite_scores
    from edgecls.train.calibration import ece

    labels = RunDir.open(run).read_labels()
    model = run / "export" / "model_int8.tflite"
    if not model.is_file():
        try:
            export_run(ExportConfig(run=str(run), force=True, parity_data=str(paths["holdout"] / "test")))
        except Exception:  # noqa: BLE001 - a rejected file is still measured
            model = run / "export" / "model_int8.REJECTED.tflite"
    items = [(str(f), labels.index(f.parent.name)) for f in _photos(paths["holdout"] / "test")]
    x, y = data.load_images(Path("/"), items, 160)
    return round(ece(tflite_scores(model, x), y), 4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_unknown"))
    ap.add_argument("--cache", type=Path, default=REPO.parent / "photo-cache")
    ap.add_argument("--negatives-set", default="trashnet")
    ap.add_argument("--far-set", default="flowers")
    ap.add_argument("--per-unknown", type=int, default=500)
    ap.add_argument("--keep", type=float, default=0.95)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        paths = prepare(seed, args.work, args.cache, args.negatives_set, args.far_set, args.per_unknown)
        for variant in VARIANTS:
            run = args.work / f"cifar10-{seed}" / f"run-{variant}"
            train_variant(variant, paths, run, seed, args.keep)
            row = measure(variant, run, paths)
            if variant in ("calibrated", "negatives"):  # the files a user would ship
                row["ece_int8_holdout"] = int8_ece(run, paths)
            row["seed"] = seed
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"date": dt.date.today().isoformat(), "keep": args.keep,
                                        "negatives_set": args.negatives_set, "far_set": args.far_set,
                                        "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
