"""Training configurations side by side on the same photos: which ``edgecls train`` options give the most
accurate model, and at what time against the seed recipe.

For each data seed the set is drawn once (``photo_sets.draw_photo_set``, exactly as ``bench_train.py
--set/--photos`` draws it: 5 classes, ``--train-per-class`` training / 10 val / 10 test photos per class
and ``--holdout-per-class`` more held out), the seed recipe trains on it once (``bench_train.run_seed``:
its ``model.fit`` seconds are the time reference), and then every configuration runs as the whole
``edgecls train`` command (``bench_train.run_edgecls``: the command's wall seconds; ``--seed S`` first,
the configuration's options after it, so an option given there wins) and is scored on the same held-out
photos at the size it was trained at.

A configuration is a name and the options it adds to the defaults; ``CONFIGS`` holds the named grid
(``--list`` prints it), ``--config NAME=OPTIONS`` adds others. Per configuration and seed the output
keeps the held-out accuracy with its Wilson 95 % interval, the paired difference against the baseline
configuration (``--baseline``, ``defaults`` unless told) and against the recipe on the same photos
with Newcombe's 95 % interval (``tools/holdout_stats.py``), wall seconds, the ratio to the recipe's fit
seconds of the same seed, the 1-minute load before and after, the stage seconds, and the run's
per-epoch history (phase, epoch, loss, accuracy, val_loss, val_accuracy). ``summary`` pools each
configuration over the seeds it ran on: its hits as one Wilson interval, and the paired differences as
one Newcombe interval over every held-out photo of those seeds. That interval counts photos, not
training runs: ``train-seed`` (the defaults with another training seed on the same photos) shows how
far two equally good runs differ.

The JSON is rewritten after every run and read back on start: a (seed, configuration) already measured
with the same options on the same draw is not run again, so a grid grows in stages and an interrupted
one continues. ``--table`` prints the summary of one or more result files as a Markdown table.

    PYTHONPATH=. .venv/bin/python tools/bench_train_grid.py --set flowers --seeds 0,1 --holdout-per-class 150 \\
        --configs defaults,ff0.2,ff0.35,fte8 --json results/flowers.json
    PYTHONPATH=. .venv/bin/python tools/bench_train_grid.py --table results/flowers.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import DEFAULT_WEIGHTS, _load, conditions, resolve_set, run_edgecls, run_seed  # noqa: E402
from holdout_stats import paired_interval, pooled, side_interval  # noqa: E402

BASELINE = "defaults"
RECIPE = "recipe"
HOLDOUT_PER_CLASS = 150  # the most every named set allows (grocery's smallest class: 222 photos)

# The grid: one factor at a time around the defaults, then combinations. Options are added to the
# defaults (size 160 and the shared weights come from bench_train.run_edgecls).
CONFIGS: dict[str, str] = {
    "defaults": "",
    "train-seed": "--seed 1000",  # the defaults, another training seed: run-to-run spread on the same photos
    # how deep and how long to fine-tune
    "fte0": "--fine-tune-epochs 0",
    "fte8": "--fine-tune-epochs 8",
    "fte15": "--fine-tune-epochs 15",
    "ff0.2": "--fine-tune-fraction 0.2",
    "ff0.35": "--fine-tune-fraction 0.35",
    "ff0.5": "--fine-tune-fraction 0.5",
    "ff1.0": "--fine-tune-fraction 1.0",
    "ff0.2-fte8": "--fine-tune-fraction 0.2 --fine-tune-epochs 8",
    "ff0.2-fte15": "--fine-tune-fraction 0.2 --fine-tune-epochs 15",
    "ff0.35-fte8": "--fine-tune-fraction 0.35 --fine-tune-epochs 8",
    "ff0.35-fte15": "--fine-tune-fraction 0.35 --fine-tune-epochs 15",
    "ff0.5-fte8": "--fine-tune-fraction 0.5 --fine-tune-epochs 8",
    "ff1.0-fte8": "--fine-tune-fraction 1.0 --fine-tune-epochs 8",  # no cut: fine-tunes on the images
    "ff0.5-fte15": "--fine-tune-fraction 0.5 --fine-tune-epochs 15",
    # fine-tune learning rate
    "ftlr3e-5": "--fine-tune-learning-rate 3e-5",
    "ftlr3e-4": "--fine-tune-learning-rate 3e-4",
    "ff0.35-fte8-ftlr3e-5": "--fine-tune-fraction 0.35 --fine-tune-epochs 8 --fine-tune-learning-rate 3e-5",
    "ff0.35-fte8-ftlr3e-4": "--fine-tune-fraction 0.35 --fine-tune-epochs 8 --fine-tune-learning-rate 3e-4",
    "ff0.5-fte15-ftlr3e-5": "--fine-tune-fraction 0.5 --fine-tune-epochs 15 --fine-tune-learning-rate 3e-5",
    "ff0.35-fte15-ftlr3e-5": "--fine-tune-fraction 0.35 --fine-tune-epochs 15 --fine-tune-learning-rate 3e-5",
    "ff0.2-fte8-ftlr3e-4": "--fine-tune-fraction 0.2 --fine-tune-epochs 8 --fine-tune-learning-rate 3e-4",
    # input size (the 160 weights file loads at 224)
    "s224": "--size 224",
    # augmentation: cached views vs on-the-fly
    "v1": "--head-cache-views 1",
    "v5": "--head-cache-views 5",
    "v8": "--head-cache-views 8",
    "nocache": "--head-cache none",
    "noaug": "--no-augment",
    # regularisation and the head's schedule
    "ls0": "--label-smoothing 0",
    "e40p10": "--epochs 40 --patience 10",
    "p10": "--patience 10",
    "hlr3e-3": "--learning-rate 3e-3",
}


def parse_configs(names: str, extra: list[str]) -> dict[str, str]:
    """Name -> options for ``--configs a,b`` (from ``CONFIGS``) and ``--config NAME=OPTIONS``; the baseline first."""
    chosen: dict[str, str] = {}
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in CONFIGS:
            raise SystemExit(f"no configuration {name!r}; the named ones are: {', '.join(CONFIGS)} "
                             "(or give --config NAME=OPTIONS)")
        chosen[name] = CONFIGS[name]
    for item in extra:
        name, sep, options = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--config wants NAME=OPTIONS, got {item!r}")
        if name in CONFIGS and CONFIGS[name] != options:
            raise SystemExit(f"--config {name!r} is a named configuration with other options ({CONFIGS[name]!r})")
        chosen[name] = options
    return chosen


def _history(run: Path) -> list[list]:
    """The run's epochs as [phase, phase_epoch, loss, accuracy, val_loss, val_accuracy] (4 decimals)."""
    rows = json.loads((run / "history.json").read_text())["epochs"]
    return [[r["phase"], r.get("phase_epoch", r["epoch"])] +
            [round(r[k], 4) if isinstance(r.get(k), (int, float)) else None
             for k in ("loss", "accuracy", "val_loss", "val_accuracy")] for r in rows]


def run_config(data: Path, holdout: Path, work: Path, weights: str, seed: int, options: str) -> dict:
    """One whole ``edgecls train`` command on the drawn set, scored on the held-out photos."""
    out = work / "run"
    if out.exists():
        shutil.rmtree(out)
    load_before = _load()
    row = run_edgecls(data, out, weights, holdout, ["--seed", str(seed), *options.split()])
    row["load_before"], row["load_after"] = load_before, _load()
    row["history"] = _history(out)
    cfg = json.loads((out / "config.json").read_text())["train"]
    row["trained"] = {k: cfg[k] for k in ("size", "epochs", "fine_tune_epochs", "fine_tune_fraction",
                                          "learning_rate", "fine_tune_learning_rate", "label_smoothing",
                                          "early_stopping_patience", "head_cache", "head_cache_views", "augment",
                                          "seed") if k in cfg}
    row["fine_tune_cut"] = (row.get("head_cache") or {}).get("fine_tune_cut")
    row.pop("cache_line", None)
    shutil.rmtree(out)
    return row


def _brief(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("holdout_correct", "history", "timings", "head_cache")}


def summarize(results: dict, baseline: str) -> dict:
    """Per configuration, pooled over the seeds it ran on (and, for the differences, that the other side ran on)."""
    seeds = results["seeds"]
    names = []
    for s in seeds.values():
        names += [n for n in s["configs"] if n not in names]
    out = {}
    for name in names:
        rows = {k: s["configs"][name] for k, s in seeds.items() if name in s["configs"]}
        entry = {"options": next(iter(rows.values()))["options"], "seeds": sorted(rows, key=int),
                 "holdout": pooled([r["holdout_correct"] for r in rows.values()]),
                 "wall_s_mean": round(sum(r["wall_s"] for r in rows.values()) / len(rows), 1)}
        ratios = [r["ratio_to_recipe_fit"] for r in rows.values() if "ratio_to_recipe_fit" in r]
        if ratios:
            entry["ratio_mean"] = round(sum(ratios) / len(ratios), 3)
        entry["load"] = [min(min(r["load_before"], r["load_after"]) for r in rows.values()),
                         max(max(r["load_before"], r["load_after"]) for r in rows.values())]
        for other, key in ((baseline, "vs_baseline"), (RECIPE, "vs_recipe")):
            both = [k for k in rows if (seeds[k]["configs"].get(other) if other != RECIPE else seeds[k].get(RECIPE))]
            if not both or name == other:
                continue
            theirs = [(seeds[k]["configs"][other] if other != RECIPE else seeds[k][RECIPE])["holdout_correct"]
                      for k in both]
            entry[key] = {"seeds": both, **paired_interval("".join(rows[k]["holdout_correct"] for k in both),
                                                           "".join(theirs)),
                          "per_seed_points": [rows[k][f"diff_{key}"]["diff_points"] for k in both
                                              if f"diff_{key}" in rows[k]]}
        out[name] = entry
    rec = [s[RECIPE] for s in seeds.values() if RECIPE in s]
    if rec:
        out[RECIPE] = {"options": "seed recipe (model.fit timed)", "seeds": sorted((k for k in seeds if RECIPE in seeds[k]), key=int),
                       "holdout": pooled([r["holdout_correct"] for r in rec]),
                       "fit_s_mean": round(sum(r["fit_s"] for r in rec) / len(rec), 1)}
    return out


def _paired_fields(results: dict, seed: str, baseline: str) -> None:
    """Per-seed paired differences of every configuration against the baseline and the recipe."""
    s = results["seeds"][seed]
    for name, row in s["configs"].items():
        if baseline in s["configs"] and name != baseline:
            row["diff_vs_baseline"] = paired_interval(row["holdout_correct"], s["configs"][baseline]["holdout_correct"])
        if RECIPE in s:
            row["diff_vs_recipe"] = paired_interval(row["holdout_correct"], s[RECIPE]["holdout_correct"])
            row["ratio_to_recipe_fit"] = round(row["wall_s"] / s[RECIPE]["fit_s"], 3)


def save(results: dict, path: Path, baseline: str) -> None:
    results["summary"] = summarize(results, baseline)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def table(paths: list[Path]) -> str:
    """The summaries of result files as Markdown tables, one per file."""
    lines = []
    for path in paths:
        res = json.loads(path.read_text())
        summ = res["summary"]
        lines += [f"### {res.get('set_name')} ({path.name}; seeds {','.join(res['seeds'])}, "
                  f"{res['holdout_per_class']} held out per class, {res['train_per_class']} training per class)", "",
                  "| config | options | seeds | held-out [95 % CI] | vs defaults, points [95 % CI] | vs recipe, points | "
                  "wall s | ratio to recipe fit | load |", "|---|---|---|---|---|---|---|---|---|"]
        for name, e in summ.items():
            h = e["holdout"]
            acc = f"{h['accuracy']:.3f} [{h['wilson95'][0]:.3f}, {h['wilson95'][1]:.3f}]"
            vb = e.get("vs_baseline")
            vbs = f"{vb['diff_points']:+.2f} [{vb['newcombe95_points'][0]:+.2f}, {vb['newcombe95_points'][1]:+.2f}]" \
                if vb else "—"
            vr = e.get("vs_recipe")
            vrs = f"{vr['diff_points']:+.2f}" if vr else "—"
            wall = e.get("wall_s_mean", e.get("fit_s_mean"))
            load = "—" if "load" not in e else f"{e['load'][0]:.1f}-{e['load'][1]:.1f}"
            lines.append(f"| {name} | `{e['options']}` | {len(e['seeds'])} | {acc} | {vbs} | {vrs} | {wall} | "
                         f"{e.get('ratio_mean', '—')} | {load} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--set", dest="photo_set", help="a named sharp set (tools/photo_sets.py), checked against SET.json")
    src.add_argument("--photos", type=Path, help="any folder of class folders, e.g. the CIFAR-10 photos")
    p.add_argument("--photo-cache", type=Path, default=None, help="where the named sets are built")
    p.add_argument("--seeds", default="0,1", help="data-and-training seeds, e.g. 0,1")
    p.add_argument("--configs", default=BASELINE, help="named configurations, comma-separated (--list)")
    p.add_argument("--config", action="append", default=[], metavar="NAME=OPTIONS", help="another configuration")
    p.add_argument("--baseline", default=BASELINE, help="the configuration the others are compared with")
    p.add_argument("--holdout-per-class", type=int, default=HOLDOUT_PER_CLASS)
    p.add_argument("--train-per-class", type=int, default=50)
    p.add_argument("--skip-recipe", action="store_true", help="no recipe run (no time ratio, no difference to it)")
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--json", type=Path, help="results file (read back on start: finished runs are kept)")
    p.add_argument("--list", action="store_true", help="print the named configurations and exit")
    p.add_argument("--table", nargs="+", type=Path, metavar="JSON", help="print result files' summaries and exit")
    args = p.parse_args()
    if args.list:
        print("\n".join(f"{k:24s} {v}" for k, v in CONFIGS.items()))
        return
    if args.table:
        print(table(args.table))
        return
    if not (args.photo_set or args.photos) or not args.json:
        p.error("give --set NAME or --photos DIR, and --json FILE")
    from photo_sets import DEFAULT_CACHE, draw_photo_set

    photo_set = None
    if args.photo_set:
        args.photos, photo_set = resolve_set(args.photo_set, args.photo_cache or DEFAULT_CACHE)
    configs = parse_configs(args.configs, args.config)
    draw = {"photos": str(args.photos), "holdout_per_class": args.holdout_per_class,
            "train_per_class": args.train_per_class}
    if args.json.is_file():
        results = json.loads(args.json.read_text())
        if {k: results.get(k) for k in draw} != draw:
            raise SystemExit(f"{args.json} holds another draw ({ {k: results.get(k) for k in draw} }); use another file")
    else:
        results = {**draw, "set_name": args.photo_set or args.photos.name, "photo_set": photo_set, "seeds": {}}
    results["conditions"] = conditions(None)
    work = Path(tempfile.mkdtemp(prefix="bench_grid_"))
    try:
        for seed in (int(x) for x in args.seeds.split(",")):
            data, holdout = work / f"data{seed}", work / f"holdout{seed}"
            made = draw_photo_set(args.photos, data, holdout, seed=seed, train=args.train_per_class,
                                  holdout_per_class=args.holdout_per_class)
            s = results["seeds"].setdefault(str(seed), {"classes": made["classes"], "draw_digest": made["draw_digest"],
                                                        "counts": made["counts"], "configs": {}})
            if s["draw_digest"] != made["draw_digest"]:
                raise SystemExit(f"seed {seed} drew other photos than {args.json} holds; use another file")
            if not args.skip_recipe and RECIPE not in s:
                load_before = _load()
                s[RECIPE] = run_seed(data, args.weights, holdout, seed=seed)
                s[RECIPE]["load_before"], s[RECIPE]["load_after"] = load_before, _load()
                s[RECIPE]["holdout_95ci"] = side_interval(s[RECIPE]["holdout_correct"])["wilson95"]
                print(json.dumps({"seed": seed, RECIPE: _brief(s[RECIPE])}), file=sys.stderr, flush=True)
                _paired_fields(results, str(seed), args.baseline)
                save(results, args.json, args.baseline)
            for name, options in configs.items():
                done = s["configs"].get(name)
                if done and done["options"] == options:
                    continue
                row = {"options": options, **run_config(data, holdout, work, args.weights, seed, options)}
                row["holdout_95ci"] = side_interval(row["holdout_correct"])["wilson95"]
                s["configs"][name] = row
                _paired_fields(results, str(seed), args.baseline)
                save(results, args.json, args.baseline)
                print(json.dumps({"seed": seed, "config": name, **_brief(row)}), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table([args.json]))


if __name__ == "__main__":
    main()
