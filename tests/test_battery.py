"""The hostile-but-realistic battery. Every bad input: the right exit code, exactly one
``Error:`` line, no traceback, and nothing a user made is lost or left half-made.

In-process through click's CliRunner (the same group a user's shell reaches); the cases that can
crash a process or need another OS user live in test_train_faults.py and test_permissions.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecls.cli import cli

IMG_PX = 32


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A user's disk: photos, a finished-looking run with an export, a half run, a non-run folder, a file."""
    root = tmp_path_factory.mktemp("battery")
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / "data" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (IMG_PX, IMG_PX, 3), dtype=np.uint8)).save(
                root / "data" / cls / f"{i}.png")
    run = root / "run"
    (run / "export").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "config.json").write_text('{"train": {"size": 32}}')
    (run / "labels.txt").write_text("cat\ndog\n")
    (run / "model.keras").write_bytes(b"a trained model")
    (run / "export" / "model_int8.tflite").write_bytes(b"a deployed model")
    (run / "checkpoints" / "state.json").write_text('{"phase": "head", "phase_epochs_done": 1, "rows": []}')
    broken = root / "broken_state"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    (broken / "checkpoints" / "state.json").write_text("{not json")
    (root / "photos").mkdir()
    (root / "photos" / "holiday.jpg").write_bytes(b"irreplaceable")
    (root / "notes.txt").write_text("a file, not a folder")
    (root / "fake.tflite").write_bytes(b"this is not a flatbuffer")
    (root / "bench.json").write_text('{"old": "results"}')
    return root


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


D, RUN, NEW = "{w}/data", "{w}/run", "{tmp}/new run"
T = ["--weights", "none"]

BAD = "Invalid value for '{opt}': must be "
CASES = [
    # (args, exit code, text the single Error: line contains)
    # -- train: options, checked where they are parsed, before TensorFlow loads
    (["train", "{w}/missing", "-o", NEW], 1, "data folder not found: {w}/missing"),
    (["train", "-o", NEW], 1, "missing DATA"),
    (["train", D, "-o", NEW, "--size", "100000", *T], 2, "'--size': must be an integer between 32 and 1024 pixels, got 100000"),
    (["train", D, "-o", NEW, "--size", "16", *T], 2, "'--size': must be an integer between 32 and 1024 pixels, got 16"),
    (["train", D, "-o", NEW, "--epochs", "0", *T], 2, "'--epochs': must be an integer between 1 and 10000, got 0"),
    (["train", D, "-o", NEW, "--epochs", "abc"], 2, "'--epochs': must be an integer between 1 and 10000, got 'abc'"),
    (["train", D, "-o", NEW, "--batch-size", "0", *T], 2, "'--batch-size': must be an integer between 1 and 65536, got 0"),
    (["train", D, "-o", NEW, "--learning-rate", "-1", *T], 2, "'--learning-rate': must be a finite number in (0, 1], got -1.0"),
    (["train", D, "-o", NEW, "--learning-rate", "inf", *T], 2, "'--learning-rate': must be a finite number in (0, 1], got inf"),
    (["train", D, "-o", NEW, "--fine-tune-learning-rate", "0", *T], 2,
     "'--fine-tune-learning-rate': must be a finite number in (0, 1], got 0.0"),
    (["train", D, "-o", NEW, "--val-fraction", "1.5", *T], 2, "'--val-fraction': must be a finite number in (0, 1), got 1.5"),
    (["train", D, "-o", NEW, "--val-fraction", "0.5", "--test-fraction", "0.45", *T], 1,
     "--val-fraction + --test-fraction = 0.95 leaves too little to train on"),
    (["train", D, "-o", NEW, "--label-smoothing", "1", *T], 2, "'--label-smoothing': must be a finite number in [0, 1), got 1.0"),
    (["train", D, "-o", NEW, "--dropout", "-0.5", *T], 2, "'--dropout': must be a finite number in [0, 1), got -0.5"),
    (["train", D, "-o", NEW, "--backbone", "vgg16", *T], 1, "unknown backbone 'vgg16'"),
    (["train", D, "-o", NEW, "--mixed-precision", "yes"], 2, "Invalid value for '--mixed-precision'"),
    (["train", D, "-o", NEW, "--prune", "1.5", *T], 2, "'--prune': must be a finite number in (0, 1), got 1.5"),
    (["train", D, "-o", NEW, "--patience", "0", *T], 2, "'--patience': must be an integer between 1 and 10000, got 0"),
    (["train", D, "-o", NEW, "--seed", "-1", *T], 2, "'--seed': must be an integer between 0 and 4294967295, got -1"),
    (["train", D, "-o", NEW, "--weights", "{w}/nope.h5"], 1, "weights file not found: {w}/nope.h5"),
    # -- train: run folders
    (["train", D, "-o", RUN, *T], 1, "run folder {w}/run already exists; use --force"),
    (["train", D, "-o", "{w}/photos", "--force", *T], 1, "is not an edgecls run; refusing to delete it"),
    (["train", D, "-o", "{w}/notes.txt", *T], 1, "{w}/notes.txt exists and is a file"),
    (["train", D, "-o", "{w}/data/run", *T], 1, "--out {w}/data/run is inside the image folder {w}/data"),
    (["train", "-o", "{w}/photos", "--resume"], 1, "cannot resume: {w}/photos is not an edgecls run"),
    (["train", "-o", RUN, "--resume", "--force"], 1, "--resume and --force contradict each other"),
    (["train", "-o", RUN, "--resume"], 1, "cannot resume: {w}/run/checkpoints/last.weights.npz is missing"),
    (["train", "-o", "{w}/broken_state", "--resume"], 1, "state.json is not valid JSON"),
    # -- data synth / check
    (["data", "synth", NEW, "--seed", "-1"], 2, "Invalid value for '--seed'"),
    (["data", "synth", NEW, "--classes", "1"], 2, "Invalid value for '--classes'"),
    (["data", "synth", NEW, "--size", "8"], 2, "Invalid value for '--size'"),
    (["data", "synth", "{w}/photos"], 1, "{w}/photos is not empty; choose another folder or pass --force"),
    (["data", "synth", "{w}/notes.txt"], 2, "Directory '{w}/notes.txt' is a file"),
    (["data", "synth", "{w}/notes.txt/sub", "--per-class", "1"], 1, "Not a directory: {w}/notes.txt"),
    (["data", "check", "{w}/missing"], 1, "data folder not found: {w}/missing"),
    (["data", "check", D, "--no-decode", "--json", "{w}/photos"], 2, "File '{w}/photos' is a directory"),
    (["data", "check", D, "--no-decode", "--json", "{w}/notes.txt/report.json"], 1,
     "cannot write --json {w}/notes.txt/report.json: {w}/notes.txt is a file, not a folder"),
    # -- bench (the TF-free device side)
    (["bench", "{w}/fake.tflite", "--threads", "100000"], 2, "'--threads': must be integers between 1 and 64, got 100000"),
    (["bench", "{w}/fake.tflite", "--threads", "0"], 2, "'--threads': must be integers between 1 and 64, got 0"),
    (["bench", "{w}/fake.tflite", "--threads", "two"], 2, "'--threads': must be integers between 1 and 64, got 'two'"),
    (["bench", "{w}/fake.tflite", "--runs", "0"], 2, "'--runs': must be an integer between 1 and 1000000, got 0"),
    (["bench", "{w}/fake.tflite", "--runs", "1e12"], 2, "'--runs': must be an integer between 1 and 1000000, got '1e12'"),
    (["bench", "{w}/missing.tflite"], 1, "model not found: {w}/missing.tflite"),
    (["bench", "{w}/fake.tflite", "--json", "{w}/bench.json"], 1, "{w}/bench.json already exists"),
    (["bench", "{w}/fake.tflite", "--json", "{w}/photos"], 2, "File '{w}/photos' is a directory"),
    (["bench", "{w}/fake.tflite", "--json", "{w}/notes.txt/b.json"], 1, "is a file, not a folder"),
    (["bench", "{w}/fake.tflite"], 1, "{w}/fake.tflite is not a valid .tflite model"),
    # -- prune
    (["prune", "{w}/photos"], 1, "{w}/photos is not an edgecls run"),
    (["prune", RUN, "--learning-rate", "-1"], 2, "'--learning-rate': must be a finite number in (0, 1], got -1.0"),
    (["prune", RUN, "--learning-rate", "inf"], 2, "'--learning-rate': must be a finite number in (0, 1], got inf"),
    (["prune", RUN, "--sparsity", "1.5"], 2, "'--sparsity': must be a finite number in (0, 1), got 1.5"),
    (["prune", "{w}/missing"], 1, "run folder not found: {w}/missing"),
    # -- export / parity / camera / verify
    (["export", "{w}/photos", "--int8"], 1, "{w}/photos is not an edgecls run"),
    (["export", RUN, "--int8", "--float16"], 2, "--int8 and --float16 exclude each other"),
    (["export", RUN, "--float32", "--dynamic", "--float32"], 2, "--float32 and --dynamic exclude each other"),
    (["export", RUN, "--max-drop", "nan"], 2, "'--max-drop': must be a finite number between 0 and 100 points, got nan"),
    (["export", RUN, "--min-clear-agreement", "1.5"], 2,
     "'--min-clear-agreement': must be a finite number between 0 and 1, got 1.5"),
    (["parity", RUN, "{w}/fake.tflite", "--max-drop", "nan"], 2,
     "'--max-drop': must be a finite number between 0 and 100 points, got nan"),
    (["parity", RUN, "{w}/fake.tflite", "--threads", "100000"], 2, "'--threads': must be an integer between 1 and 64"),
    (["camera", "-m", "{w}/missing.tflite", "--source", "{w}/photos"], 1, "model not found: {w}/missing.tflite"),
    (["camera", "-m", "{w}/fake.tflite", "--threads", "1000"], 2, "'--threads': must be an integer between 1 and 64, got 1000"),
    (["camera", "-m", "{w}/fake.tflite", "--serve-fps", "nan"], 2, "'--serve-fps': must be a finite number between 0.1 and 60"),
    (["camera", "-m", "{w}/fake.tflite", "--jsonl-max-mb", "inf"], 2, "'--jsonl-max-mb': must be a finite number"),
    (["camera", "--source", "{w}/photos"], 2, "Missing option '--model'"),
    (["collect", NEW, "-l", "cat", "--interval", "nan"], 2, "'--interval': must be a finite number between 0 and 3600"),
    (["verify", "{w}/missing.tflite"], 1, "model not found: {w}/missing.tflite"),
]


@pytest.mark.parametrize("args, code, message", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_error_line_and_loses_nothing(world, tmp_path, args, code, message, monkeypatch):
    monkeypatch.delenv("EDGECLS_DEBUG", raising=False)
    fill = {"w": str(world), "tmp": str(tmp_path)}
    before = _tree(world)
    result = CliRunner().invoke(cli, [a.format(**fill) for a in args])
    out = result.output
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    assert message.format(**fill) in errors[0], out
    assert "Traceback" not in out
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code
    assert "unexpected" not in errors[0], out  # a bad input is never an internal error
    assert _tree(world) == before  # nothing a user made was touched
    assert not (tmp_path / "new run").exists()  # and no half-made run or folder left behind


def test_debug_switch_shows_the_traceback(world, monkeypatch):
    monkeypatch.setenv("EDGECLS_DEBUG", "1")
    result = CliRunner().invoke(cli, ["data", "synth", f"{world}/notes.txt/sub", "--per-class", "1"])
    assert isinstance(result.exception, NotADirectoryError)  # re-raised for the traceback, not swallowed


def test_a_library_error_is_one_line_naming_its_type(monkeypatch, world):
    from edgecls.runtime import bench

    def boom(cfg):
        raise ValueError("Model provided has model identifier 'this', should be 'TFL3'\nmore detail")

    monkeypatch.delenv("EDGECLS_DEBUG", raising=False)
    monkeypatch.setattr(bench, "run_bench", boom)
    result = CliRunner().invoke(cli, ["bench", f"{world}/fake.tflite"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: unexpected ValueError: Model provided has model identifier 'this', "
                                     "should be 'TFL3' (run with EDGECLS_DEBUG=1 for the traceback)")


@pytest.mark.slow
def test_a_class_with_one_image_is_warned_about(tmp_path, capsys):
    from edgecls.core.config import TrainConfig
    from edgecls.train.runfolder import scan_and_split as _scan_and_split

    rng = np.random.default_rng(1)
    for cls, n in (("cat", 6), ("dog", 6), ("rare", 1)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (IMG_PX, IMG_PX, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    _scan_and_split(TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"), weights="none"))
    err = capsys.readouterr().err.splitlines()
    assert err == ["Warning: class 'rare' has 1 image: none in the val and test split, so its accuracy is never "
                   "measured (add images)"]


# -- every numeric option of every command: nan, inf, negative and huge are refused where they are parsed --

def _numeric_cases() -> list[tuple[list[str], str, str]]:
    from edgecls.cli.options import Checked

    commands = {
        "train": ["train", D, "-o", NEW], "prune": ["prune", RUN], "export": ["export", RUN],
        "parity": ["parity", RUN, "{w}/fake.tflite"], "camera": ["camera", "-m", "{w}/fake.tflite"],
        "collect": ["collect", NEW, "-l", "cat"], "bench": ["bench", "{w}/fake.tflite"],
        "verify": ["verify", "{w}/fake.tflite"], "deploy": ["deploy", "{w}/fake.tflite", "pi@127.0.0.1"],
    }
    cases = []
    for name, args in commands.items():
        for param in cli.commands[name].params:
            if not isinstance(param.type, Checked):
                continue
            flag = param.opts[0]
            huge = "1e30" if param.type.kind.base == "float" else str(10**30)
            for value in ("nan", "inf", "-inf", "-1", huge):
                cases.append((args + [flag, value], flag, value))
    return cases


NUMERIC = _numeric_cases()


@pytest.mark.parametrize("args, flag, value", NUMERIC, ids=[f"{c[0][0]} {c[1]} {c[2]}" for c in NUMERIC])
def test_every_numeric_option_refuses_non_finite_negative_and_huge_values(world, tmp_path, args, flag, value,
                                                                         monkeypatch):
    monkeypatch.delenv("EDGECLS_DEBUG", raising=False)
    fill = {"w": str(world), "tmp": str(tmp_path)}
    before = _tree(world)
    result = CliRunner().invoke(cli, [a.format(**fill) for a in args])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert f"Invalid value for '{flag}'" in errors[0] and "must be" in errors[0], errors[0]
    assert "Traceback" not in result.output and _tree(world) == before


def test_the_numeric_battery_covers_every_numeric_option_of_the_configs():
    """Each numeric config field that is a CLI option reaches the battery through some command."""
    import dataclasses

    from edgecls.cli.options import cli_fields
    from edgecls.core import config, device_config
    from edgecls.core.options import flag_of, kinds

    tested = {flag for _, flag, _ in NUMERIC}
    for cls in (config.TrainConfig, config.PruneConfig, config.ExportConfig, config.ParityConfig, config.ReportConfig,
                config.ExplainConfig, device_config.CameraConfig, device_config.CollectConfig, device_config.BenchConfig,
                device_config.VerifyConfig, device_config.SshConfig, device_config.DeployConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in cli_fields(cls):
            if kinds(cls)[name].base in ("int", "float", "ints"):
                assert flag_of(fields[name]) in tested, (cls.__name__, name)
