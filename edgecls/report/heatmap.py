"""Heatmaps as pictures: resize, colour, blend over the photo, find the peak. Pure numpy (+ Pillow).

A heatmap here is a float array ``[h, w]`` in 0..1 (Grad-CAM's map, :mod:`edgecls.report.gradcam`),
at the resolution of the layer it came from. It covers the model's whole square input, and the
input is the photo squashed to a square (the project's one resize rule), so stretching the map to
any picture of the same photo, whatever its aspect, puts each cell back over the pixels it saw.
"""

from __future__ import annotations

import io

import numpy as np

OVERLAY_ALPHA = 0.45
"""Weight of the colour map over the photo: enough to read the map, the photo stays recognisable."""
COLD_SHARE = 1.0 / 3.0
"""Share of ``OVERLAY_ALPHA`` where the map is 0."""
THUMB_JPEG_QUALITY = 82
"""Small pictures on the page: ~3-6 KB each at 112 px."""

# Anchors of a "jet"-like map (blue -> cyan -> yellow -> red): cold where the class score does not
# depend on the region, hot where it does; readable on photos of any colour.
_ANCHORS = np.array([
    (0.00, 0, 0, 128),
    (0.15, 0, 0, 255),
    (0.40, 0, 255, 255),
    (0.65, 255, 255, 0),
    (0.90, 255, 0, 0),
    (1.00, 128, 0, 0),
], dtype=np.float64)


def _lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(x, _ANCHORS[:, 0], _ANCHORS[:, c]) for c in (1, 2, 3)], axis=1).astype(np.uint8)


COLOUR_LUT = _lut()
"""uint8 [256, 3]: heat 0..1 (in 256 steps) -> RGB."""


def normalise(cam: np.ndarray) -> np.ndarray:
    """Scale a non-negative map to 0..1 by its maximum; an all-zero map stays zero (nothing stands out)."""
    cam = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    top = float(cam.max()) if cam.size else 0.0
    return cam / top if top > 0 else np.zeros_like(cam)


def resize_heatmap(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 0..1 map to ``height x width`` (cell centres stay where they were)."""
    from PIL import Image

    h = np.asarray(heat, dtype=np.float32)
    img = Image.fromarray(h, mode="F").resize((int(width), int(height)), Image.BILINEAR)
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)


def colourise(heat: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[h, w, 3]`` of a 0..1 map."""
    idx = np.clip(np.rint(np.asarray(heat, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return COLOUR_LUT[idx]


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The photo (uint8 RGB ``[H, W, 3]``) with the map stretched over it, blended by up to ``alpha``.

    Cold regions get a third of the colour, hot ones all of it, so the photo stays readable where the
    model did not look and the hot regions stand out.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"overlay needs an RGB image [H, W, 3], got shape {img.shape}")
    up = resize_heatmap(heat, img.shape[0], img.shape[1])
    colour = colourise(up).astype(np.float32)
    a = (alpha * (COLD_SHARE + (1.0 - COLD_SHARE) * up))[..., None]
    out = (1.0 - a) * img.astype(np.float32) + a * colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def peak(heat: np.ndarray, height: int, width: int) -> tuple[int, int]:
    """(row, col) of the map's maximum, in pixels of a ``height x width`` picture of the same photo.

    Taken on the bilinearly resized map, so a peak between two hot cells lands between them
    rather than on the centre of one.
    """
    up = resize_heatmap(heat, height, width)
    r, c = np.unravel_index(int(np.argmax(up)), up.shape)
    return int(r), int(c)


def to_jpeg(image: np.ndarray, max_side: int = 0, quality: int = THUMB_JPEG_QUALITY) -> bytes:
    """JPEG bytes of a uint8 RGB image, shrunk (aspect kept) so its longer side is at most ``max_side`` (0: as is)."""
    from PIL import Image

    im = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB")
    if max_side and max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()
