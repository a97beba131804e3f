"""Write a short 640x480 video from a class-folder image set, for the camera-loop demo.

Each image is shown for a few frames on a noisy background, so the loop sees real content
that changes (and a classifier trained on the set has something to recognise).

    python tools/make_demo_video.py DATA OUT.mp4 [--frames 120] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

FRAME_W_PX, FRAME_H_PX = 640, 480
FRAMES_PER_IMAGE = 4
FPS = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    images = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    if not images:
        raise SystemExit(f"Error: no images under {args.data}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(args.out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (FRAME_W_PX, FRAME_H_PX))
    if not writer.isOpened():
        raise SystemExit(f"Error: OpenCV cannot write {args.out}")
    side = FRAME_H_PX - 40
    for i in range(args.frames):
        if i % FRAMES_PER_IMAGE == 0:
            img = cv2.imread(str(images[rng.integers(len(images))]))
            img = cv2.resize(img, (side, side), interpolation=cv2.INTER_LINEAR)
        frame = rng.integers(0, 60, (FRAME_H_PX, FRAME_W_PX, 3), dtype=np.uint8)
        x0 = (FRAME_W_PX - side) // 2
        frame[20 : 20 + side, x0 : x0 + side] = img
        writer.write(frame)
    writer.release()
    print(f"wrote {args.frames} frames ({FRAME_W_PX}x{FRAME_H_PX}) to {args.out}")


if __name__ == "__main__":
    main()
