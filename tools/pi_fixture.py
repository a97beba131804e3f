"""Make the small things the emulated-Pi check runs on: a tiny full-int8 model with its golden
set and labels, and a short video. Runs on the host (needs edgecls[train]).

    python tools/pi_fixture.py OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE_PX = 32
VIDEO_FRAMES = 24
VIDEO_FPS = 10


def main() -> None:
    import cv2
    import numpy as np

    from edgecls.core.keras import keras
    from edgecls.optimize.convert import convert_model
    from edgecls.runtime.golden import write_golden_set

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE_PX, SIZE_PX, 3))
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, SIZE_PX, SIZE_PX, 3), dtype=np.uint8)
    images[::2, :, :, 0] //= 4
    rep = rng.integers(0, 256, size=(32, SIZE_PX, SIZE_PX, 3)).astype(np.float32)
    tflite = out / "model_int8.tflite"
    tflite.write_bytes(convert_model(model, "int8", representative=rep))
    (out / "labels.txt").write_text("cat\ndog\nbird\n")
    write_golden_set(tflite, images, label_names=["cat", "dog", "bird"])
    writer = cv2.VideoWriter(str(out / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (160, 120))
    for i in range(VIDEO_FRAMES):
        frame = cv2.resize(images[i % len(images)], (160, 120), interpolation=cv2.INTER_NEAREST)
        writer.write(frame)
    writer.release()
    print(f"fixture in {out}")


if __name__ == "__main__":
    main()
