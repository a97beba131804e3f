"""One decode rule: EXIF orientation and the resize rule agree between training and the device.

Training decodes with TensorFlow (``data.load_images``: the very path of the tf.data pipeline,
calibration and parity); the device reads files with ``runtime.sources`` (OpenCV) and resizes
with ``runtime.classifier.resize_squash``. The reference for "upright" is Pillow's own
``ImageOps.exif_transpose``, independent of both.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from edgecls.core.orientation import apply_orientation, exif_orientation
from edgecls.runtime.classifier import resize_squash
from edgecls.runtime.sources import open_source

pytest.importorskip("cv2")

# Pillow's name for the transform that makes each stored orientation upright (EXIF 2.3 table).
PIL_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Storing: the inverse of the upright transform (6 and 8 undo each other, the rest undo themselves).
PIL_STORE = {o: PIL_UPRIGHT[{6: 8, 8: 6}.get(o, o)] for o in PIL_UPRIGHT}
JPEG_TOLERANCE_MEAN = 2.0  # grey levels: two JPEG decoders (libjpeg-turbo builds) on smooth content
SIZE_PX = 32


def upright_scene(h: int = 48, w: int = 64) -> np.ndarray:
    """Smooth (JPEG keeps it) and asymmetric on both axes, so any wrong flip or turn shows."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 255 * xx / (w - 1)
    g = 255 * yy / (h - 1)
    b = 128 + 100 * np.sin(xx / 9.0) * (yy / h)
    return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


def write_oriented(path, upright: np.ndarray, orientation: int, fmt: str = "JPEG") -> None:
    """The pixels stored sideways/mirrored as a phone does, with the EXIF tag that undoes it."""
    im = Image.fromarray(upright)
    if orientation != 1:
        im = im.transpose(PIL_STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    kwargs = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    im.save(path, fmt, exif=exif.tobytes(), **kwargs)


def device_read(path) -> np.ndarray:
    with open_source(str(path)) as src:
        ok, frame = src.read()
    assert ok
    return frame


@pytest.fixture(scope="module")
def oriented_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("oriented")
    (root / "a").mkdir()
    scene = upright_scene()
    for o in range(1, 9):
        write_oriented(root / "a" / f"o{o}.jpg", scene, o)
    return root, scene


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_is_upright_in_training_and_on_the_device(oriented_folder, orientation):
    from edgecls.core.keras import tf
    from edgecls.data import decode_image_file, load_images
    from edgecls.data.scan import orientations

    root, scene = oriented_folder
    path = root / "a" / f"o{orientation}.jpg"
    stored = np.asarray(Image.open(path).convert("RGB"))
    if orientation >= 5:
        assert stored.shape[:2] == scene.shape[1::-1]  # really stored sideways
    pil = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert exif_orientation(path) == orientation

    # Full size: the pipeline's decoder (orientation passed in, and read by itself) and the device.
    train_full = decode_image_file(tf.constant(str(path)), tf.constant(orientations(root, [f"a/o{orientation}.jpg"])[0]))
    train_full_self = decode_image_file(tf.constant(str(path)))
    device_full = device_read(path)
    for got in (train_full.numpy(), train_full_self.numpy(), device_full):
        assert got.shape == scene.shape
        assert np.abs(got.astype(int) - pil.astype(int)).mean() < JPEG_TOLERANCE_MEAN
    # Wrongly oriented would be far off: proves the tolerance can tell.
    if orientation != 1:
        wrong = np.asarray(Image.fromarray(stored).resize(scene.shape[1::-1]))
        assert np.abs(wrong.astype(int) - pil.astype(int)).mean() > 10 * JPEG_TOLERANCE_MEAN

    # At input size, through the path training, calibration and parity use, against the device's.
    x, _ = load_images(root, [(f"a/o{orientation}.jpg", 0)], SIZE_PX)
    device = resize_squash(device_full, SIZE_PX, SIZE_PX)
    assert np.abs(x[0].astype(int) - device.astype(int)).mean() < JPEG_TOLERANCE_MEAN


@pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("WEBP", "webp")])
def test_png_and_webp_follow_the_same_rule(tmp_path, fmt, suffix):
    """OpenCV 4.x ignores WebP's EXIF: the device must not depend on which OpenCV it has."""
    from edgecls.data import load_images

    (tmp_path / "a").mkdir()
    scene = upright_scene()
    write_oriented(tmp_path / "a" / f"o6.{suffix}", scene, 6, fmt)
    device = device_read(tmp_path / "a" / f"o6.{suffix}")
    np.testing.assert_array_equal(device, scene)  # lossless: exact
    x, _ = load_images(tmp_path, [(f"a/o6.{suffix}", 0)], SIZE_PX)
    assert np.abs(x[0].astype(int) - resize_squash(device, SIZE_PX, SIZE_PX).astype(int)).mean() < 1.0


def test_numpy_rule_matches_pillow_for_all_orientations():
    scene = upright_scene(5, 7)
    for o, method in PIL_UPRIGHT.items():
        stored = np.asarray(Image.fromarray(scene).transpose(PIL_STORE[o]))
        np.testing.assert_array_equal(apply_orientation(stored, o), scene)
        np.testing.assert_array_equal(np.asarray(Image.fromarray(stored).transpose(method)), scene)


def test_a_missing_or_broken_tag_means_upright(tmp_path):
    Image.fromarray(upright_scene()).save(tmp_path / "plain.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff not really")
    write_oriented(tmp_path / "bad.jpg", upright_scene(), 1)
    im = Image.open(tmp_path / "bad.jpg")
    exif = im.getexif()
    exif[0x0112] = 42  # out of range: ignored, as viewers do
    im.save(tmp_path / "bad42.jpg", exif=exif.tobytes())
    assert [exif_orientation(tmp_path / n) for n in ("plain.jpg", "junk.jpg", "bad42.jpg")] == [1, 1, 1]


def test_data_check_lists_the_files_it_turns_upright(oriented_folder, tmp_path):
    import shutil

    from edgecls.data import inspect_dataset

    root, _ = oriented_folder
    data = tmp_path / "data"
    shutil.copytree(root / "a", data / "a")
    shutil.copytree(root / "a", data / "b")
    report = inspect_dataset(data)
    assert report.n_usable == 16 and not report.skipped
    assert report.to_dict()["exif_oriented"] == [f"{c}/o{o}.jpg" for c in "ab" for o in range(2, 9)]
    from click.testing import CliRunner

    from edgecls.cli import cli

    result = CliRunner().invoke(cli, ["data", "check", str(data)])
    assert result.exit_code == 0, result.output
    assert ("14 photo(s) carry an EXIF orientation: turned upright for training, as on the device "
            "(listed in --json).") in result.output


# -- the resize rule at real camera sizes (not exact multiples of the input size) ----------------
def camera_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A camera-like frame: smooth shading, edges and fine texture (the hard part for resizing)."""
    from edgecls.data.synth import render_image

    rng = np.random.default_rng(seed)
    im, _ = render_image("stripes", rng, max(h, w))
    base = np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR)).astype(np.float32)
    noise = rng.normal(0, 6, size=base.shape)  # sensor noise
    return (base + noise).clip(0, 255).astype(np.uint8)


# Measured with these frames (docs/data.md): mean 0.88 / 0.77, max 22 / 25 grey levels (on edges);
# a nearest-neighbour resize is off by a mean of ~6.5, so the bound below still tells rules apart.
RESIZE_MEAN_MAX = 1.5
RESIZE_PIXEL_MAX = 40


@pytest.mark.parametrize("h, w, size", [(480, 640, 224), (720, 1280, 160)])
def test_resize_rule_agrees_on_camera_sizes(tmp_path, h, w, size):
    from edgecls.data import load_images

    (tmp_path / "a").mkdir()
    frame = camera_frame(h, w)
    Image.fromarray(frame).save(tmp_path / "a" / "frame.png")  # lossless: only the resize differs
    x, _ = load_images(tmp_path, [("a/frame.png", 0)], size)
    device = resize_squash(device_read(tmp_path / "a" / "frame.png"), size, size)
    diff = np.abs(x[0].astype(int) - device.astype(int))
    print(f"{w}x{h} -> {size}: mean {diff.mean():.3f}, max {diff.max()}")
    assert device.shape == x[0].shape == (size, size, 3)
    assert diff.mean() < RESIZE_MEAN_MAX and diff.max() <= RESIZE_PIXEL_MAX
    # A different rule (here: nearest neighbour) would be caught.
    import cv2

    nearest = cv2.resize(frame, (size, size), interpolation=cv2.INTER_NEAREST)
    assert np.abs(x[0].astype(int) - nearest.astype(int)).mean() > 2 * RESIZE_MEAN_MAX


def test_the_pipeline_reads_each_orientation_once_not_per_epoch(oriented_folder, monkeypatch):
    """The tag is read while the dataset is built; epochs run the transform in the graph only."""
    import edgecls.data.scan as scan
    from edgecls.data import build_dataset

    calls = []
    real = scan.exif_orientation
    monkeypatch.setattr(scan, "exif_orientation", lambda p: calls.append(p) or real(p))
    root, _ = oriented_folder
    items = [(f"a/o{o}.jpg", 0) for o in range(1, 9)]
    ds = build_dataset(root, items, image_size=SIZE_PX, batch_size=4, training=True, cache="none")
    assert len(calls) == len(items)
    for _ in range(2):
        assert sum(len(y) for _, y in ds) == len(items)
    assert len(calls) == len(items)
