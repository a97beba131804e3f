"""edgecls.data.synth: deterministic, laid out as asked, and not separable by mean colour."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgecls.core.errors import EdgeclsError
from edgecls.data.synth import FAMILIES, check_out_dir, write_synthetic_dataset


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", classes=3, per_class=4, size=40, seed=5)
    write_synthetic_dataset(tmp_path / "b", classes=3, per_class=4, size=40, seed=5)
    write_synthetic_dataset(tmp_path / "c", classes=3, per_class=4, size=40, seed=6)
    fa, fb, fc = (_files(tmp_path / n) for n in "abc")
    assert fa == fb and len(fa) == 12 == a["files"]
    assert fa.keys() == fc.keys() and all(fa[k] != fc[k] for k in fa)
    assert a["classes"] == sorted(list(FAMILIES)[:3]) and a["counts"] == {"all": {c: 4 for c in list(FAMILIES)[:3]}}
    with Image.open(next(iter((tmp_path / "a").rglob("*.jpg")))) as im:
        assert im.format == "JPEG" and im.size == (40, 40) and im.mode == "RGB"


def test_splits_layout_70_15_15(tmp_path):
    s = write_synthetic_dataset(tmp_path, classes=2, per_class=20, size=32, seed=0, layout="splits")
    assert {k: sorted(v.values()) for k, v in s["counts"].items()} == {"train": [14, 14], "val": [3, 3], "test": [3, 3]}
    assert len(list((tmp_path / "val" / "circles").glob("*.jpg"))) == 3


def test_mean_colour_cannot_tell_the_classes_apart(tmp_path):
    n_cls, per = 4, 40
    write_synthetic_dataset(tmp_path, classes=n_cls, per_class=per, size=48, seed=0)
    feats, labels = [], []
    for ci, name in enumerate(sorted(p.name for p in tmp_path.iterdir())):
        for f in sorted((tmp_path / name).glob("*.jpg")):
            feats.append(np.asarray(Image.open(f), dtype=np.float32).reshape(-1, 3).mean(0))
            labels.append(ci)
    x, y = np.asarray(feats), np.asarray(labels)
    # Nearest class mean on mean RGB, fitted on half and scored on the other half.
    train = np.arange(len(y)) % 2 == 0
    centroids = np.stack([x[train & (y == c)].mean(0) for c in range(n_cls)])
    pred = np.argmin(((x[~train, None, :] - centroids[None]) ** 2).sum(-1), 1)
    accuracy = (pred == y[~train]).mean()
    assert accuracy < 0.45, accuracy  # chance is 0.25
    # ... and the per-class mean colours overlap: each class's spread dwarfs the distance between classes.
    spread = np.mean([x[y == c].std(0).mean() for c in range(n_cls)])
    assert np.ptp(centroids, axis=0).max() < spread
    # The images are not blank: each varies inside itself (shapes, clutter, noise).
    assert all(np.asarray(Image.open(f)).std() > 10 for f in list(tmp_path.rglob("*.jpg"))[:10])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classes": 1}, "classes must be between 2 and 10"),
        ({"classes": len(FAMILIES) + 1}, "classes must be between 2 and 10"),
        ({"per_class": 0}, "per_class must be >= 1"),
        ({"layout": "flat"}, "layout must be"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(EdgeclsError, match=message):
        write_synthetic_dataset(tmp_path, **kwargs)


def test_refuses_non_empty_out_without_force(tmp_path):
    check_out_dir(tmp_path / "new", force=False)
    check_out_dir(tmp_path, force=False)  # empty is fine
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(EdgeclsError, match="not empty"):
        check_out_dir(tmp_path, force=False)
    check_out_dir(tmp_path, force=True)


def test_cli_limit_matches_the_families():
    from edgecls.cli.data import MAX_SYNTH_CLASSES

    assert MAX_SYNTH_CLASSES == len(FAMILIES) == 10
