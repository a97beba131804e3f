"""EXIF orientation: the one rule that turns a photo's stored pixels upright.

Phones store a portrait photo as landscape pixels plus an EXIF Orientation tag (1-8). TF's
``decode_image`` ignores the tag; OpenCV applies it for JPEG and PNG but, before 5.0, not for
WebP. So neither decoder is the rule: training (``data.scan.decode_image_file``, in the graph)
and the device (``runtime.sources``, in numpy) both read the tag here and apply the same
transform, whichever OpenCV the device has. Video and camera frames carry no EXIF.
"""

from __future__ import annotations

import os

import numpy as np

ORIENTATION_TAG = 0x0112  # EXIF "Orientation"
UPRIGHT = 1
ORIENTATIONS = range(1, 9)


def exif_orientation(path: str | os.PathLike) -> int:
    """The file's EXIF orientation (1..8); 1 when it has none, it is out of range, or unreadable.

    Reads the header only (PIL opens lazily), so scanning thousands of photos stays cheap.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            value = im.getexif().get(ORIENTATION_TAG, UPRIGHT)
    except Exception:  # noqa: BLE001 - a broken file is judged by the decoder, not here
        return UPRIGHT
    try:
        value = int(value)
    except (TypeError, ValueError):
        return UPRIGHT
    return value if value in ORIENTATIONS else UPRIGHT


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels [H, W, C] -> upright, as EXIF ``orientation`` asks (the TIFF/EXIF 2.3 table)."""
    a = pixels
    if orientation == 2:
        return a[:, ::-1]  # mirrored
    if orientation == 3:
        return a[::-1, ::-1]  # upside down
    if orientation == 4:
        return a[::-1]  # mirrored upside down
    if orientation == 5:
        return a.transpose(1, 0, 2)  # mirrored, rotated
    if orientation == 6:
        return np.rot90(a, k=-1)  # shot rotated: turn 90 degrees clockwise
    if orientation == 7:
        return a.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(a, k=1)  # turn 90 degrees counter-clockwise
    return a
