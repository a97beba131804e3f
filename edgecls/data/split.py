"""Stratified, seeded train/val/test splits, saved in the run; class weights; sampling."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json, read_json
from edgecls.data.scan import SPLIT_NAMES, Item, ScanReport

if TYPE_CHECKING:  # pragma: no cover
    from edgecls.core.rundir import RunDir

IMBALANCE_RATIO = 1.5  # max/min class count above which balanced class weights are used


# -- split ------------------------------------------------------------------------------------
def make_split(
    scan: ScanReport, *, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Item]]:
    """train/val/test lists. Splits layout: used as given (test = val when there is no test/).

    Class-folder layout: stratified per class and deterministic by seed; a class with at least
    3 images appears in every split (with non-zero fractions).
    """
    if scan.layout == "splits":
        test = scan.files.get("test") or scan.files["val"]
        return {"train": list(scan.files["train"]), "val": list(scan.files["val"]), "test": list(test)}
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise EdgeclsError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
            "and leave some images for training"
        )
    by_class: dict[int, list[str]] = {}
    for rel, label in sorted(scan.files["all"]):
        by_class.setdefault(label, []).append(rel)
    out: dict[str, list[Item]] = {s: [] for s in SPLIT_NAMES}
    for label in sorted(by_class):
        rels = by_class[label]
        random.Random(f"{seed}:{label}").shuffle(rels)  # per-class stream: adding a class moves nothing else
        n_val, n_test = _split_sizes(len(rels), val_fraction, test_fraction)
        out["val"] += [(r, label) for r in rels[:n_val]]
        out["test"] += [(r, label) for r in rels[n_val : n_val + n_test]]
        out["train"] += [(r, label) for r in rels[n_val + n_test :]]
    return {s: sorted(v) for s, v in out.items()}


def _split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n >= 3:
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
    while n_val + n_test > n - 1:  # keep at least one training image
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def save_split(run: "RunDir", scan: ScanReport, split: dict, seed: int) -> None:
    """RUN/split.json (reproducible split) and RUN/scan.json (what was skipped, and why)."""
    atomic_write_json(
        run.split_json,
        {
            "root": str(Path(scan.root).resolve()),
            "layout": scan.layout,
            "seed": seed,
            "classes": scan.classes,
            "test_is_val": scan.layout == "splits" and not scan.files.get("test"),
            **{s: [[rel, int(label)] for rel, label in split[s]] for s in SPLIT_NAMES},
            **({"negatives": split["negatives"]} if split.get("negatives") else {}),
        },
    )
    atomic_write_json(run.scan_json, scan.to_dict())


def load_split(run: "RunDir") -> tuple[Path, dict[str, list[Item]]]:
    """(data root, split) as saved by ``save_split``."""
    if not run.split_json.is_file():
        raise EdgeclsError(f"{run.split_json} is missing; the run is incomplete (re-run 'edgecls train')")
    d = read_json(run.split_json)
    split: dict = {s: [(str(r), int(lab)) for r, lab in d.get(s, [])] for s in SPLIT_NAMES}
    if d.get("negatives"):
        split["negatives"] = {s: [str(p) for p in d["negatives"].get(s, [])] for s in SPLIT_NAMES}
    return Path(d["root"]), split


def stratified_sample(items: Sequence[Item], n: int, seed: int) -> list[Item]:
    """Up to ``n`` items spread over all classes (round robin over seeded per-class orders)."""
    by_class: dict[int, list[Item]] = {}
    for it in sorted(items):
        by_class.setdefault(it[1], []).append(it)
    rng = random.Random(seed)
    queues = []
    for label in sorted(by_class):
        q = by_class[label]
        rng.shuffle(q)
        queues.append(q)
    out: list[Item] = []
    depth = 0
    while len(out) < n and any(depth < len(q) for q in queues):
        out += [q[depth] for q in queues if depth < len(q)][: n - len(out)]
        depth += 1
    return out


def class_weights(labels: Sequence[int], n_classes: int) -> dict[int, float] | None:
    """Balanced weights n/(k*count) (as sklearn's "balanced"), or None when max/min count <= 1.5."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)[:n_classes]
    present = counts[counts > 0]
    if present.size == 0 or present.max() / present.min() <= IMBALANCE_RATIO:
        return None
    total, k = int(counts.sum()), int((counts > 0).sum())
    return {i: (total / (k * int(c)) if c else 1.0) for i, c in enumerate(counts)}


# -- imbalance --------------------------------------------------------------------------------
def balance_record(asked: str, weights: dict[int, float] | None, train_items: Sequence[Item]) -> dict:
    """What the run's metrics.json says about imbalance: asked for, actually used, train counts."""
    from edgecls.data.pipeline import oversampled_epoch_size

    # Weights asked for on classes within IMBALANCE_RATIO of each other are not applied.
    used = "none" if asked == "weights" and not weights else asked
    counts = np.bincount([int(lbl) for _, lbl in train_items]).tolist() if train_items else []
    record: dict = {"requested": asked, "used": used, "train_counts": counts}
    if used == "oversample":
        record["images_per_epoch"] = oversampled_epoch_size(train_items)
    return record


def check_split(split: dict, data: str) -> None:
    """A split training can use: images to train on and to validate with (one line when not)."""
    for name in ("train", "val"):
        if not split.get(name):
            raise EdgeclsError(f"the {name} split of {data} is empty; add images (a few per class at least)")


def split_warnings(split: dict, labels: list[str]) -> list[str]:
    """Classes the split leaves out of val or test (too few images): their accuracy is never measured."""
    out = []
    for i, name in enumerate(labels):
        counts = {s: sum(1 for _, lbl in split.get(s) or [] if lbl == i) for s in ("train", "val", "test")}
        missing = [s for s in ("val", "test") if split.get(s) and counts[s] == 0]
        if missing:
            total = sum(counts.values())
            out.append(f"class {name!r} has {total} image{'s' if total != 1 else ''}: none in the "
                       f"{' and '.join(missing)} split, so its accuracy is never measured (add images)")
    return out
