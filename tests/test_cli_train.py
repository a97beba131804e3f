"""``edgecls train`` at the boundary: bad input is one ``Error:`` line, exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecls.cli import cli

IMG_PX = 32


def _images(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (IMG_PX, IMG_PX, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_train")
    for cls, seed in (("cat", 0), ("dog", 1)):
        _images(root / "good" / cls, 6, seed)
    _images(root / "one_class" / "cat", 6, 2)
    _images(root / "empty_class" / "cat", 6, 3)
    (root / "empty_class" / "dog").mkdir()
    run = root / "existing_run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "labels.txt").write_text("cat\ndog\n")
    done = root / "done_run"
    (done / "checkpoints").mkdir(parents=True)
    (done / "config.json").write_text("{}")
    (done / "checkpoints" / "state.json").write_text('{"phase": "done"}')
    (root / "photos").mkdir()
    (root / "photos" / "keep.jpg").write_bytes(b"user data")
    return root


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


GOOD = "{root}/good"
OUT = "{tmp}/run"

CASES = [
    # (args, exit code, message)
    (["{root}/missing", "-o", OUT], 1, "Error: data folder not found: {root}/missing"),
    (["{root}/one_class", "-o", OUT, "--weights", "none"], 1, "needs at least 2 class folders with images"),
    (["{root}/empty_class", "-o", OUT, "--weights", "none"], 1, "class 'dog' has no usable images"),
    ([GOOD, "-o", OUT, "--backbone", "resnet50"], 1,
     "Error: unknown backbone 'resnet50'; choose one of: efficientnet_b0, mobilenet_v2, mobilenet_v3_large, "
     "mobilenet_v3_small"),
    ([GOOD, "-o", OUT, "--alpha", "0"], 2, "'--alpha': must be a finite number in (0, 2], got 0.0"),
    ([GOOD, "-o", OUT, "--size", "16"], 2, "'--size': must be an integer between 32 and 1024 pixels, got 16"),
    ([GOOD, "-o", OUT, "--val-fraction", "1.5"], 2, "'--val-fraction': must be a finite number in (0, 1), got 1.5"),
    ([GOOD, "-o", OUT, "--test-fraction", "-0.1"], 2, "'--test-fraction': must be a finite number in [0, 1), got -0.1"),
    ([GOOD, "-o", OUT, "--val-fraction", "0.5", "--test-fraction", "0.5"], 1, "leaves too little to train on"),
    ([GOOD, "-o", OUT, "--dropout", "1"], 2, "'--dropout': must be a finite number in [0, 1), got 1.0"),
    ([GOOD, "-o", OUT, "--label-smoothing", "-0.1"], 2,
     "'--label-smoothing': must be a finite number in [0, 1), got -0.1"),
    ([GOOD, "-o", OUT, "--epochs", "0"], 2, "'--epochs': must be an integer between 1 and 10000, got 0"),
    ([GOOD, "-o", OUT, "--batch-size", "0"], 2, "'--batch-size': must be an integer between 1 and 65536, got 0"),
    ([GOOD, "-o", OUT, "--prune", "1.5"], 2, "'--prune': must be a finite number in (0, 1), got 1.5"),
    ([GOOD, "-o", OUT, "--head-cache", "disk"], 2, "Invalid value for '--head-cache': 'disk' is not one of"),
    ([GOOD, "-o", OUT, "--head-cache-views", "0"], 2, "'--head-cache-views': must be an integer between 1 and 64, got 0"),
    ([GOOD, "-o", OUT, "--head-cache-views", "65"], 2, "'--head-cache-views': must be an integer between 1 and 64, got 65"),
    ([GOOD, "-o", OUT, "--minimalistic"], 1, "Error: --minimalistic only applies to mobilenet_v3_small/large"),
    ([GOOD, "-o", OUT, "--alpha", "0.3"], 1, "Error: ImageNet weights for mobilenet_v2 exist only for alpha in"),
    ([GOOD, "-o", OUT, "--weights", "{root}/nope.h5"], 1, "Error: weights file not found: {root}/nope.h5"),
    ([GOOD, "-o", "{root}/existing_run"], 1,
     "Error: run folder {root}/existing_run already exists; use --force to overwrite it or --resume to continue it"),
    ([GOOD, "-o", "{root}/photos", "--force"], 1, "is not an edgecls run; refusing to delete it even with --force"),
    (["-o", "{root}/photos", "--resume"], 1, "Error: cannot resume: {root}/photos is not an edgecls run"),
    (["-o", "{root}/existing_run", "--resume"], 1, "has no checkpoint"),
    (["-o", "{root}/existing_run", "--resume", "--force"], 1, "Error: --resume and --force contradict each other"),
    (["-o", "{root}/done_run", "--resume"], 1, "Error: run {root}/done_run is already complete; nothing to resume"),
    (["-o", OUT], 1, "Error: missing DATA"),
    ([GOOD, "-o", OUT, "--strategy", "tpu"], 2, "Invalid value for '--strategy'"),
    ([GOOD, "-o", OUT, "--alpha", "wide"], 2, "Invalid value for '--alpha'"),
    ([GOOD], 2, "Missing option '--out'"),
]


@pytest.mark.parametrize("args, code, message", CASES)
def test_bad_input_is_one_error_line(runner, folders, tmp_path, args, code, message):
    fill = dict(root=folders, tmp=tmp_path)
    result = runner.invoke(cli, ["train", *[a.format(**fill) for a in args]])
    assert result.exit_code == code, result.output
    assert message.format(**fill) in result.output
    assert "Traceback" not in result.output
    assert result.output.count("Error:") == 1
    if code == 1:
        assert result.output.strip().startswith("Error:")
    assert not (tmp_path / "run").exists()  # nothing half-made is left behind
    assert (folders / "photos" / "keep.jpg").read_bytes() == b"user data"


@pytest.mark.slow
def test_weights_file_that_does_not_fit_is_one_error_and_leaves_no_run(runner, folders, tmp_path):
    from edgecls.core.keras import keras

    weights = tmp_path / "mnv2_035.h5"
    keras.applications.MobileNetV2(
        input_shape=(IMG_PX, IMG_PX, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    ).save_weights(str(weights))
    out = tmp_path / "run"
    result = runner.invoke(
        cli, ["train", str(folders / "good"), "-o", str(out), "--size", str(IMG_PX), "--alpha", "0.5",
              "--weights", str(weights)]
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: weights file {weights} does not fit mobilenet_v2 alpha 0.5 (")
    assert "Traceback" not in result.output
    assert not out.exists()


def test_help_texts_come_from_the_config_docstrings(runner):
    result = runner.invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for phrase in ("Epochs of head training on the frozen backbone", "Global batch size (split over replicas).",
                   "efficientnet_b0, mobilenet_v2", "--prune SPARSITY", "--resume", "--force"):
        assert phrase in text, phrase
