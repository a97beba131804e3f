"""Image folders: scan and validate, stratified split, the tf.data pipeline, class weights.

One acceptance rule for every stage: a file is used only when TensorFlow's own decoder (the one
the pipeline runs) decodes it correctly. ``scan_dataset`` decodes every candidate once through
that decoder, so one bad file is listed with its reason instead of killing an epoch. PIL is used
only to explain a failure and to spot palette BMPs, which TF "decodes" with wrong colours.

TensorFlow is imported inside the functions that need it: listing files and splitting stay cheap.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edgecls.errors import EdgeclsError
from edgecls.io import atomic_write_json, read_json

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from edgecls.rundir import RunDir

Item = tuple[str, int]  # (path relative to the data root, label index)

SPLIT_NAMES = ("train", "val", "test")
SUPPORTED = "JPEG, PNG, BMP, GIF or WebP"
# Magic bytes of the formats TF's decode_image handles (GIF: first frame only).
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"))
IMBALANCE_RATIO = 1.5  # max/min class count above which balanced class weights are used
SHUFFLE_BUDGET_MB = 512  # cap of the shuffle buffer when the cache lives on disk
CACHE_MODES = ("auto", "memory", "disk", "none")


@dataclass
class ScanReport:
    """What a data folder holds: classes, usable files per split, and every skipped file with why."""

    root: Path
    layout: str  # "classes" (DATA/<class>/*) or "splits" (DATA/train|val[|test]/<class>/*)
    classes: list[str]  # sorted class names == labels.txt order
    files: dict[str, list[Item]] = field(default_factory=dict)  # "all" or "train"/"val"/"test"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)

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
    return ScanReport(root=root, layout=layout, classes=classes, files=files, skipped=skipped)


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
    from edgecls.keras import tf

    paths = [str(root / r) for r in rels]

    def probe(i, p):
        img = _decode(p)
        return i, tf.reduce_min(tf.shape(img)[:2])

    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), paths))
    ds = ds.map(probe, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
    return {rels[int(i)] for i, side in ds.as_numpy_iterator() if side > 0}


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
        },
    )
    atomic_write_json(run.scan_json, scan.to_dict())


def load_split(run: "RunDir") -> tuple[Path, dict[str, list[Item]]]:
    """(data root, split) as saved by ``save_split``."""
    if not run.split_json.is_file():
        raise EdgeclsError(f"{run.split_json} is missing; the run is incomplete (re-run 'edgecls train')")
    d = read_json(run.split_json)
    return Path(d["root"]), {s: [(str(r), int(lab)) for r, lab in d.get(s, [])] for s in SPLIT_NAMES}


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


# -- tf.data ----------------------------------------------------------------------------------
def _decode(path: "tf.Tensor") -> "tf.Tensor":
    """File -> uint8 RGB [H, W, 3]: grey and RGBA become RGB, GIF gives its first frame."""
    from edgecls.keras import tf

    img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False, dtype=tf.uint8)
    img.set_shape([None, None, 3])
    return img


def _decode_resize(path: "tf.Tensor", size: int) -> "tf.Tensor":
    """The project's resize rule: plain squash, bilinear with antialias, rounded to uint8."""
    from edgecls.keras import tf

    img = tf.image.resize(_decode(path), [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(img), 0.0, 255.0), tf.uint8)


def _decoded_dataset(root: Path, items: Sequence[Item], image_size: int) -> "tf.data.Dataset":
    from edgecls.keras import tf

    root = Path(root)
    if not root.is_dir():
        raise EdgeclsError(f"data folder not found: {root} (the run's split.json points at it)")
    if not items:
        raise EdgeclsError("no images to build a dataset from")
    paths = [str(root / rel) for rel, _ in items]
    labels = np.asarray([lab for _, lab in items], dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    return ds.map(
        lambda p, y: (_decode_resize(p, image_size), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def resolve_cache(n_items: int, image_size: int, cache: str, cache_budget_mb: int, cache_dir: Path | None) -> str:
    """The cache actually used: "memory", "disk" or "none" ("auto": memory when it fits the budget)."""
    if cache not in CACHE_MODES:
        raise EdgeclsError(f"unknown cache mode {cache!r}; use one of {', '.join(CACHE_MODES)}")
    if cache == "auto":
        decoded_mb = n_items * image_size * image_size * 3 / 2**20
        if decoded_mb <= cache_budget_mb:
            return "memory"
        return "disk" if cache_dir is not None else "none"
    if cache == "disk" and cache_dir is None:
        raise EdgeclsError("cache 'disk' needs a cache folder (cache_dir)")
    return cache


def _cache_prefix(root: Path, items: Sequence[Item], image_size: int, cache_dir: Path) -> str:
    # The name hashes the exact inputs: TF reuses any finished cache file of the same name.
    h = hashlib.sha1(f"{Path(root).resolve()}|{image_size}|{sorted(items)}".encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    prefix = cache_dir / f"decoded-{image_size}px-{h}"
    if not Path(f"{prefix}.index").exists():
        # A crash mid-epoch leaves a lock and partial shards that make TF refuse to write again.
        for stale in cache_dir.glob(f"{prefix.name}*"):
            stale.unlink(missing_ok=True)
    return str(prefix)


def build_dataset(
    root: Path,
    items: list[Item],
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    seed: int = 42,
    cache: str = "none",
    cache_budget_mb: int = 2048,
    cache_dir: Path | None = None,
    drop_remainder: bool = False,
) -> "tf.data.Dataset":
    """(float32 [B,S,S,3] with integer values 0..255, int32 [B]); shuffled each epoch when training.

    Decode+resize runs in parallel; the uint8 result is cached (memory or file) and cast to
    float32 per batch after the cache, so the cache holds 4x less. No augmentation here.
    """
    from edgecls.keras import tf

    ds = _decoded_dataset(root, items, image_size)
    mode = resolve_cache(len(items), image_size, cache, cache_budget_mb, cache_dir)
    if mode == "memory":
        ds = ds.cache()
    elif mode == "disk":
        ds = ds.cache(_cache_prefix(root, items, image_size, Path(cache_dir)))  # type: ignore[arg-type]
    if training:
        image_mb = image_size * image_size * 3 / 2**20
        buffer = len(items) if mode == "memory" else max(8 * batch_size, int(SHUFFLE_BUDGET_MB / image_mb))
        ds = ds.shuffle(min(len(items), buffer), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_images(root: Path, items: Sequence[Item], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N,S,S,3] and int32 [N], decoded and resized exactly as ``build_dataset`` does."""
    ds = _decoded_dataset(root, items, image_size).batch(64)
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs).astype(np.uint8), np.concatenate(ys).astype(np.int32)
