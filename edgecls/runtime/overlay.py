"""Draw the top-k labels, scores, FPS and inference time onto a frame (OpenCV, BGR)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgecls.runtime.scores import Category

OVERLAY_ROW_PX = 22  # line height of the text rows
OVERLAY_MARGIN_PX = 8
OVERLAY_WIDTH_PX = 300
FONT_SCALE = 0.55
BOX_ALPHA = 0.55  # how dark the panel behind the text is (0 = invisible)


def draw_overlay(
    bgr: np.ndarray,
    categories: Sequence[Category],
    *,
    fps: float,
    inference_ms: float,
) -> np.ndarray:
    """Draw in place on a BGR uint8 frame and return it.

    A dark translucent panel keeps the text readable on any background.
    """
    import cv2

    lines = [f"{c.label}: {c.score:.2f}" for c in categories] or ["(no label above threshold)"]
    lines.append(f"{fps:5.1f} FPS  {inference_ms:5.1f} ms")
    h, w = bgr.shape[:2]
    x1 = min(w, OVERLAY_MARGIN_PX * 2 + OVERLAY_WIDTH_PX)
    y1 = min(h, OVERLAY_MARGIN_PX * 2 + OVERLAY_ROW_PX * len(lines))
    panel = bgr[0:y1, 0:x1]
    # Darken in place (no full-frame copy): panel = panel * (1 - alpha).
    cv2.convertScaleAbs(panel, dst=panel, alpha=1.0 - BOX_ALPHA)
    for i, text in enumerate(lines):
        y = OVERLAY_MARGIN_PX + OVERLAY_ROW_PX * (i + 1) - 6
        colour = (80, 255, 80) if i == 0 and categories else (255, 255, 255)
        cv2.putText(bgr, text, (OVERLAY_MARGIN_PX, y), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, colour, 1, cv2.LINE_AA)
    return bgr
