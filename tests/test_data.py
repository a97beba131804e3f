"""edgecls.data: scanning and validation, split, tf.data pipeline, class weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecls.data import (
    class_weights,
    inspect_dataset,
    load_split,
    make_split,
    resolve_cache,
    save_split,
    scan_dataset,
    stratified_sample,
)
from edgecls.core.errors import EdgeclsError
from edgecls.core.rundir import RunDir


def _write(path: Path, value: int = 0, size: tuple[int, int] = (20, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _class_tree(root: Path, counts: dict[str, int]) -> Path:
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _write(root / cls / f"{i:03d}.png", value=i)
    return root


# -- scanning ---------------------------------------------------------------------------------
def test_scan_accepts_what_tf_decodes_and_lists_every_skip(messy_data):
    root, expect = messy_data
    report = scan_dataset(root)
    assert report.layout == "classes"
    assert report.classes == ["good", "messy"]
    good = sorted(n for n, reason in expect.items() if reason is None)
    assert report.counts() == {"all": {"good": 4, "messy": len(good)}}
    assert sorted(Path(p).name for p, lab in report.files["all"] if lab == 1) == good
    skipped = {Path(p).name: reason for p, reason in report.skipped}
    assert set(skipped) == {n for n, r in expect.items() if r is not None}
    for name, reason in expect.items():
        if reason is not None:
            assert reason in skipped[name], (name, skipped[name])


def test_scan_without_decode_checks_signatures_only(messy_data):
    root, _ = messy_data
    report = inspect_dataset(root, decode=False)
    skipped = {Path(p).name for p, _ in report.skipped}
    # A truncated JPEG has a valid signature: only decoding finds it.
    assert "truncated.jpg" not in skipped
    assert {"zero.jpg", "notes.txt", "._x.jpg", "pic.tiff", "palette.bmp"} <= skipped


def test_gray_rgba_gif_cmyk_become_rgb(messy_data):
    from edgecls.data import load_images

    root, _ = messy_data
    names = ["gray.png", "rgba.png", "plain.bmp", "anim.gif", "cmyk.jpg", "ünï code name.jpg"]
    x, y = load_images(root, [(f"messy/{n}", 1) for n in names], 24)
    assert x.shape == (6, 24, 24, 3) and x.dtype == np.uint8 and y.dtype == np.int32
    gray, rgba, plain, gif, cmyk, uni = (v.astype(int) for v in x)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert gray.std() > 10  # a real picture, not a blank
    np.testing.assert_array_equal(rgba, plain)  # alpha dropped, colours kept
    # GIF: the first frame (the picture), not the second (its negative).
    assert np.abs(gif - plain).mean() < np.abs(gif - (255 - plain)).mean() / 3
    assert np.abs(cmyk - plain).mean() < 4 and np.abs(uni - plain).mean() < 4  # lossy JPEG


def test_splits_layout_used_as_given_and_val_doubles_as_test(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        _class_tree(tmp_path / split, {"cat": n, "dog": n})
    report = scan_dataset(tmp_path)
    assert report.layout == "splits"
    assert report.counts() == {"train": {"cat": 4, "dog": 4}, "val": {"cat": 2, "dog": 2}}
    split = make_split(report, val_fraction=0.3, test_fraction=0.3, seed=1)
    assert len(split["train"]) == 8 and split["test"] == split["val"] and len(split["val"]) == 4
    assert all(p.startswith("val/") for p, _ in split["test"])
    _class_tree(tmp_path / "test", {"cat": 1, "dog": 1})
    split = make_split(scan_dataset(tmp_path), val_fraction=0.3, test_fraction=0.3, seed=1)
    assert [p for p, _ in split["test"]] == ["test/cat/000.png", "test/dog/000.png"]


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"only": 2}, "at least 2 class folders"),
        ({}, "at least 2 class folders"),
        ({"a": 2, "b": 0}, "class 'b' has no usable images"),
        ({"train/a": 1, "train/b": 1}, "has train/ but no val/"),
        ({"train/a": 1, "train/b": 1, "val/a": 1, "val/c": 1}, "val/ lacks ['b']; val/ has extra ['c']"),
        ({"train/a": 1, "train/b": 1, "val/a": 1, "val/b": 0}, "class 'b' has no usable images in val/"),
    ],
)
def test_scan_errors(tmp_path, layout, message):
    _class_tree(tmp_path, layout)
    with pytest.raises(EdgeclsError, match=None) as e:
        scan_dataset(tmp_path, decode=False)
    assert message in str(e.value)


def test_class_emptied_by_skipping_is_an_error(tmp_path):
    _class_tree(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "zero.jpg").write_bytes(b"")
    with pytest.raises(EdgeclsError, match="class 'b' has no usable images .1 file.s. skipped"):
        scan_dataset(tmp_path, decode=False)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(EdgeclsError, match="data folder not found"):
        scan_dataset(tmp_path / "nope")


# -- split ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def split_scan(tmp_path_factory):
    root = _class_tree(tmp_path_factory.mktemp("split"), {"a": 20, "b": 7, "c": 3, "d": 2, "e": 1})
    return scan_dataset(root, decode=False)


def test_split_is_stratified_disjoint_and_deterministic(split_scan):
    split = make_split(split_scan, val_fraction=0.15, test_fraction=0.15, seed=3)
    per = {s: np.bincount([lab for _, lab in v], minlength=5).tolist() for s, v in split.items()}
    assert per == {"train": [14, 5, 1, 2, 1], "val": [3, 1, 1, 0, 0], "test": [3, 1, 1, 0, 0]}
    sets = [set(v) for v in split.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set().union(*sets) == set(split_scan.files["all"])
    assert make_split(split_scan, val_fraction=0.15, test_fraction=0.15, seed=3) == split
    assert make_split(split_scan, val_fraction=0.15, test_fraction=0.15, seed=4)["val"] != split["val"]


def test_split_rejects_bad_fractions(split_scan):
    with pytest.raises(EdgeclsError, match="leave some images for training"):
        make_split(split_scan, val_fraction=0.6, test_fraction=0.4, seed=0)


def test_save_and_load_split_round_trip(tmp_path, split_scan):
    run = RunDir(tmp_path / "run")
    split = make_split(split_scan, val_fraction=0.2, test_fraction=0.1, seed=5)
    save_split(run, split_scan, split, seed=5)
    root, loaded = load_split(run)
    assert root == split_scan.root.resolve() and loaded == split
    assert run.scan_json.is_file()
    with pytest.raises(EdgeclsError, match="split.json is missing"):
        load_split(RunDir(tmp_path / "other"))


def test_stratified_sample_spreads_over_classes(split_scan):
    items = split_scan.files["all"]
    sample = stratified_sample(items, 10, seed=0)
    # Round robin: every class once, then again while a class has images left (e has only 1).
    assert np.bincount([lab for _, lab in sample]).tolist() == [3, 2, 2, 2, 1]
    assert stratified_sample(items, 10, seed=0) == sample and len(set(sample)) == 10
    assert sorted(stratified_sample(items, 1000, seed=0)) == sorted(items)


# -- class weights and cache choice -----------------------------------------------------------
def test_class_weights():
    assert class_weights([0, 0, 0, 1, 1], 2) is None  # ratio 1.5: balanced enough
    w = class_weights([0] * 8 + [1] * 2 + [2] * 2, 3)
    assert w == pytest.approx({0: 12 / (3 * 8), 1: 12 / (3 * 2), 2: 12 / (3 * 2)})


def test_resolve_cache(tmp_path):
    assert resolve_cache(100, 32, "auto", 1, None) == "memory"  # 0.3 MB fits 1 MB
    assert resolve_cache(1000, 64, "auto", 1, tmp_path) == "disk"
    assert resolve_cache(1000, 64, "auto", 1, None) == "none"
    with pytest.raises(EdgeclsError, match="unknown cache mode"):
        resolve_cache(1, 32, "ram", 1, None)
    with pytest.raises(EdgeclsError, match="needs a cache folder"):
        resolve_cache(1, 32, "disk", 1, None)


# -- tf.data ----------------------------------------------------------------------------------
def _epoch(ds):
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(xs), np.concatenate(ys)


def test_dataset_shapes_values_and_stable_eval_order(synth_data):
    from edgecls.data import build_dataset, load_images

    items = scan_dataset(synth_data, decode=False).files["all"]
    ds = build_dataset(synth_data, items, image_size=32, batch_size=8, training=False, cache="memory")
    x, y = next(iter(ds))
    assert x.shape == (8, 32, 32, 3) and x.dtype.name == "float32" and y.dtype.name == "int32"
    xa, ya = _epoch(ds)
    assert xa.shape == (36, 32, 32, 3) and 0 <= xa.min() and xa.max() <= 255 and xa.max() > 200
    np.testing.assert_array_equal(xa, np.round(xa))  # uint8-valued floats
    xb, yb = _epoch(ds)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, [lab for _, lab in items])
    xl, yl = load_images(synth_data, items, 32)
    np.testing.assert_array_equal(xl.astype(np.float32), xa)
    np.testing.assert_array_equal(yl, ya)


def test_training_shuffles_each_epoch_reproducibly_with_disk_cache(synth_data, tmp_path):
    from edgecls.data import build_dataset

    items = scan_dataset(synth_data, decode=False).files["all"]

    def make():
        return build_dataset(synth_data, items, image_size=24, batch_size=10, training=True, seed=7,
                             cache="disk", cache_dir=tmp_path / "cache", drop_remainder=True)

    ds = make()
    x1, y1 = _epoch(ds)
    assert x1.shape == (30, 24, 24, 3)  # drop_remainder: 3 full batches of 10 out of 36
    assert list((tmp_path / "cache").glob("decoded-24px-*.index"))  # the file cache was written
    x2, _ = _epoch(ds)
    assert not np.array_equal(x1, x2)  # reshuffled
    x1_again, _ = _epoch(make())  # reads the finished cache file; same seed, same first epoch
    np.testing.assert_array_equal(x1, x1_again)
    assert y1.tolist() != sorted(y1.tolist())  # classes are mixed, not in folder order


def test_missing_root_at_build_time(tmp_path):
    from edgecls.data import build_dataset

    with pytest.raises(EdgeclsError, match="data folder not found"):
        build_dataset(tmp_path / "gone", [("a/x.jpg", 0)], image_size=8, batch_size=1, training=False)
