"""edgecls doctor: the report, and its exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli


def test_doctor_reports_this_machine():
    res = CliRunner().invoke(cli, ["doctor"])
    assert res.exit_code == 0, res.output
    for word in ("system", "python", "ai_edge_litert", "opencv", "picamera2", "cameras", "display"):
        assert word in res.output
    report = json.loads(CliRunner().invoke(cli, ["doctor", "--json"]).output)
    assert report["runtime_ok"] is True
    assert report["runtimes"][0]["name"] == "ai_edge_litert" and report["runtimes"][0]["available"]
    assert report["opencv"]["available"] and report["opencv"]["gui"] is False  # headless wheel here
    assert "model" not in report


@pytest.mark.slow
def test_doctor_with_model(tiny_tflite):
    res = CliRunner().invoke(cli, ["doctor", "--model", str(tiny_tflite["float32"])])
    assert res.exit_code == 0, res.output
    assert "input [1, 32, 32, 3] float32" in res.output and "3 labels from" in res.output


@pytest.mark.parametrize("content, message", [(None, "model not found"), (b"random", "not a valid .tflite")])
def test_doctor_fails_only_for_a_bad_model(content, message, tmp_path):
    path = tmp_path / "m.tflite"
    if content is not None:
        path.write_bytes(np.random.default_rng(3).bytes(512))
    res = CliRunner().invoke(cli, ["doctor", "--model", str(path)])
    assert res.exit_code == 1
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0] and str(path) in errors[0], res.output


def test_doctor_is_healthy_here_and_fails_on_a_machine_with_no_runtime():
    """A fresh process where no TFLite runtime can be imported (each blocked in sys.modules, as on a Pi where
    pip install was never run): doctor names the problem and exits 1. The same command here exits 0."""
    block = "import sys\nfor m in ('ai_edge_litert', 'tflite_runtime', 'tensorflow'):\n    sys.modules[m] = None\n"
    run = "from edgecls.cli import main\nsys.argv = ['edgecls', 'doctor']\nmain()"
    healthy = subprocess.run([sys.executable, "-c", "import sys\n" + run], capture_output=True, text=True, timeout=300)
    assert healthy.returncode == 0, healthy.stderr
    bare = subprocess.run([sys.executable, "-c", block + run], capture_output=True, text=True, timeout=300)
    assert bare.returncode == 1, bare.stdout + bare.stderr
    assert "No TFLite runtime imports" in bare.stdout + bare.stderr
    assert "ai_edge_litert" in bare.stdout and "not installed" in bare.stdout
