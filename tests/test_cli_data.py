"""``edgecls data check`` / ``edgecls data synth`` as tables: arguments -> exit code -> message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecls.cli import cli


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _tree(root: Path, spec: dict[str, int]) -> None:
    from edgecls.data.synth import write_synthetic_dataset

    src = root.parent / f"{root.name}_src"
    write_synthetic_dataset(src, classes=2, per_class=2, size=24, seed=0)
    sample = next(src.rglob("*.jpg")).read_bytes()
    for cls, n in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / cls / f"{i}.jpg").write_bytes(sample)


@pytest.mark.parametrize(
    "spec, args, code, message",
    [
        (None, ["data", "check", "{d}/missing"], 1, "Error: data folder not found"),
        ({"one": 2}, ["data", "check", "{d}"], 1, "Error: {d} needs at least 2 class folders"),
        ({"a": 2, "b": 0}, ["data", "check", "{d}"], 1, "Error: class 'b' has no usable images"),
        ({"a": 2, "b": 3}, ["data", "check", "{d}"], 0, "OK: 5 usable images in 2 classes (classes layout)"),
        ({"a": 2, "b": 5}, ["data", "check", "{d}", "--no-decode"], 0, "Classes are imbalanced"),
        ({"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1}, ["data", "check", "{d}"], 0,
         "the val split doubles as the test split"),
        ({"train/a": 1, "train/b": 1, "val/a": 1}, ["data", "check", "{d}"], 1, "Error: class folders differ"),
        (None, ["data", "synth", "{d}/out", "--classes", "1"], 2, "Invalid value for '--classes'"),
        (None, ["data", "synth", "{d}/out", "--classes", "11"], 2, "Invalid value for '--classes'"),
        (None, ["data", "synth", "{d}/out", "--classes", "x"], 2, "'x' is not a valid integer"),
        (None, ["data", "synth", "{d}/out", "--per-class", "0"], 2, "Invalid value for '--per-class'"),
        (None, ["data", "synth", "{d}/out", "--layout", "flat"], 2, "Invalid value for '--layout'"),
        ({"a": 1}, ["data", "synth", "{d}"], 1, "Error: {d} is not empty; choose another folder or pass --force"),
        (None, ["data", "synth", "{d}/out", "--classes", "3", "--per-class", "2", "--size", "32"], 0,
         "Wrote 6 images (3 classes x 2, 32px, seed 0, classes layout)"),
        ({"a": 1}, ["data", "synth", "{d}", "--per-class", "1", "--size", "16", "--force"], 0, "Wrote 4 images"),
    ],
)
def test_cli_table(runner, tmp_path, spec, args, code, message):
    d = tmp_path / "data"
    if spec is not None:
        _tree(d, spec)
    result = runner.invoke(cli, [a.format(d=d) for a in args])
    assert result.exit_code == code, result.output
    assert message.format(d=d) in result.output
    if code == 1:
        assert "Traceback" not in result.output and result.output.count("Error:") == 1


def test_check_lists_skips_and_writes_json(runner, messy_data, tmp_path):
    root, expect = messy_data
    out = tmp_path / "report.json"
    result = runner.invoke(cli, ["data", "check", str(root), "--json", str(out)])
    assert result.exit_code == 0, result.output
    n_bad = sum(r is not None for r in expect.values())
    assert f"Skipped {n_bad} file(s):" in result.output
    assert "messy/zero.jpg: empty file (0 bytes)" in result.output
    report = json.loads(out.read_text())
    assert report["counts"]["all"] == {"good": 4, "messy": len(expect) - n_bad}
    assert {Path(s["path"]).name for s in report["skipped"]} == {n for n, r in expect.items() if r}


def test_synth_then_check_round_trip(runner, tmp_path):
    out = tmp_path / "syn"
    assert runner.invoke(cli, ["data", "synth", str(out), "--per-class", "3", "--size", "24", "--layout", "splits"]).exit_code == 0
    result = runner.invoke(cli, ["data", "check", str(out)])
    assert result.exit_code == 0, result.output
    assert "OK: 12 usable images in 4 classes (splits layout)" in result.output


@pytest.mark.parametrize("n_small, warned", [(1, "class 'circles' has 1 image: none in the val and test split"),
                                              (2, "class 'circles' has 2 images: none in the val and test split"),
                                              (3, None)])
def test_check_warns_of_a_class_train_could_never_measure(runner, tmp_path, n_small, warned):
    """Said by `data check`, before anyone waits for a training run to print it."""
    out = tmp_path / "syn"
    assert runner.invoke(cli, ["data", "synth", str(out), "--classes", "2", "--per-class", "10", "--size", "24"]).exit_code == 0
    for extra in sorted((out / "circles").iterdir())[n_small:]:
        extra.unlink()
    result = runner.invoke(cli, ["data", "check", str(out)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warned in warnings[0] and "default split" in warnings[0]
