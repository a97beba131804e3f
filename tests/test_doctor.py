"""edgecls doctor: the report, and its exit code."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.runtime.doctor import diagnose, exit_code


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


@pytest.mark.parametrize("content", [None, b"random"])
def test_doctor_fails_only_for_a_bad_model(content, tmp_path):
    path = tmp_path / "m.tflite"
    if content is not None:
        path.write_bytes(np.random.default_rng(3).bytes(512))
    res = CliRunner().invoke(cli, ["doctor", "--model", str(path)])
    assert res.exit_code == 1
    assert "Error: " in res.output and ("model not found" in res.output or "not a valid .tflite" in res.output)


def test_no_runtime_is_an_error(monkeypatch):
    from edgecls.runtime import doctor

    report = diagnose()
    assert exit_code(report) == 0
    monkeypatch.setattr(doctor, "runtime_report", lambda: [])
    report = diagnose()
    assert exit_code(report) == 1 and "No TFLite runtime imports" in doctor.format_report(report)
