"""Does Grad-CAM on the real backbone follow the object? MobileNetV2 from pretrained weights, squares vs discs.

    python tools/bench_gradcam.py --weights ../shared/pretrained/mobilenet_v2_1.0_160_no_top.h5 [--seeds 0,1,2]

For each seed: draws ``--train`` images of a bright square or disc at a random place on a noisy plain
background (the generator of tests/test_report_gradcam.py, scaled to 160 px), builds edgecls's own
classifier (:func:`edgecls.train.backbones.build_classifier`, MobileNetV2 1.0 at 160 px, the weights
file), trains its head on the frozen backbone, and on ``--test`` new images reports the accuracy and
the share of right answers whose heatmap (:class:`edgecls.report.gradcam.GradCam`, ``backbone/out_relu``,
5x5) peaks inside the shape's box grown by ``--margin`` pixels. The unit test does the same with a
small conv net (16x16 map); this is the check on the map the report really draws, which is coarse:
one cell is 32 px here. Prints one JSON object; wall-clock time is the machine's (shared VMs vary).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZE_PX = 160


def shapes(n: int, seed: int, size: int = SIZE_PX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images, labels 0 square / 1 disc, boxes y0, x0, y1, x1): side a fifth to a third of the image."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    labels = rng.integers(0, 2, n)
    boxes = np.empty((n, 4), np.int64)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        img = rng.normal(rng.uniform(30, 110), 18, (size, size, 3))
        side = int(rng.integers(size * 14 // 64, size * 22 // 64))
        y0, x0 = (int(v) for v in rng.integers(0, size - side, 2))
        if labels[i] == 0:
            mask = (yy >= y0) & (yy < y0 + side) & (xx >= x0) & (xx < x0 + side)
        else:
            r = side / 2
            mask = (yy + 0.5 - y0 - r) ** 2 + (xx + 0.5 - x0 - r) ** 2 <= r * r
        img[mask] = rng.uniform(190, 250, 3)
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
        boxes[i] = (y0, x0, y0 + side - 1, x0 + side - 1)
    return images, labels, boxes


def hot_cell_hits(heat: np.ndarray, box: np.ndarray, size: int = SIZE_PX) -> bool:
    """Whether the map's hottest cell covers part of the box: the finest claim a coarse map makes."""
    h, w = heat.shape
    i, j = np.unravel_index(int(np.argmax(heat)), heat.shape)
    y0, x0, y1, x1 = box
    top, left = i * size / h, j * size / w
    return top <= y1 and top + size / h > y0 and left <= x1 and left + size / w > x0


def one_seed(seed: int, weights: str, n_train: int, n_test: int, epochs: int, margin: int,
             layer: str | None) -> dict:
    from edgecls.core.keras import keras
    from edgecls.report.gradcam import GradCam
    from edgecls.report.heatmap import peak
    from edgecls.train.backbones import BackboneChoice, build_classifier, get_backbone

    keras.utils.set_random_seed(seed)
    x, y, _ = shapes(n_train, seed=100 + seed)
    model = build_classifier(BackboneChoice("mobilenet_v2", size=SIZE_PX, alpha=1.0, weights=weights), 2)
    get_backbone(model).trainable = False
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    model.fit(x.astype(np.float32), y, epochs=epochs, batch_size=32, verbose=0)
    fit_s = time.perf_counter() - t
    xt, yt, boxes = shapes(n_test, seed=200 + seed)
    t = time.perf_counter()
    cam = GradCam(model, layer)
    heats, probs = cam.maps(xt)
    cam_s = time.perf_counter() - t
    right = probs.argmax(1) == yt
    inside = [y0 - margin <= r <= y1 + margin and x0 - margin <= c <= x1 + margin
              for h, (y0, x0, y1, x1) in zip(heats[right], boxes[right]) for r, c in [peak(h, SIZE_PX, SIZE_PX)]]
    hits = [hot_cell_hits(h, b) for h, b in zip(heats[right], boxes[right])]
    cell = SIZE_PX / heats.shape[1]
    # Chance of the cell claim: a cell placed at random overlaps a box of side s with probability ~((s + cell)/size)^2.
    cell_chance = float(np.mean([min(1.0, ((b[2] - b[0] + 1 + cell) / SIZE_PX) * ((b[3] - b[1] + 1 + cell) / SIZE_PX))
                                 for b in boxes]))
    box_share = float(np.mean([(b[2] - b[0] + 1 + 2 * margin) * (b[3] - b[1] + 1 + 2 * margin) for b in boxes])
                      / SIZE_PX ** 2)
    return {"seed": seed, "layer": cam.layer_path, "map": list(heats.shape[1:]), "accuracy": round(float(right.mean()), 4),
            "peak_inside": round(float(np.mean(inside)), 4) if inside else None, "right": int(right.sum()),
            "chance": round(box_share, 4),
            "hot_cell_on_shape": round(float(np.mean(hits)), 4) if hits else None, "hot_cell_chance": round(cell_chance, 4),
            "fit_s": round(fit_s, 1), "gradcam_s": round(cam_s, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="no-top MobileNetV2 1.0 160 px weights file")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--margin", type=int, default=5, help="pixels the box grows on each side (1/6 of a 32 px cell)")
    ap.add_argument("--layer", default=None, help="another map than the report's (e.g. backbone/block_13_expand_relu)")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    results = [one_seed(int(s), args.weights, args.train, args.test, args.epochs, args.margin, args.layer)
               for s in args.seeds.split(",")]
    print(json.dumps({"results": results, "train": args.train, "test": args.test, "epochs": args.epochs,
                      "margin_px": args.margin, "loadavg_before": load, "loadavg_after": os.getloadavg(),
                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
