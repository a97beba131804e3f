"""A synthetic image set made to behave like a small real photo collection, for the training benchmarks.

On top of :mod:`edgecls.data.synth` (shapes and textures on gradient backgrounds, clutter lines and
blobs, pixel noise, JPEG artefacts) each image gets the lighting of a different room and camera:
overall gain, gamma, a colour cast and a vignette. A share of the *training* images carries a
wrong label (label noise, as in hand-sorted photos); val and test labels are clean. Written as
DATA/train|val|test/<class>/*.jpg so every recipe in a benchmark sees the very same split.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

GAIN = (0.55, 1.35)  # overall exposure
GAMMA = (0.7, 1.5)
CAST = 0.15  # per-channel gain spread (white balance)
VIGNETTE = (0.0, 0.5)  # darkening at the corners
LABEL_NOISE = 0.06  # share of training images filed under a wrong class


def _light(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(img, dtype=np.float32) / 255.0
    h, w = a.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2)) / np.sqrt(2)
    a = a ** rng.uniform(*GAMMA)
    a = a * rng.uniform(*GAIN) * (1 + rng.uniform(-CAST, CAST, 3))
    a = a * (1 - rng.uniform(*VIGNETTE) * r[..., None] ** 2)
    return Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8), "RGB")


def make_realistic_set(out: Path, *, classes: int = 5, per_class: int = 70, size: int = 192, seed: int = 0,
                       label_noise: float = LABEL_NOISE) -> dict:
    """Write the set; returns {"counts": {split: n}, "noisy_labels": n, "classes": [...]}."""
    from edgecls.data.synth import FAMILIES, _split_of, render_image

    out = Path(out)
    names = list(FAMILIES)[:classes]
    counts: dict[str, int] = {}
    noisy = 0
    for ci, name in enumerate(names):
        for i in range(per_class):
            rng = np.random.default_rng([seed, ci, i, 10])
            image, quality = render_image(name, rng, size)
            image = _light(image, rng)
            split = _split_of(i, per_class)
            label = name
            if split == "train" and rng.random() < label_noise:
                label = names[(ci + int(rng.integers(1, classes))) % classes]
                noisy += 1
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=quality)
            (folder / f"{name}_{i:04d}.jpg").write_bytes(buf.getvalue())
            counts[split] = counts.get(split, 0) + 1
    return {"counts": counts, "noisy_labels": noisy, "classes": names}
