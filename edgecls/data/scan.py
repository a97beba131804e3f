"""Scan and validate an image folder: classes, usable files, and every skipped file with why.

One acceptance rule for every stage: a file is used only when TensorFlow's own decoder (the one
the pipeline runs, :func:`decode_image_file`) decodes it correctly. ``scan_dataset`` decodes
every candidate once through that decoder, so one bad file is listed with its reason instead of
killing an epoch. PIL is used only to explain a failure and to spot palette BMPs, which TF
"decodes" with wrong colours.

TensorFlow is imported inside the functions that need it: listing files stays cheap.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.core.orientation import UPRIGHT, exif_orientation

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

Item = tuple[str, int]  # (path relative to the data root, label index)

SPLIT_NAMES = ("train", "val", "test")
SUPPORTED = "JPEG, PNG, BMP, GIF or WebP"
# Magic bytes of the formats TF's decode_image handles (GIF: first frame only).
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"))


@dataclass
class ScanReport:
    """What a data folder holds: classes, usable files per split, and every skipped file with why."""

    root: Path
    layout: str  # "classes" (DATA/<class>/*) or "splits" (DATA/train|val[|test]/<class>/*)
    classes: list[str]  # sorted class names == labels.txt order
    files: dict[str, list[Item]] = field(default_factory=dict)  # "all" or "train"/"val"/"test"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)
    labels_csv: Optional[str] = None  # the labels CSV, when labels come from one (edgecls.data.labels_csv)
    # Usable files whose EXIF orientation (2..8) turns them upright before training, as on the device.
    oriented: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> class -> number of usable images (zero for a class with none)."""
        out: dict[str, dict[str, int]] = {}
        for split, items in self.files.items():
            c = Counter(label for _, label in items)
            out[split] = {name: c.get(i, 0) for i, name in enumerate(self.classes)}
        return out

    @property
    def n_usable(self) -> int:
        return sum(len(v) for v in self.files.values())

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "classes": self.classes,
            "counts": self.counts(),
            "usable": self.n_usable,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "labels_csv": self.labels_csv,
            "exif_oriented": self.oriented,
        }


# -- scanning ---------------------------------------------------------------------------------
def scan_dataset(root: str | Path, *, decode: bool = True) -> ScanReport:
    """Scan and validate a data folder; ``EdgeclsError`` when it cannot be trained on.

    With ``decode`` every candidate file is decoded once by the pipeline's decoder (needs
    TensorFlow); without it only names, sizes and file signatures are checked.
    """
    report = inspect_dataset(root, decode=decode)
    validate_scan(report)
    return report


def inspect_dataset(root: str | Path, *, decode: bool = True) -> ScanReport:
    """Like ``scan_dataset`` but does not judge class counts (so a CLI can show the report first)."""
    root = Path(root)
    if not root.exists():
        raise EdgeclsError(f"data folder not found: {root}")
    if not root.is_dir():
        raise EdgeclsError(f"{root} is not a folder; give a folder of class sub-folders (DATA/<class>/*.jpg)")
    layout, split_dirs = _detect_layout(root)
    skipped: list[tuple[str, str]] = []
    per_split: dict[str, dict[str, list[str]]] = {}
    for split, sdir in split_dirs.items():
        per_split[split] = _list_class_files(root, sdir, skipped)
    classes = _agree_classes(per_split)
    candidates = [(split, cls, rel) for split, d in per_split.items() for cls, rels in d.items() for rel in rels]
    bad = _check_files(root, [rel for _, _, rel in candidates], decode)
    skipped.extend((rel, bad[rel]) for _, _, rel in candidates if rel in bad)
    index = {name: i for i, name in enumerate(classes)}
    files: dict[str, list[Item]] = {split: [] for split in split_dirs}
    for split, cls, rel in candidates:
        if rel not in bad:
            files[split].append((rel, index[cls]))
    for split in files:
        files[split].sort()
    skipped.sort()
    usable = [rel for _, _, rel in candidates if rel not in bad]
    oriented = sorted(rel for rel, o in zip(usable, orientations(root, usable)) if o != UPRIGHT)
    return ScanReport(root=root, layout=layout, classes=classes, files=files, skipped=skipped, oriented=oriented)


def validate_scan(report: ScanReport) -> None:
    """Fewer than two classes or a class with no usable image is a user error."""
    if len(report.classes) < 2:
        found = f"only {report.classes[0]!r}" if report.classes else "none"
        raise EdgeclsError(
            f"{report.root} needs at least 2 class folders with images (found {found}); "
            "lay it out as DATA/<class>/*.jpg or DATA/train|val/<class>/*.jpg"
        )
    for split, counts in report.counts().items():
        empty = [c for c, n in counts.items() if n == 0]
        if empty:
            where = "" if split == "all" else f" in {split}/"
            n_skip = sum(1 for p, _ in report.skipped if _class_of(p, report.layout) in empty)
            extra = f" ({n_skip} file(s) skipped, see 'edgecls data check')" if n_skip else ""
            raise EdgeclsError(
                f"class {empty[0]!r} has no usable images{where}{extra}; add images or remove the folder"
            )


def _class_of(relpath: str, layout: str) -> str:
    parts = Path(relpath).parts
    i = 1 if layout == "splits" else 0
    return parts[i] if len(parts) > i + 1 else ""


def _hidden(name: str) -> bool:
    # Dot files include macOS AppleDouble files (._x.jpg) and .DS_Store.
    return name.startswith(".")


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not _hidden(p.name))


def _detect_layout(root: Path) -> tuple[str, dict[str, Path]]:
    top = _subdirs(root)
    names = {p.name for p in top}
    if "train" in names and names <= set(SPLIT_NAMES) and _subdirs(root / "train"):
        if "val" not in names:
            raise EdgeclsError(
                f"{root} has train/ but no val/: add DATA/val/<class>/ folders, "
                "or put the class folders directly under DATA to let edgecls split"
            )
        return "splits", {s: root / s for s in SPLIT_NAMES if s in names}
    return "classes", {"all": root}


def _list_class_files(root: Path, sdir: Path, skipped: list[tuple[str, str]]) -> dict[str, list[str]]:
    """class name -> relpaths of candidate files (recursive), recording names skipped on sight."""
    out: dict[str, list[str]] = {}
    for entry in sorted(sdir.iterdir()):
        rel = entry.relative_to(root).as_posix()
        if _hidden(entry.name):
            skipped.append((rel, "hidden folder" if entry.is_dir() else "hidden file"))
        elif entry.is_file():
            skipped.append((rel, "not in a class folder"))
        elif entry.is_dir():
            files: list[str] = []
            for dirpath, dirnames, filenames in os.walk(entry):
                dpath = Path(dirpath)
                for d in sorted(dirnames):
                    if _hidden(d):
                        skipped.append(((dpath / d).relative_to(root).as_posix(), "hidden folder"))
                dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
                for f in sorted(filenames):
                    frel = (dpath / f).relative_to(root).as_posix()
                    if _hidden(f):
                        skipped.append((frel, "hidden file"))
                    else:
                        files.append(frel)
            out[entry.name] = files
    return out


def _agree_classes(per_split: dict[str, dict[str, list[str]]]) -> list[str]:
    sets = {split: set(d) for split, d in per_split.items()}
    ref = sets.get("train", sets.get("all", set()))
    problems = []
    for split, s in sets.items():
        if s != ref:
            if ref - s:
                problems.append(f"{split}/ lacks {sorted(ref - s)}")
            if s - ref:
                problems.append(f"{split}/ has extra {sorted(s - ref)}")
    if problems:
        raise EdgeclsError(
            "class folders differ across splits: " + "; ".join(problems) + "; every split needs the same class folders"
        )
    return sorted(ref)


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _check_files(root: Path, rels: list[str], decode: bool) -> dict[str, str]:
    """relpath -> reason, for every file the pipeline must not see."""
    bad: dict[str, str] = {}
    to_decode: list[str] = []
    for rel in rels:
        path = root / rel
        try:
            if path.stat().st_size == 0:
                bad[rel] = "empty file (0 bytes)"
                continue
            fmt = _sniff(path)
        except OSError as e:
            bad[rel] = f"unreadable ({e.strerror})"
            continue
        if fmt is None:
            bad[rel] = _unsupported_reason(path)
        elif fmt == "BMP" and _pil_mode(path) in ("P", "1"):
            # TF's BMP decoder ignores the colour table: it would train on wrong colours.
            bad[rel] = "unsupported by the TF decoder (palette BMP); convert it to PNG"
        else:
            to_decode.append(rel)
    if decode and to_decode:
        ok = _tf_decodes(root, to_decode)
        for rel in to_decode:
            if rel not in ok:
                bad[rel] = _decode_failure_reason(root / rel)
    return bad


def _unsupported_reason(path: Path) -> str:
    try:
        from PIL import Image

        with Image.open(path) as im:
            fmt = im.format
    except Exception:
        fmt = None
    if fmt:
        return f"unsupported format {fmt}; convert it to {SUPPORTED}"
    if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"):
        return f"corrupt: not a valid image despite its {path.suffix} name"
    return f"unsupported format ({path.suffix or 'no extension'}); use {SUPPORTED}"


def _pil_mode(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:  # lazy: reads the header only
            return im.mode
    except Exception:
        return None


def _decode_failure_reason(path: Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            what = f"{im.format} {im.mode}"
    except Exception as e:
        return f"corrupt or truncated ({str(e).splitlines()[0][:80]})"
    return f"unsupported by the TF decoder ({what}); convert it to an RGB JPEG or PNG"


def _tf_decodes(root: Path, rels: list[str]) -> set[str]:
    """The relpaths TF decodes, found by decoding all in parallel and dropping the failures."""
    from edgecls.core.keras import tf

    paths = [str(root / r) for r in rels]

    def probe(i, p, o):
        img = decode_image_file(p, o)
        return i, tf.reduce_min(tf.shape(img)[:2])

    ds = tf.data.Dataset.from_tensor_slices(
        (tf.range(len(paths), dtype=tf.int64), paths, np.asarray(orientations(root, rels), np.int32))
    )
    ds = ds.map(probe, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
    return {rels[int(i)] for i, side in ds.as_numpy_iterator() if side > 0}


def orientations(root: Path, rels: list[str]) -> list[int]:
    """EXIF orientation (1..8) of each file, read once from the headers while building the dataset.

    Read in Python here, from the headers only (cheap next to decoding), so the tf.data map stays
    pure TensorFlow: the transform itself runs in the graph (:func:`orient_tensor`).
    """
    return [exif_orientation(Path(root) / rel) for rel in rels]


def orient_tensor(img: "tf.Tensor", orientation: "tf.Tensor") -> "tf.Tensor":
    """Stored pixels -> upright, the graph twin of ``core.orientation.apply_orientation``."""
    from edgecls.core.keras import tf

    def transverse():
        return tf.image.rot90(tf.transpose(img, [1, 0, 2]), k=2)

    branches = [
        lambda: img,  # 0: not a valid tag, as 1
        lambda: img,  # 1: upright
        lambda: tf.image.flip_left_right(img),
        lambda: tf.image.rot90(img, k=2),
        lambda: tf.image.flip_up_down(img),
        lambda: tf.transpose(img, [1, 0, 2]),
        lambda: tf.image.rot90(img, k=3),  # rot90 turns counter-clockwise: 3 quarter turns = 90 clockwise
        transverse,
        lambda: tf.image.rot90(img, k=1),
    ]
    index = tf.clip_by_value(tf.cast(orientation, tf.int32), 0, len(branches) - 1)
    return tf.switch_case(index, branches)


def decode_image_file(path: "tf.Tensor", orientation: "tf.Tensor | int | None" = None) -> "tf.Tensor":
    """File -> uint8 RGB [H, W, 3], upright: grey and RGBA become RGB, GIF gives its first frame.

    ``orientation`` is the file's EXIF orientation (:func:`orientations`); TF's decoder ignores
    EXIF, so without it a phone photo shot in portrait trains sideways while the device sees it
    upright. ``None`` reads it here (in Python, via ``tf.py_function``: fine for one file, slow
    in a pipeline, so the pipeline passes it in).
    """
    from edgecls.core.keras import tf

    img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False, dtype=tf.uint8)
    img.set_shape([None, None, 3])
    if orientation is None:
        orientation = tf.py_function(lambda p: exif_orientation(p.numpy().decode()), [path], tf.int32)
    img = orient_tensor(img, orientation)
    img.set_shape([None, None, 3])
    return img
