"""Labels from a CSV file: one folder of images plus ``path,label[,split]`` rows.

The result is the same :class:`~edgecls.data.scan.ScanReport` a folder scan gives ("classes"
layout without a split column, "splits" layout with one), so the split, ``split.json``,
export, parity and ``--resume`` need nothing new. Every unusable row is listed in
``report.skipped`` as ``(path, "line N: reason")`` and left out, the way ``data check`` lists
files; only a set that cannot be trained on at all is an error.

Rules (docs/data.md): a header row is optional (recognised by its column names, which may
then come in any order); a path is looked up relative to DATA first, then to the CSV's folder;
labels are class names, or integer ids when every label is an integer (id i is then output i
and ``labels.txt`` line i+1).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgecls.core.errors import EdgeclsError
from edgecls.data.scan import Item, ScanReport, _check_files, validate_scan

PATH_COLUMNS = ("path", "image", "image_name", "image_path", "filename", "file", "file_name")
LABEL_COLUMNS = ("label", "class", "class_name", "category", "target")
SPLIT_COLUMNS = ("split", "subset", "set")
SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
MIN_IMAGES_PER_CLASS = 3  # without a split column: one each for train, val and test
_INT = re.compile(r"^\d+$")


@dataclass
class _Row:
    line: int
    path: str  # as written
    label: str
    split: str  # "" without a split column


def scan_labels_csv(root: str | Path, labels_csv: str | Path, *, decode: bool = True) -> ScanReport:
    """Read, check and validate a labels CSV; ``EdgeclsError`` when the set cannot be trained on.

    The CSV counterpart of :func:`~edgecls.data.scan.scan_dataset` (same report, same contract).
    """
    report = inspect_labels_csv(root, labels_csv, decode=decode)
    validate_labels_csv(report)
    return report


def inspect_labels_csv(root: str | Path, labels_csv: str | Path, *, decode: bool = True) -> ScanReport:
    """Like :func:`scan_labels_csv` but does not judge class counts (a CLI shows the report first)."""
    root, csv_path = Path(root), Path(labels_csv)
    if not root.is_dir():
        raise EdgeclsError(f"data folder not found: {root}" if not root.exists() else f"{root} is not a folder")
    if not csv_path.is_file():
        raise EdgeclsError(f"labels CSV not found: {csv_path}")
    rows, has_split = _read_rows(csv_path)
    skipped: list[tuple[int, str, str]] = []  # (line, path, reason)
    rows = _drop_bad_cells(rows, has_split, skipped)
    resolved = _resolve(rows, root, csv_path.parent, skipped)
    resolved = _drop_duplicates(resolved, skipped)
    classes, to_index = _classes([r.label for r, _ in resolved])
    bad = _check_files(root, sorted({rel for _, rel in resolved}), decode)
    splits = ("train", "val", "test") if has_split else ("all",)
    files: dict[str, list[Item]] = {s: [] for s in splits}
    for row, rel in resolved:
        if rel in bad:
            skipped.append((row.line, row.path, bad[rel]))
        else:
            files[row.split if has_split else "all"].append((rel, to_index[row.label]))
    if has_split:
        if not files["test"]:
            del files["test"]  # as for folders: val doubles as test
        if files["train"] and not files["val"]:
            raise EdgeclsError(
                f"{csv_path} has train rows but no usable val rows; mark some rows 'val', "
                "or drop the split column to let edgecls split"
            )
    for s in files:
        files[s].sort()
    skipped.sort()
    return ScanReport(root=root, layout="splits" if has_split else "classes", classes=classes, files=files,
                      skipped=[(path, f"line {line}: {reason}") for line, path, reason in skipped],
                      labels_csv=str(csv_path))


def validate_labels_csv(report: ScanReport) -> None:
    """A class with too few usable images, or fewer than two classes, is a user error."""
    where = report.labels_csv or "the labels CSV"
    if len(report.classes) < 2:
        found = f"only {report.classes[0]!r}" if report.classes else "none"
        raise EdgeclsError(f"{where} needs usable rows of at least 2 classes (found {found})")
    need = {"all": MIN_IMAGES_PER_CLASS, "train": 1, "val": 1, "test": 1}
    for split, counts in report.counts().items():
        for name, n in counts.items():
            if n < need[split]:
                if split == "all":
                    why = f"needs at least {MIN_IMAGES_PER_CLASS} (one each for train, val and test)"
                    raise EdgeclsError(f"class {name!r} has too few images: {n} usable row(s) in {where}; {why}")
                raise EdgeclsError(
                    f"class {name!r} has too few images: no usable {split} row in {where}; "
                    f"every class needs at least one {split} image"
                )
    validate_scan(report)


# -- reading ----------------------------------------------------------------------------------
def _read_rows(csv_path: Path) -> tuple[list[_Row], bool]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a BOM
    except UnicodeDecodeError:
        raise EdgeclsError(f"{csv_path} is not UTF-8 text; save it as CSV UTF-8") from None
    except OSError as e:
        raise EdgeclsError(f"cannot read {csv_path} ({e.strerror})") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    table = [(i + 1, cells) for i, cells in enumerate(csv.reader(text.splitlines(), dialect))]
    table = [(n, [c.strip() for c in cells]) for n, cells in table if any(c.strip() for c in cells)]
    if not table:
        raise EdgeclsError(f"{csv_path} has no rows; expected path,label[,split]")
    cols, width = _columns(table[0][1])
    if cols is not None:
        table = table[1:]
    else:
        cols, width = (0, 1, 2), len(table[0][1])
    has_split = cols[2] is not None and width >= 3
    rows = []
    for n, cells in table:
        get = lambda i: cells[i] if i is not None and i < len(cells) else ""  # noqa: E731
        if len(cells) <= max(cols[0], cols[1]):
            rows.append(_Row(n, cells[0], "\0short", ""))  # reported by _drop_bad_cells
        else:
            rows.append(_Row(n, get(cols[0]), get(cols[1]), get(cols[2]) if has_split else ""))
    return rows, has_split


def _columns(first: list[str]) -> tuple[tuple[int, int, int | None] | None, int]:
    """Column indices (path, label, split) from a header row, or None when the row is data."""
    names = [c.lower() for c in first]
    path = next((i for i, c in enumerate(names) if c in PATH_COLUMNS), None)
    label = next((i for i, c in enumerate(names) if c in LABEL_COLUMNS), None)
    if path is None or label is None:
        return None, len(first)
    split = next((i for i, c in enumerate(names) if c in SPLIT_COLUMNS), None)
    return (path, label, split), (3 if split is not None else 2)


def _drop_bad_cells(rows: list[_Row], has_split: bool, skipped: list) -> list[_Row]:
    out = []
    for r in rows:
        if r.label == "\0short":
            skipped.append((r.line, r.path, "expected path,label[,split] (too few columns)"))
        elif not r.path:
            skipped.append((r.line, "(no path)", "empty path"))
        elif not r.label:
            skipped.append((r.line, r.path, "empty label"))
        elif has_split and r.split.lower() not in SPLIT_ALIASES:
            shown = repr(r.split) if r.split else "empty"
            skipped.append((r.line, r.path, f"unknown split name {shown}; use train, val or test"))
        else:
            if has_split:
                r.split = SPLIT_ALIASES[r.split.lower()]
            out.append(r)
    return out


def _resolve(rows: list[_Row], root: Path, csv_dir: Path, skipped: list) -> list[tuple[_Row, str]]:
    """(row, path relative to root, normalised) for rows whose file exists."""
    out = []
    for r in rows:
        p = Path(r.path.replace("\\", "/"))  # Windows tools write backslashes
        found = next((c for c in ([p] if p.is_absolute() else [root / p, csv_dir / p]) if c.is_file()), None)
        if found is None:
            why = "missing file" if not p.is_absolute() else "missing file (absolute path)"
            if any(c.is_dir() for c in (root / p, csv_dir / p)):
                why = "is a folder, not an image file"
            skipped.append((r.line, r.path, why))
            continue
        # One spelling per file, so "a.jpg" and "./a.jpg" count as the same path.
        rel = Path(os.path.relpath(os.path.abspath(found), os.path.abspath(root))).as_posix()
        out.append((r, rel))
    return out


def _drop_duplicates(resolved: list[tuple[_Row, str]], skipped: list) -> list[tuple[_Row, str]]:
    by_rel: dict[str, list[_Row]] = {}
    for r, rel in resolved:
        by_rel.setdefault(rel, []).append(r)
    out = []
    for r, rel in resolved:
        group = by_rel[rel]
        labels = {g.label for g in group}
        splits = {g.split for g in group}
        others = [str(g.line) for g in group if g is not r]
        also = f"also line{'s' if len(others) > 1 else ''} {', '.join(others)}"
        if len(labels) > 1:
            names = ", ".join(repr(x) for x in sorted(labels))
            skipped.append((r.line, r.path, f"conflicting labels for one file: {names} ({also})"))
        elif len(splits) > 1:
            skipped.append((r.line, r.path, f"one file in several splits: {', '.join(sorted(splits))} ({also})"))
        elif r is not group[0]:
            skipped.append((r.line, r.path, f"duplicate path (first listed on line {group[0].line})"))
        else:
            out.append((r, rel))
    return out


def _classes(labels: list[str]) -> tuple[list[str], dict[str, int]]:
    """Class names in output order, and label cell -> index."""
    if labels and all(_INT.match(x) for x in labels):
        # Integer ids keep their meaning: id i is output i (a missing id becomes an empty class).
        ids = {x: int(x) for x in labels}
        classes = [str(i) for i in range(max(ids.values()) + 1)]
        return classes, ids
    classes = sorted(set(labels))
    return classes, {c: i for i, c in enumerate(classes)}

