"""A CSV-labelled, imbalanced set: train with oversampling (interrupted, resumed without the CSV),
export, and pass parity with the default gates, from the CLI as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecls.cli import cli

SIZE_PX = 32
# Clearly separable: one flat colour per class with a little pixel noise. Imbalanced: 24 / 8 / 12.
COLOURS = {"red": ((200, 40, 40), 24), "green": ((40, 190, 60), 8), "blue": ((40, 60, 200), 12)}
NOISE = 2  # +- grey levels per pixel


def _write_set(root: Path) -> Path:
    """DATA/pics/<n>.png (no class folders) and a CSV elsewhere naming each file's colour."""
    rng = np.random.default_rng(7)
    (root / "data" / "pics").mkdir(parents=True)
    rows, n = ["image_name,label"], 0
    for name, (rgb, count) in COLOURS.items():
        for _ in range(count):
            px = np.clip(np.array(rgb) + rng.integers(-NOISE, NOISE + 1, (SIZE_PX, SIZE_PX, 3)), 0, 255)
            Image.fromarray(px.astype(np.uint8)).save(root / "data" / "pics" / f"{n:03d}.png")
            rows.append(f"pics/{n:03d}.png,{name}")
            n += 1
    csv_path = root / "lists" / "labels.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path


@pytest.mark.slow
def test_csv_set_trains_with_oversampling_resumes_exports_and_passes_parity(tmp_path):
    from edgecls.core.config import TrainConfig
    from edgecls.core.keras import keras
    from edgecls.train.fit import train

    csv_path = _write_set(tmp_path)
    data, out = tmp_path / "data", tmp_path / "run"
    # MobileNetV3-Small minimalistic: the cheapest backbone to trace; the CSV path does not care.
    cfg = TrainConfig(data=str(data), labels_csv=str(csv_path), out=str(out), balance="oversample",
                      backbone="mobilenet_v3_small", minimalistic=True, alpha=0.35, size=SIZE_PX, weights="none", epochs=4, fine_tune_epochs=0, batch_size=16,
                      learning_rate=3e-2, dropout=0.0, augment=False, cache="memory", seed=0)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[Interrupt()], verbose=0)
    # The run holds the same split/scan/labels contract as for folders; resume does not need the CSV.
    split = json.loads((out / "split.json").read_text())
    assert split["root"] == str(data.resolve()) and split["layout"] == "classes"
    assert split["classes"] == ["blue", "green", "red"]
    assert all(rel.startswith("pics/") for rel, _ in split["train"])
    assert json.loads((out / "scan.json").read_text())["labels_csv"] == str(csv_path)
    assert (out / "labels.txt").read_text().split() == ["blue", "green", "red"]
    csv_path.rename(csv_path.with_suffix(".moved"))

    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--resume", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "recall:  blue " in result.output and "(balance: oversample)" in result.output
    m = json.loads((out / "metrics.json").read_text())
    counts = [len([1 for _, lab in split["train"] if lab == i]) for i in range(3)]
    assert m["balance"] == {"requested": "oversample", "used": "oversample", "train_counts": counts,
                            "images_per_epoch": 3 * max(counts)}
    assert m["class_weights"] is None  # oversampling replaces weights, never both
    assert {k: v["support"] for k, v in m["per_class"].items()} == {
        c: sum(1 for _, lab in split["test"] if lab == i) for i, c in enumerate(["blue", "green", "red"])}
    rows = json.loads((out / "history.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows][:2] == [1, 2]  # epoch 1 before the interruption, then resumed

    # float32 export, then parity with the default gates (drop <= 1 point, agreement >= 0.98): the
    # exported graph and the device runtime must classify like the Keras model. Not int8 or float16:
    # tests cannot download pretrained weights, and a random-init backbone is so sensitive that
    # float16 weights already flip 7% of these images and full int8 keeps 0-71% agreement (measured
    # here on sets like this one); that is the export area's finding, not a CSV one.
    result = runner.invoke(cli, ["export", str(out), "--float32"])
    assert result.exit_code == 0, result.output
    model = out / "export" / "model_float32.tflite"
    result = runner.invoke(cli, ["parity", str(out), str(model), "--json", str(tmp_path / "parity_test_split.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "parity_test_split.json").read_text())
    assert report["passed"] and report["agreement"] >= 0.98 and report["n_images"] == len(split["test"]) + len(split["val"])
    assert report["gates"] == {"max_drop": 1.0, "min_clear_agreement": 0.99, "min_agreement": None, "clear_margin": 0.1}

    # parity --data --labels-csv: the whole CSV-labelled set, named by the CSV, through the same gate.
    moved = csv_path.with_suffix(".moved")
    moved.rename(csv_path)
    result = runner.invoke(cli, ["parity", str(out), str(model),
                                 "--data", str(data), "--labels-csv", str(csv_path),
                                 "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["n_images"] == sum(c for _, c in COLOURS.values()) and report["passed"]
    assert {k: v["n"] for k, v in report["per_class"].items()} == {k: c for k, (_, c) in COLOURS.items()}
