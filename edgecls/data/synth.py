"""A synthetic class-folder image set: learnable by a small CNN, not by colour alone.

Each class is a shape or texture family. Position, scale, rotation, foreground and background
colours, clutter (distractor lines and blobs), noise and JPEG quality are random per image and
drawn from the same distributions for every class, so only shape tells the classes apart.
Each image has its own seeded generator: the same seed writes byte-identical files.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_bytes

Draw = Callable[[Image.Image, np.random.Generator, tuple[int, int, int]], None]
SPLIT_SHARES = (("train", 0.7), ("val", 0.15), ("test", 0.15))  # for layout="splits"
JPEG_QUALITY = (50, 95)  # random per image: varied compression artefacts
NOISE_SIGMA = (0.0, 6.0)  # gaussian pixel noise, in 0..255 units


def _rot(points: np.ndarray, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    x, y = points[:, 0], points[:, 1]
    return list(zip((cx + c * x - s * y).tolist(), (cy + s * x + c * y).tolist()))


def _place(rng: np.random.Generator, size: int, lo: float = 0.12, hi: float = 0.3) -> tuple[float, float, float]:
    """(cx, cy, radius) fully inside the image."""
    r = size * rng.uniform(lo, hi)
    return rng.uniform(r, size - r), rng.uniform(r, size - r), r


def _count(rng: np.random.Generator) -> int:
    return int(rng.integers(1, 4))


def _circles(im: Image.Image, rng: np.random.Generator, fg: tuple[int, int, int]) -> None:
    d = ImageDraw.Draw(im)
    for _ in range(_count(rng)):
        cx, cy, r = _place(rng, im.width, 0.08, 0.22)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)


def _rings(im: Image.Image, rng: np.random.Generator, fg: tuple[int, int, int]) -> None:
    d = ImageDraw.Draw(im)
    for _ in range(_count(rng)):
        cx, cy, r = _place(rng, im.width, 0.1, 0.25)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fg, width=max(2, int(r * rng.uniform(0.2, 0.35))))


def _polygon_family(unit: np.ndarray, lo: float = 0.1, hi: float = 0.25) -> Draw:
    def draw(im: Image.Image, rng: np.random.Generator, fg: tuple[int, int, int]) -> None:
        d = ImageDraw.Draw(im)
        for _ in range(_count(rng)):
            cx, cy, r = _place(rng, im.width, lo, hi)
            d.polygon(_rot(unit * r, rng.uniform(0, 2 * math.pi), cx, cy), fill=fg)

    return draw


def _regular(n: int) -> np.ndarray:
    a = np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(a), np.sin(a)], 1)


def _star() -> np.ndarray:
    a = np.arange(10) * math.pi / 5
    rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.4)
    return np.stack([rad * np.cos(a), rad * np.sin(a)], 1)


def _cross() -> np.ndarray:
    w = 0.3
    return np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)])


def _texture_family(pattern: Callable[[np.ndarray, np.ndarray, float, np.random.Generator], np.ndarray]) -> Draw:
    """A rotated square patch filled with a two-colour pattern."""

    def draw(im: Image.Image, rng: np.random.Generator, fg: tuple[int, int, int]) -> None:
        side = int(im.width * rng.uniform(0.35, 0.6))
        period = side / rng.uniform(3, 6)
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
        on = pattern(xx, yy, period, rng)
        mask = Image.fromarray((on * 255).astype(np.uint8), "L")
        angle = float(rng.uniform(0, 360))
        mask = mask.rotate(angle, resample=Image.BILINEAR, expand=True)
        x0 = int(rng.integers(0, max(1, im.width - mask.width + 1)))
        y0 = int(rng.integers(0, max(1, im.height - mask.height + 1)))
        im.paste(Image.new("RGB", mask.size, fg), (x0, y0), mask)

    return draw


def _stripes(xx, yy, period, rng):
    return (xx % period) < period / 2


def _checker(xx, yy, period, rng):
    return ((xx // period) + (yy // period)) % 2 == 0


def _dots(xx, yy, period, rng):
    cx, cy = xx % period - period / 2, yy % period - period / 2
    return cx * cx + cy * cy < (period * 0.3) ** 2


def _waves(im: Image.Image, rng: np.random.Generator, fg: tuple[int, int, int]) -> None:
    d = ImageDraw.Draw(im)
    s = im.width
    for _ in range(int(rng.integers(1, 3))):
        amp, period = s * rng.uniform(0.05, 0.12), s * rng.uniform(0.15, 0.3)
        y0, phase, angle = rng.uniform(0.25, 0.75) * s, rng.uniform(0, 2 * math.pi), rng.uniform(0, math.pi)
        t = np.linspace(-0.5 * s, 0.5 * s, 60)
        pts = np.stack([t, amp * np.sin(2 * math.pi * t / period + phase)], 1)
        d.line(_rot(pts, angle, s / 2, y0), fill=fg, width=max(2, int(s * rng.uniform(0.03, 0.06))))


FAMILIES: dict[str, Draw] = {
    "circles": _circles,
    "triangles": _polygon_family(_regular(3), 0.12, 0.28),
    "stripes": _texture_family(_stripes),
    "checker": _texture_family(_checker),
    "rings": _rings,
    "crosses": _polygon_family(_cross(), 0.12, 0.26),
    "squares": _polygon_family(_regular(4), 0.1, 0.24),
    "stars": _polygon_family(_star(), 0.14, 0.3),
    "dots": _texture_family(_dots),
    "waves": _waves,
}
MAX_CLASSES = len(FAMILIES)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3)


def _far_colour(rng: np.random.Generator, other: np.ndarray) -> tuple[int, int, int]:
    # Same distribution for every class; only ask for enough contrast to see the shape.
    for _ in range(20):
        c = _colour(rng)
        if np.abs(c - other).sum() > 240:
            break
    return tuple(int(v) for v in c)  # type: ignore[return-value]


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    # A gentle gradient: strong enough to defeat colour rules, weak enough to keep the shape visible.
    a = _colour(rng).astype(np.float32)
    b = np.clip(a + rng.uniform(-60, 60, 3), 0, 255)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(1, size - 1)
    t = np.clip((math.cos(theta) * (xx - 0.5) + math.sin(theta) * (yy - 0.5)) + 0.5, 0, 1)[..., None]
    return Image.fromarray((a * (1 - t) + b * t).astype(np.uint8), "RGB")


def _clutter(im: Image.Image, rng: np.random.Generator) -> None:
    """Distractors shared by all classes: thin lines and irregular blobs."""
    d = ImageDraw.Draw(im)
    s = im.width
    for _ in range(int(rng.integers(1, 4))):
        p = rng.uniform(0, s, 4)
        d.line(p.tolist(), fill=tuple(int(v) for v in _colour(rng)), width=max(1, int(s * rng.uniform(0.005, 0.015))))
    for _ in range(int(rng.integers(0, 3))):
        cx, cy, r = _place(rng, s, 0.03, 0.08)
        n = int(rng.integers(5, 9))
        a = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = rng.uniform(0.5, 1.0, n) * r
        pts = np.stack([rad * np.cos(a), rad * np.sin(a)], 1)
        d.polygon(_rot(pts, 0.0, cx, cy), fill=tuple(int(v) for v in _colour(rng)))


def render(family: str, rng: np.random.Generator, size: int) -> bytes:
    """One JPEG of the given family."""
    image, quality = render_image(family, rng, size)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def render_image(family: str, rng: np.random.Generator, size: int) -> tuple[Image.Image, int]:
    """One RGB image of the given family, and the JPEG quality drawn for it."""
    bg = _background(rng, size)
    _clutter(bg, rng)
    fg = _far_colour(rng, np.asarray(bg).reshape(-1, 3).mean(0))
    FAMILIES[family](bg, rng, fg)
    if rng.random() < 0.3:  # sometimes clutter also crosses the shape
        _clutter(bg, rng)
    arr = np.asarray(bg, dtype=np.float32)
    arr = arr + rng.normal(0, rng.uniform(*NOISE_SIGMA), arr.shape)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return out, int(rng.integers(*JPEG_QUALITY))


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse to write into a non-empty folder unless forced (a user's data may be there)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgeclsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise EdgeclsError(f"{out} is not empty; choose another folder or pass --force to write into it")


def write_synthetic_dataset(
    out: Path, *, classes: int = 4, per_class: int = 50, size: int = 128, seed: int = 0, layout: str = "classes"
) -> dict:
    """Write ``classes`` x ``per_class`` JPEGs as OUT/<class>/ (or OUT/train|val|test/<class>/).

    Files of the same name are overwritten; callers that must not overwrite use ``check_out_dir``.
    Returns a summary dict (out, classes, per_class, size, seed, layout, files, counts, seconds).
    """
    if not isinstance(seed, int) or seed < 0:
        raise EdgeclsError(f"seed must be an integer >= 0, got {seed}")
    if not 2 <= classes <= MAX_CLASSES:
        raise EdgeclsError(f"classes must be between 2 and {MAX_CLASSES}, got {classes}")
    if per_class < 1 or size < 16:
        raise EdgeclsError(f"per_class must be >= 1 and size >= 16 (got {per_class}, {size})")
    if layout not in ("classes", "splits"):
        raise EdgeclsError(f"layout must be 'classes' or 'splits', got {layout!r}")
    t0 = time.perf_counter()
    out = Path(out)
    names = list(FAMILIES)[:classes]
    counts: dict[str, dict[str, int]] = {}
    for ci, name in enumerate(names):
        for i in range(per_class):
            split = _split_of(i, per_class) if layout == "splits" else "all"
            folder = out / name if layout == "classes" else out / split / name
            rng = np.random.default_rng([seed, ci, i])
            atomic_write_bytes(folder / f"{name}_{i:04d}.jpg", render(name, rng, size))
            counts.setdefault(split, {}).setdefault(name, 0)
            counts[split][name] += 1
    return {
        "out": str(out),
        "classes": sorted(names),
        "per_class": per_class,
        "size": size,
        "seed": seed,
        "layout": layout,
        "files": classes * per_class,
        "counts": counts,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _split_of(i: int, n: int) -> str:
    """Deterministic 70/15/15 by index (the per-image seed already randomises the content)."""
    n_val = max(1, round(n * SPLIT_SHARES[1][1])) if n >= 3 else 0
    n_test = max(1, round(n * SPLIT_SHARES[2][1])) if n >= 3 else 0
    if i < n - n_val - n_test:
        return "train"
    return "val" if i < n - n_test else "test"
