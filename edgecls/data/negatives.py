"""Negatives: photos that are none of the classes (an empty perch, a glove on the belt, the neighbour's cat).

``edgecls train DATA --negatives DIR`` trains them as one more class, ``unknown``
(:data:`edgecls.core.unknown.UNKNOWN_CLASS`, labels.txt's last line), and a frame whose top-1 is that
class answers "unknown" like one under the threshold. Measured against training them towards a
uniform target (outlier exposure) on the same photos, the class let through a third as many photos
of things never trained on, at the same share of correct answers kept (BENCHMARKS.md, "Unknown
photos"). The folder is any images at any depth; they pass the same acceptance rule as the classes'
images (:mod:`edgecls.data.scan`) and are split train/val/test like a class, seeded, and kept in
``split.json`` under ``negatives`` (absolute paths: they live outside DATA). In a pipeline a negative
carries the unknown class's label index, one past the last class.

Refused with one line each: an empty folder, a folder that is (or is inside, or holds) DATA or one of
its class folders, photos that are also in DATA (by content: a copy is the same photo), and a class
already named ``unknown``.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from edgecls.core.errors import EdgeclsError
from edgecls.core.unknown import UNKNOWN_CLASS
from edgecls.data.scan import SPLIT_NAMES, ScanReport, _check_files, _hidden


def _files(folder: Path) -> list[str]:
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(_hidden(p) for p in rel.parts):
            out.append(str(rel))
    return out


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def scan_negatives(folder: str | Path, data: ScanReport, *, decode: bool = True
                   ) -> tuple[list[str], list[tuple[str, str]]]:
    """The negatives' usable images (absolute paths) and the files skipped with why, checked against the class
    data ``data``; one error line for a folder that cannot serve."""
    folder, root = Path(folder).resolve(), Path(data.root).resolve()
    if not folder.is_dir():
        raise EdgeclsError(f"negatives folder not found: {folder}")
    if folder == root or root in folder.parents or folder in root.parents:
        raise EdgeclsError(f"--negatives {folder} overlaps the image folder {root}; give a folder of its own")
    if UNKNOWN_CLASS in data.classes:
        raise EdgeclsError(f"{root} has a class named {UNKNOWN_CLASS!r}, the name --negatives gives the photos that are "
                           "none of the classes: rename that class folder, or move its photos into the negatives")
    if folder.name in data.classes:
        raise EdgeclsError(f"--negatives {folder} is named like the class {folder.name!r} of {root}; negatives are "
                           "none of the classes: rename the folder or choose another")
    rels = _files(folder)
    bad = _check_files(folder, rels, decode)
    usable = [r for r in rels if r not in bad]
    if not usable:
        raise EdgeclsError(f"--negatives {folder} holds no usable image (JPEG, PNG, BMP, GIF or WebP); "
                           "put photos of what the camera sees that is none of the classes there")
    ours = {_digest(root / rel) for items in data.files.values() for rel, _ in items}
    shared = [r for r in usable if _digest(folder / r) in ours]
    if shared:
        raise EdgeclsError(f"{len(shared)} photo(s) in --negatives {folder} are also in {root} (e.g. {shared[0]}); "
                           "a photo cannot be a class and none of them: remove them from one folder")
    return [str(folder / r) for r in usable], sorted(bad.items())


def split_negatives(paths: list[str], *, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """The negatives split like one more class (seeded), so each split judges the unknown rule too."""
    order = sorted(paths)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction)) if len(order) > 2 else 0
    n_test = max(1, round(len(order) * test_fraction)) if len(order) > 2 and test_fraction > 0 else 0
    return {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}


def negative_items(negatives: dict[str, list[str]], split: str, index: int) -> list[tuple[str, int]]:
    """A split's negatives as pipeline items: (absolute path, ``index``, the unknown class's)."""
    return [(p, index) for p in (negatives or {}).get(split, [])]


def model_labels(classes: list[str], split: dict[str, Any]) -> list[str]:
    """The model's classes: the data's, then ``unknown`` when the run has negatives."""
    return list(classes) + ([UNKNOWN_CLASS] if split.get("negatives") else [])


def unknown_index(labels: list[str], split: dict[str, Any]) -> int | None:
    """The unknown class's index among ``labels`` (the model's classes), or None for a run without negatives."""
    return len(labels) - 1 if split.get("negatives") else None


def items_with_negatives(split: dict[str, Any], name: str, labels: list[str]) -> list[tuple[str, int]]:
    """A split's class images and then its negatives (labelled with the unknown class) as pipeline items."""
    index = unknown_index(labels, split)
    return list(split.get(name) or []) + ([] if index is None else negative_items(split.get("negatives"), name, index))


def describe(negatives: dict[str, Any]) -> dict[str, int]:
    return {s: len(negatives.get(s, [])) for s in SPLIT_NAMES}
