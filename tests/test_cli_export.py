"""CLI of prune/export/parity: bad input gives one clear line and exit 1; good input works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecls.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def cases(exported_run, tmp_path_factory):
    """Paths the error table needs, made once: an unpruned run copy, a 32 px model, a wrong data folder."""
    from edgecls.optimize.convert import convert_model
    from edgecls.core.keras import keras

    tmp = tmp_path_factory.mktemp("cli_cases")
    unpruned = tmp / "unpruned"
    shutil.copytree(exported_run.path, unpruned, ignore=shutil.ignore_patterns("model_pruned.keras", "export"))
    inp = keras.Input((32, 32, 3))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    (tmp / "small.tflite").write_bytes(convert_model(keras.Model(inp, out), "float32"))
    from edgecls.train.model_io import load_model, save_model

    shifted = load_model(exported_run.path / "model.keras")
    kernel, bias = shifted.get_layer("predictions").get_weights()
    # Classes rotated by one and the logits made sure: every image a clear decision the int8 file does not share.
    shifted.get_layer("predictions").set_weights([np.roll(kernel, 1, axis=1) * 50.0, np.roll(bias, 1) * 50.0])
    save_model(shifted, tmp / "shifted.keras")
    for cls in ("cats", "circles"):
        (tmp / "wrong" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(tmp / "wrong" / cls / f"{i}.png")
    return {"RUN": str(exported_run.path), "UNPRUNED": str(unpruned), "SMALL": str(tmp / "small.tflite"),
            "WRONG": str(tmp / "wrong"), "INT8": str(exported_run.path / "export" / "model_int8.tflite"),
            "MISSING": str(tmp / "no_such_run"), "SHIFTED": str(tmp / "shifted.keras"), "OUTDIR": str(tmp / "out"),
            "TRAINED_ON": json.loads((exported_run.path / "split.json").read_text())["root"]}


BAD = [
    (["parity", "MISSING", "INT8"], "run folder not found"),
    (["export", "MISSING", "--float32"], "run folder not found"),
    (["prune", "MISSING"], "run folder not found"),
    (["parity", "RUN", "SMALL"], "takes 32x32 images but run"),
    (["parity", "RUN", "INT8", "--data", "WRONG"], "unknown class folder(s) cats; missing class folder(s) stripes, triangles"),
    (["export", "RUN", "--int8"], "model_int8.tflite exists; pass --force"),
    (["export", "RUN", "--int8", "--pruned"], "model_pruned_int8.tflite exists; pass --force"),
    (["export", "UNPRUNED", "--pruned", "--float32"], "no pruned model in"),
    (["prune", "RUN"], "model_pruned.keras exists; pass --force"),
    (["parity", "RUN", "MISSING"], "model not found"),
    (["export", "RUN", "--float16", "--qat"], "--qat and --float-layers apply to --int8 exports, not float16"),
    (["export", "RUN", "--qat", "--float-layers", "predictions"],
     "--qat and --float-layers NAME,... are two different repairs; pass one of them"),
    (["export", "RUN", "--float-layers", ","], "--float-layers takes auto, none or NAME,...; got ','"),
    (["export", "RUN", "--qat-epochs", "0"], "Invalid value for '--qat-epochs'"),
    (["export", "RUN", "--int8", "--force", "--out", "OUTDIR", "--parity-data", "WRONG"],
     "does not match the run's labels.txt (unknown class folder(s) cats; missing class folder(s) stripes, triangles)"),
    (["export", "RUN", "--int8", "--force", "--out", "OUTDIR", "--parity-data", "TRAINED_ON"],
     "of the run's training images"),
    (["export", "RUN", "--float16", "--parity-data", "WRONG"], "--parity-data sets the images of the int8 parity gate"),
    (["export", "RUN", "--int8", "--force", "--out", "OUTDIR", "--float-layers", "no_such_layer"],
     "--float-layers: no quantized tensor is named 'no_such_layer'; the worst layers are:"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_clear_error(runner, cases, args, message):
    result = runner.invoke(cli, [cases.get(a, a) for a in args])
    assert result.exit_code == (2 if "Invalid value" in message else 1), result.output
    # Lines, not substrings: a warning may quote a library's "...Error:" text.
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output and "unexpected" not in errors[0]


@pytest.mark.slow
def test_parity_cli_prints_a_table_and_writes_json(runner, cases, tmp_path):
    from edgecls.core.config import ParityConfig
    from edgecls.optimize.parity import run_parity

    out = tmp_path / "p.json"
    result = runner.invoke(cli, ["parity", cases["RUN"], cases["INT8"], "--json", str(out), "--threads", "1"])
    report = json.loads(out.read_text())
    # The verdict, from the library on the same files (not from the report under test).
    expected = run_parity(ParityConfig(run=cases["RUN"], model=cases["INT8"], threads=1, diagnose=False),
                          raise_on_fail=False)
    assert result.exit_code == (0 if expected.passed else 1), result.output
    assert report["clear_agreement"] == expected.clear_agreement and report["agreement"] == expected.agreement
    assert "accuracy drop" in result.output and "95% CI" in result.output and "worst int8 tensors" in result.output
    assert report["gates"] == {"max_drop": 1.0, "min_clear_agreement": 0.99, "min_agreement": None, "clear_margin": 0.1}
    assert "inconclusive" in result.output  # a few dozen held-out images cannot decide a 0.99 gate


@pytest.mark.slow
def test_parity_cli_exit_1_when_a_gate_fails(runner, cases):
    """A float reference with its classes rotated by one disagrees on every image."""
    result = runner.invoke(cli, ["parity", cases["RUN"], cases["INT8"], "--float-model", cases["SHIFTED"]])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output  # the table is printed before the error line
    error = next(line for line in result.output.splitlines() if line.startswith("Error:"))
    assert error.startswith("Error: parity failed: ") and "clear-decision agreement" in error
    assert "edgecls export RUN --int8 --force" in error  # what to do: the export's methods


@pytest.mark.slow
def test_export_cli_float16_into_a_folder(runner, cases, tmp_path):
    result = runner.invoke(cli, ["export", cases["RUN"], "--float16", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and "float16" in result.output
    card = json.loads((tmp_path / "model_float16.card.json").read_text())
    assert card["mode"] == "float16" and card["parity"] is None and (tmp_path / "labels.txt").is_file()
    # The file itself: float32 in and out, and it classifies like the Keras model it came from.
    from edgecls import data
    from edgecls.runtime.classifier import Classifier
    from edgecls.train.model_io import load_model

    clf = Classifier(tmp_path / "model_float16.tflite", labels=None, num_threads=1)
    assert (clf.input_dtype.name, clf.output_dtype.name) == ("float32", "float32")
    split = json.loads((Path(cases["RUN"]) / "split.json").read_text())
    x, _ = data.load_images(split["root"], split["test"], 64)
    p_keras = load_model(Path(cases["RUN"]) / "model.keras").predict(x.astype(np.float32), verbose=0)
    p_file = np.stack([clf.probabilities(img) for img in x])
    # float16 weights (~3 significant digits) through a random backbone: close, and every clear decision kept.
    assert np.abs(p_file - p_keras).mean() < 0.01
    clear = np.sort(p_keras, 1)[:, -1] - np.sort(p_keras, 1)[:, -2] >= 0.1
    assert clear.any() and (p_file.argmax(1) == p_keras.argmax(1))[clear].all()


def test_export_help_lists_every_mode(runner):
    result = runner.invoke(cli, ["export", "--help"])
    assert result.exit_code == 0
    for flag in ("--int8", "--float16", "--dynamic", "--float32", "--pruned", "--representative-samples", "--io",
                 "--allow-float-fallback", "--no-parity", "--max-drop", "--min-clear-agreement", "--min-agreement",
                 "--float-layers", "--qat", "--no-repair", "--qat-epochs", "--qat-learning-rate", "--golden-images",
                 "--bias-correction", "--no-bias-correction"):
        assert flag in result.output
