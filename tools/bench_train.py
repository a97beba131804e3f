"""Training benchmark: the seed recipe vs the whole ``edgecls train`` command, side by side.

On one synthetic set made to behave like a small photo collection (``tools/train_bench_data.py``:
5 classes, 250 training images, lighting changes, clutter, 6 % wrong training labels), each
repeat runs, in this process tree and in turn:

- **seed**: the common Keras transfer-learning recipe, written faithfully: ``image_dataset_from_directory``
  (batch 32, shuffle, seed), pixels / 255, a map with RandomFlip/RandomRotation(0.1)/RandomZoom(0.1),
  prefetch; Keras MobileNetV2 ``include_top=False`` with the shared pretrained weights, frozen;
  GlobalAveragePooling + Dense softmax; Adam, categorical cross-entropy, 10 epochs. Only
  ``model.fit`` is timed (as the issue does), in a child process of this one.
- **edgecls**: ``edgecls train DATA --out RUN --size 160 --weights FILE`` with every other option
  at its default, as a child process; the wall time of the *whole command* (interpreter start,
  imports, scan, both phases, evaluation, plots).

Both are scored on the same test split (50 images) and on a larger held-out set of another seed
(``--holdout-per-class`` x 5 images, clean labels; scored in child processes, tf_keras' resize for
both). Prints one JSON object (``--json`` writes it): per repeat the seconds and test accuracy of each,
the ratio edgecls wall / seed fit (goal <= 1.0), edgecls's own stage breakdown (metrics.json
"timings"), and the conditions.

With ``--seeds 0,1,2,...`` one run covers several sets: for each seed S a new set is drawn and both
sides train with seed S (``edgecls train --seed S``), so the comparison averages over data *and*
training luck instead of fixing one draw of each. The ``summary`` then gives each side's mean
held-out accuracy, the mean of the paired differences (edgecls - recipe, same set, same held-out
images) with its 95 % confidence interval over the sets, and the ratios.

``--recipe-minus1to1`` also runs the recipe with its backbone's own input convention ([-1, 1], as
MobileNetV2's ``preprocess_input`` and the shared backbone's source use) instead of pixels / 255, on
the same set with the same seed, and adds the paired difference against it to the ``summary``: it
separates what the /255 input does on a set from what the training does.

``--photos PHOTOS`` draws each set from real photos sorted by class (``PHOTOS/<class>/*.jpg``;
``tools/photo_sets.py``) instead of the synthetic generator: per seed 5 classes, 50 training / 10
val / 10 test photos per class and ``--holdout-per-class`` more held out, none in two places.
``--set NAME`` does the same from one of the named sharp sets (trashnet, clothing, grocery, flowers,
scenes; ``tools/photo_sets.py`` builds them into ``--photo-cache``, ``/work/photo-cache`` by default).
Its photos are checked against the set's SET.json before anything runs, and the output records the
set's source, commit, licence and digest (``photo_set``) and each seed's ``draw_digest``: a seed
draws the same classes and the same photos every time, so a set's figures can be repeated and
compared across runs. For the biggest held-out set every class of every set allows, use
``--holdout-per-class 150`` (grocery's smallest class has 222 photos; the others allow more).

Intervals (``tools/holdout_stats.py``; the formulas of ``edgecls.optimize.gate``): each side's
held-out accuracy comes with its Wilson 95 % interval (``holdout_95ci``), and each repeat with the
paired difference edgecls - recipe on the same photos and Newcombe's 95 % interval
(``holdout_diff_vs_seed``, ``holdout_diff_vs_seed_minus1to1``; points). The ``summary`` adds each
side's held-out accuracy pooled over the repeats with its Wilson interval (``*_holdout_pooled``)
beside the t interval of the mean paired difference over the sets. A set's table, one row per seed:
accuracy [Wilson interval] per side, the paired difference [Newcombe interval]; then the pooled
accuracies and the t interval.

    .venv/bin/python tools/bench_train.py --seeds 0,1,2,3,4,5 --repeats 1 --json /tmp/bench_train.json
    .venv/bin/python tools/bench_train.py --set flowers --seeds 0,1,2,3,4,5 --holdout-per-class 100 \
        --recipe-minus1to1 --json /tmp/bench_train_flowers.json

``--recipe-epochs`` shortens the recipe only for a smoke check of the script itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from holdout_stats import paired_interval, pooled, side_interval  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Beside the checkout, like the demo's; --weights or EDGECLS_BENCH_WEIGHTS for another place.
DEFAULT_WEIGHTS = os.environ.get("EDGECLS_BENCH_WEIGHTS",
                                 str(REPO / ".." / "shared" / "pretrained" / "mobilenet_v2_1.0_160_no_top.h5"))
SIZE_PX = 160  # the shared backbone's size
SEED_EPOCHS = 10
SEED_BATCH = 32
HOLDOUT_PER_CLASS = 100
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # two-sided t, by degrees of freedom

# The seed recipe, run as its own process so its TensorFlow state never touches edgecls's run.
SEED_SCRIPT = r'''
import json, sys, time
import os
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf
import tf_keras as keras

data, weights, size, epochs, batch, seed, holdout, inputs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], sys.argv[8]
# "div255": the recipe as quoted (pixels / 255); "minus1to1": its backbone's own convention (MobileNetV2's preprocess_input).
scale = (lambda x: x / 255.0) if inputs == "div255" else (lambda x: x / 127.5 - 1.0)
keras.utils.set_random_seed(seed)
train_ds = keras.utils.image_dataset_from_directory(
    f"{data}/train", image_size=(size, size), batch_size=batch, shuffle=True, seed=seed, label_mode="categorical")
test_ds = keras.utils.image_dataset_from_directory(
    f"{data}/test", image_size=(size, size), batch_size=batch, shuffle=False, label_mode="categorical")
n_classes = len(train_ds.class_names)
train_ds_names = train_ds.class_names
augment = keras.Sequential([
    keras.layers.RandomFlip("horizontal"),
    keras.layers.RandomRotation(0.1),
    keras.layers.RandomZoom(0.1),
])
train_ds = train_ds.map(lambda x, y: (scale(x), y)).map(lambda x, y: (augment(x, training=True), y))
train_ds = train_ds.prefetch(tf.data.AUTOTUNE)
test_ds = test_ds.map(lambda x, y: (scale(x), y)).prefetch(tf.data.AUTOTUNE)
base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False, weights=None)
base.load_weights(weights)
base.trainable = False
model = keras.Sequential([base, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(n_classes, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy", metrics=["accuracy"])
t0 = time.perf_counter()
model.fit(train_ds, epochs=epochs, verbose=0)
fit_s = time.perf_counter() - t0
loss, acc = model.evaluate(test_ds, verbose=0)
correct = ""  # one 0/1 per held-out image, in the loader's (sorted) order, for paired intervals
for split in ("train", "val", "test"):
    if not os.path.isdir(f"{holdout}/{split}"):  # a photo set's held-out images are all in test/
        continue
    ds = keras.utils.image_dataset_from_directory(f"{holdout}/{split}", image_size=(size, size), batch_size=64,
                                                  shuffle=False, label_mode="int", class_names=train_ds_names)
    for x, y in ds:
        correct += "".join("1" if ok else "0" for ok in model(scale(x), training=False).numpy().argmax(1) == y.numpy())
hits, n = correct.count("1"), len(correct)
print("RESULT " + json.dumps({"fit_s": fit_s, "test_accuracy": acc, "holdout_accuracy": hits / n, "n_holdout": n, "holdout_correct": correct, "n_test": sum(int(y.shape[0]) for _, y in test_ds),
                              "tensorflow": tf.__version__, "tf_keras": keras.__version__}))
'''


# Scores a run's model.keras (raw 0..255 input) on the held-out set, in a child process.
SCORE_SCRIPT = r'''
import json, os, sys
from edgecls.core.keras import keras
from edgecls.train.model_io import load_model
model, holdout, size = load_model(sys.argv[1]), sys.argv[2], int(sys.argv[3])
names = open(sys.argv[4]).read().split()
correct = ""
for split in ("train", "val", "test"):
    if not os.path.isdir(f"{holdout}/{split}"):
        continue
    ds = keras.utils.image_dataset_from_directory(f"{holdout}/{split}", image_size=(size, size), batch_size=64,
                                                  shuffle=False, label_mode="int", class_names=names)
    for x, y in ds:
        correct += "".join("1" if ok else "0" for ok in model(x, training=False).numpy().argmax(1) == y.numpy())
hits, n = correct.count("1"), len(correct)
print("RESULT " + json.dumps({"holdout_accuracy": hits / n, "n_holdout": n, "holdout_correct": correct}))
'''


def _result(proc: subprocess.CompletedProcess, what: str) -> dict:
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _isa() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags) or "no AVX2"


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def conditions(tensorflow: str | None) -> dict:
    """The machine and software a figure was measured on (load averages are recorded per run)."""
    return {"cpu": _cpu(), "isa": _isa(), "cores": os.cpu_count(), "tensorflow": tensorflow,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "note": "1-minute load averages before/after each run: above ~2 on 2 cores the machine was busy"}


def emit(out: dict, json_path: str | None) -> None:
    """Print the result as JSON (and write it to ``json_path``)."""
    text = json.dumps(out, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")


SIDES = ("edgecls", "seed", "seed_minus1to1")


def add_intervals(row: dict) -> None:
    """Give each side of one repeat its held-out Wilson 95 % interval, and the repeat its paired differences
    (edgecls - each recipe, same photos) with Newcombe's 95 % interval, in points."""
    for side in SIDES:
        if side in row and "holdout_correct" in row[side]:
            row[side]["holdout_95ci"] = side_interval(row[side]["holdout_correct"])["wilson95"]
    for side in SIDES[1:]:
        if side in row and "holdout_correct" in row[side]:
            row[f"holdout_diff_vs_{side}"] = paired_interval(row["edgecls"]["holdout_correct"], row[side]["holdout_correct"])


def pooled_intervals(repeats: list[dict]) -> dict:
    """Each side's held-out hits over every repeat, as one accuracy with its Wilson 95 % interval."""
    out = {}
    for side in SIDES:
        corrects = [r[side]["holdout_correct"] for r in repeats if side in r and "holdout_correct" in r[side]]
        if corrects:
            out[f"{side}_holdout_pooled"] = pooled(corrects)
    return out


def summarize(repeats: list[dict]) -> dict:
    """Means over every repeat, and the paired held-out difference (edgecls - recipe) with a 95 % t interval
    over the repeats; the same against the recipe with [-1, 1] input when it ran (``--recipe-minus1to1``);
    and each side's held-out accuracy pooled over the repeats with its Wilson 95 % interval."""
    pairs = [r for r in repeats if "seed" in r]
    if not pairs:
        return pooled_intervals(repeats)
    diffs = [r["edgecls"]["holdout_accuracy"] - r["seed"]["holdout_accuracy"] for r in pairs]
    ratios = [r["ratio_edgecls_wall_to_seed_fit"] for r in pairs]
    n = len(diffs)
    out = {"pairs": n, "ratio_mean": round(sum(ratios) / n, 3), "ratio_max": max(ratios),
           "seed_holdout_mean": round(sum(r["seed"]["holdout_accuracy"] for r in pairs) / n, 4),
           "edgecls_holdout_mean": round(sum(r["edgecls"]["holdout_accuracy"] for r in pairs) / n, 4),
           "holdout_diff_mean_points": round(100 * sum(diffs) / n, 2)}
    if n > 1:
        out["holdout_diff_95ci_points"] = _t_interval(diffs)
    scaled = [r for r in pairs if "seed_minus1to1" in r]
    if scaled:
        d2 = [r["edgecls"]["holdout_accuracy"] - r["seed_minus1to1"]["holdout_accuracy"] for r in scaled]
        out["seed_minus1to1_holdout_mean"] = round(sum(r["seed_minus1to1"]["holdout_accuracy"] for r in scaled) / len(scaled), 4)
        out["holdout_diff_vs_minus1to1_mean_points"] = round(100 * sum(d2) / len(d2), 2)
        if len(d2) > 1:
            out["holdout_diff_vs_minus1to1_95ci_points"] = _t_interval(d2)
    out.update(pooled_intervals(repeats))
    return out


def _t_interval(diffs: list[float]) -> list[float]:
    """95 % t interval of the mean of ``diffs`` (two or more), in points."""
    n = len(diffs)
    mean = sum(diffs) / n
    sd = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5
    half = T95.get(n - 1, 2.0) * sd / n ** 0.5
    return [round(100 * (mean - half), 2), round(100 * (mean + half), 2)]


def _env() -> dict[str, str]:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    return env


def run_seed(data: Path, weights: str, holdout: Path, *, seed: int, inputs: str = "div255",
             epochs: int = SEED_EPOCHS) -> dict:
    proc = subprocess.run([sys.executable, "-c", SEED_SCRIPT, str(data), weights, str(SIZE_PX), str(epochs),
                           str(SEED_BATCH), str(seed), str(holdout), inputs], capture_output=True, text=True, env=_env())
    return _result(proc, "seed recipe")


def run_edgecls(data: Path, out: Path, weights: str, holdout: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "edgecls.cli", "train", str(data), "--out", str(out), "--size", str(SIZE_PX),
           "--weights", weights, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edgecls train failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    m = json.loads((out / "metrics.json").read_text())
    rows = json.loads((out / "history.json").read_text())["epochs"]
    size = json.loads((out / "config.json").read_text())["train"]["size"]  # an `--size` in `extra` wins over SIZE_PX
    score = _result(subprocess.run([sys.executable, "-c", SCORE_SCRIPT, str(out / "model.keras"), str(holdout),
                                    str(size), str(out / "labels.txt")], capture_output=True, text=True, env=_env()),
                    "scoring the edgecls model")
    return {"wall_s": round(wall, 1), "test_accuracy": m["test_accuracy"], "n_test": m["n_test"], **score,
            "epochs_run": {p: sum(1 for r in rows if r["phase"] == p) for p in ("head", "fine_tune")},
            "best_epoch": m["best_epoch"], "timings": m.get("timings"), "head_cache": m.get("head_cache"),
            "cache_line": next((x for x in proc.stdout.splitlines() if x.startswith("Head cache")), None)}


def resolve_set(name: str, cache: Path) -> tuple[Path, dict]:
    """The folder of the built set ``name`` and what it is (source, commit, licence, digest), after checking
    its photos against its SET.json; SystemExit saying how to build it when it is not there."""
    from photo_build import read_manifest, verify

    folder = cache / name
    if read_manifest(folder) is None:
        raise SystemExit(f"photo set {name!r} is not built in {folder}; build it with "
                         f"'python tools/photo_sets.py {name} SNAPSHOT {folder}' (tools/photo_sets.py says where "
                         "each set's snapshot comes from), or pass --photo-cache")
    m = verify(folder)
    return folder, {"set": name, "folder": str(folder), "digest": m["digest"], "repo": m["repo"],
                    "commit": m["commit"], "licence": m["licence"], "classes": m["classes"]}


def _brief(row: dict) -> dict:
    """A repeat without its per-photo 0/1 strings, for the progress line."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "holdout_correct"} if isinstance(v, dict) else v)
            for k, v in row.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, help="the shared MobileNetV2 1.0 no-top .h5")
    p.add_argument("--repeats", type=int, default=None, help="runs per set (timing repeats; default 2, or 1 with --seeds)")
    p.add_argument("--seed", type=int, default=0, help="data and training seed")
    p.add_argument("--seeds", help="several data-and-training seeds in one run, e.g. 0,1,2,3,4,5 (overrides --seed)")
    p.add_argument("--holdout-per-class", type=int, default=HOLDOUT_PER_CLASS, help="held-out images per class")
    p.add_argument("--edgecls-args", default="", help="extra edgecls train options, e.g. '--head-cache none'")
    p.add_argument("--skip-seed", action="store_true", help="edgecls only (e.g. to profile it)")
    p.add_argument("--recipe-epochs", type=int, default=SEED_EPOCHS,
                   help=f"the recipe's epochs (default {SEED_EPOCHS}, as quoted; fewer only for a smoke check)")
    p.add_argument("--recipe-minus1to1", action="store_true",
                   help="also run the recipe with its backbone's input convention ([-1, 1], MobileNetV2's "
                        "preprocess_input) instead of pixels / 255, on the same set, scored beside the other two")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from photo_sets import DEFAULT_CACHE, draw_photo_set
    from photo_sources import SOURCES
    from train_bench_data import make_realistic_set

    source = p.add_mutually_exclusive_group()
    source.add_argument("--photos", type=Path,
                        help="draw each set from real photos, PHOTOS/<class>/*.jpg (tools/photo_sets.py), instead of "
                             "the synthetic set: 5 classes x 50 train / 10 val / 10 test, --holdout-per-class held out")
    source.add_argument("--set", dest="photo_set", choices=sorted(SOURCES),
                        help="draw from a named sharp photo set built by tools/photo_sets.py into --photo-cache "
                             "(checked against its SET.json first)")
    p.add_argument("--photo-cache", type=Path, default=DEFAULT_CACHE, help="where the named sets are built")
    p.add_argument("--json")
    args = p.parse_args()
    if not Path(args.weights).is_file():
        raise SystemExit(f"weights file not found: {args.weights} (pass --weights PATH)")
    photo_set = None
    if args.photo_set:
        args.photos, photo_set = resolve_set(args.photo_set, args.photo_cache)

    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    if args.repeats is None:
        args.repeats = 1 if args.seeds else 2
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    repeats = []
    for seed in seeds:
        data = work / f"data{seed}"
        # A larger held-out set (clean labels) resolves accuracy finer than the 50-image test split.
        holdout = work / f"holdout{seed}"
        if args.photos:
            made = draw_photo_set(args.photos, data, holdout, seed=seed, holdout_per_class=args.holdout_per_class)
        else:
            made = make_realistic_set(data, seed=seed)
            make_realistic_set(holdout, seed=seed + 1000, per_class=args.holdout_per_class, label_noise=0.0)
        for i in range(args.repeats):
            row: dict = {"data_seed": seed, "load_before": _load()}
            if args.photos:
                row["classes"], row["draw_digest"] = made["classes"], made["draw_digest"]
            if not args.skip_seed:
                row["seed"] = run_seed(data, args.weights, holdout, seed=seed, epochs=args.recipe_epochs)
            if args.recipe_minus1to1:
                row["seed_minus1to1"] = run_seed(data, args.weights, holdout, seed=seed, inputs="minus1to1",
                                                 epochs=args.recipe_epochs)
            extra = args.edgecls_args.split()
            if args.seeds:  # the training seed follows the set, as the recipe's does
                extra = ["--seed", str(seed), *extra]
            row["edgecls"] = run_edgecls(data, work / f"run{seed}_{i}", args.weights, holdout, extra)
            if not args.skip_seed:
                row["ratio_edgecls_wall_to_seed_fit"] = round(row["edgecls"]["wall_s"] / row["seed"]["fit_s"], 3)
            row["load_after"] = _load()
            add_intervals(row)
            repeats.append(row)
            print(json.dumps(_brief(row)), file=sys.stderr, flush=True)
    tf_version = next((r["seed"]["tensorflow"] for r in repeats if "seed" in r), None)
    emit({
        "what": f"seed recipe (model.fit only, {args.recipe_epochs} epochs) vs whole `edgecls train` command "
                f"(defaults{(' + ' + args.edgecls_args) if args.edgecls_args else ''}); MobileNetV2 1.0 @ {SIZE_PX}px, "
                f"shared pretrained weights; "
                + (f"real photos from {args.photos}, sets of {made['counts']}" if args.photos else
                   f"realistic synthetic set {made['counts']} ({made['noisy_labels']} noisy training labels)"),
        "photo_set": photo_set,
        "repeats": repeats,
        "summary": summarize(repeats),
        "conditions": conditions(tf_version),
    }, args.json)


if __name__ == "__main__":
    main()
