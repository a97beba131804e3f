"""``edgecls explain``: Grad-CAM over a user's own photos, written as pictures beside an index.

The photos go through the run's own rules (:func:`edgecls.data.load_images`: EXIF upright, squashed
to the square input, resized as in training), so the map is of exactly what the model decides on.
Each map is then stretched over the upright photo at a viewable size: the squash is a plain
scaling, so every cell lands back on the part of the photo it saw.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes, atomic_write_text
from edgecls.core.rundir import RunDir
from edgecls.data.scan import SUPPORTED
from edgecls.report.heatmap import overlay, to_jpeg
from edgecls.core.config import ExplainConfig

EXPLAIN_SIDE_PX = 480
"""Longer side of a written overlay: big enough to see what lit up, small enough to mail."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
OUT_SUFFIX = ".cam.jpg"
INDEX_NAME = "explain.json"
BAND_PX = 18
"""Height of the caption band drawn on top of each overlay."""


@dataclass
class Explained:
    """One photo: where its overlay went and what the model said."""

    image: str
    out: str
    label: str
    score: float
    runner_up: str
    runner_up_score: float


def find_images(path: Path) -> list[Path]:
    """The photos to explain: ``path`` itself, or the image files under the folder ``path`` (sorted; hidden
    files and earlier overlays skipped)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise EdgeclsError(f"image or folder not found: {path}")
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts)
                   and not p.name.endswith(OUT_SUFFIX))
    if not found:
        raise EdgeclsError(f"no images in {path} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found


def check_explain_args(cfg: ExplainConfig) -> tuple[RunDir, Path]:
    """Everything that can be checked before TensorFlow loads: (the run, the output folder)."""
    run = RunDir.open(cfg.run)
    if not run.model_path.is_file():
        raise EdgeclsError(f"{run.model_path} is missing; train the run first ('edgecls train')")
    if not Path(cfg.images).exists():
        raise EdgeclsError(f"image or folder not found: {cfg.images}")
    folder = Path(cfg.out) if cfg.out else run.explain_dir
    if folder.exists() and not folder.is_dir():
        raise EdgeclsError(f"--out {folder} is a file; give a folder for the overlays")
    return run, folder


def _decode(path: Path) -> np.ndarray:
    """The photo upright, uint8 RGB at full size; one clear error if TensorFlow's decoder refuses it."""
    from edgecls.core.keras import tf
    from edgecls.core.orientation import exif_orientation
    from edgecls.data import decode_image_file

    try:
        return decode_image_file(tf.constant(str(path)), exif_orientation(path)).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, ValueError):
        raise EdgeclsError(f"{path} is not an image edgecls can read ({_why_unreadable(path)}); "
                           f"use {SUPPORTED}") from None


def _why_unreadable(path: Path) -> str:
    """Pillow's word on a file TensorFlow refused (TF's own message names graph nodes, not the file's problem)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return f"{im.format} {im.mode} is not decoded by TensorFlow"
    except Exception as err:  # noqa: BLE001 - any reason Pillow gives is the one to show
        return (str(err).strip().splitlines() or [type(err).__name__])[0][:120]


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    """The overlay with a dark band on top holding ``text`` (the answer travels with the picture)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    band = Image.new("RGB", (im.width, BAND_PX), (20, 20, 20))
    ImageDraw.Draw(band).text((4, 3), text, fill=(255, 255, 255))
    out = Image.new("RGB", (im.width, im.height + BAND_PX))
    out.paste(band, (0, 0))
    out.paste(im, (0, BAND_PX))
    return np.asarray(out)


def explain(cfg: ExplainConfig, *, log: Callable[[str], None] = lambda s: None) -> list[Explained]:
    """Write ``<out>/<photo>.cam.jpg`` for each photo (``out`` default: RUN/explain/) and ``explain.json``.

    A folder's unreadable files are skipped with a line each; a single unreadable photo, or a folder
    with none readable, raises :class:`EdgeclsError`.

    >>> explain(ExplainConfig(run="runs/flowers", images="hard_cases/"), log=print)   # doctest: +SKIP
    """
    run, folder = check_explain_args(cfg)
    images = Path(cfg.images)
    files = find_images(images)
    root = images if images.is_dir() else images.parent
    decoded: list[tuple[Path, np.ndarray]] = []
    for f in files:
        try:
            decoded.append((f, _decode(f)))
        except EdgeclsError as err:
            if len(files) == 1:
                raise
            log(f"skipped: {err}")
    if not decoded:
        raise EdgeclsError(f"none of the {len(files)} images in {images} could be read")
    from edgecls import data
    from edgecls.report.gradcam import GradCam
    from edgecls.train.model_io import load_model

    size, labels = run.train_config().size, run.read_labels()
    x, _ = data.load_images(root, [(str(f.relative_to(root)), 0) for f, _ in decoded], size)
    cam = GradCam(load_model(run.model_path), cfg.layer)
    heats, probs = cam.maps(x)
    targets = _targets([f for f, _ in decoded], root, folder)
    done = []
    for (f, photo), heat, p, target in zip(decoded, heats, probs, targets):
        order = np.argsort(p)[::-1]
        top, second = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
        scale = min(1.0, EXPLAIN_SIDE_PX / max(photo.shape[:2]))
        shown = np.asarray(_shrink(photo, scale))
        picture = _caption(overlay(shown, heat), f"{labels[top]} {p[top]:.2f}   ({labels[second]} {p[second]:.2f})")
        atomic_write_bytes(target, to_jpeg(picture, quality=90))
        done.append(Explained(str(f), str(target), labels[top], round(float(p[top]), 4), labels[second],
                              round(float(p[second]), 4)))
        log(f"{f}: {labels[top]} {p[top]:.2f} (then {labels[second]} {p[second]:.2f}) -> {target}")
    atomic_write_text(folder / INDEX_NAME, json.dumps({"run": str(run.path.resolve()), "layer": cam.layer_path,
                                                       "images": [asdict(d) for d in done]}, indent=2) + "\n")
    return done


def _targets(files: list[Path], root: Path, folder: Path) -> list[Path]:
    """OUT/<path under the input folder, less its suffix>.cam.jpg; two photos that would share a name
    (a.jpg, a.png) keep their suffix in it."""
    plain = [folder / f.relative_to(root).with_name(f.stem + OUT_SUFFIX) for f in files]
    taken = {t: plain.count(t) for t in plain}
    return [t if taken[t] == 1 else folder / f.relative_to(root).with_name(f.name + OUT_SUFFIX)
            for t, f in zip(plain, files)]


def _shrink(photo: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    if scale >= 1.0:
        return photo
    im = Image.fromarray(photo)
    return np.asarray(im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS))
