"""The Raspberry Pi kit in device/: install script syntax, systemd unit, env file."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEVICE = Path(__file__).resolve().parents[1] / "device"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_script_parses_and_is_strict():
    script = DEVICE / "install.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "set -euo pipefail" in text
    assert "venv --system-site-packages" in text and "PREFIX=/opt/edgecls" in text and 'VENV="$PREFIX/venv"' in text
    assert "python3-picamera2" in text and "edgecls-camera.service" in text


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # keys are case-sensitive in systemd
    text = re.sub(r"\\\n\s*", " ", (DEVICE / "edgecls-camera.service").read_text())  # join continued lines
    cp.read_string(text)
    return cp


def test_unit_file_runs_the_headless_camera_and_restarts():
    unit = _unit()
    svc = unit["Service"]
    exec_start = svc["ExecStart"]
    assert exec_start.startswith("/opt/edgecls/venv/bin/edgecls camera")
    for flag in ("--headless", "--jsonl", "--source", "--model"):
        assert flag in exec_start
    assert svc["Restart"] == "on-failure"
    assert svc["EnvironmentFile"] == "/etc/edgecls/camera.env"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_env_file_defines_every_variable_the_unit_uses():
    used = set(re.findall(r"\$\{(\w+)\}", (DEVICE / "edgecls-camera.service").read_text()))
    defined = {line.split("=", 1)[0] for line in (DEVICE / "camera.env").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used and used <= defined


def test_unit_command_line_is_accepted_by_the_cli():
    """The flags the unit passes exist (click would refuse an unknown one at boot)."""
    from click.testing import CliRunner

    from edgecls.cli import cli

    env = dict(line.split("=", 1) for line in (DEVICE / "camera.env").read_text().splitlines()
               if line and not line.startswith("#"))
    cmd = _unit()["Service"]["ExecStart"].split()[2:]  # drop the binary and 'camera'
    args = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], a) for a in cmd]
    res = CliRunner().invoke(cli, ["camera", *args])
    # The model is not on this machine: the command is parsed, then fails on the missing model only.
    assert res.exit_code == 1 and "model not found: /opt/edgecls/model/model_int8.tflite" in res.output


def _env_lines(include_commented: bool) -> dict[str, str]:
    out = {}
    for line in (DEVICE / "camera.env").read_text().splitlines():
        if include_commented and line.startswith("#EDGECLS_"):
            line = line[1:]
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def test_field_settings_in_env_file_are_real_camera_options(tmp_path):
    """Every EDGECLS_CAMERA_* line (also the commented examples) reaches `edgecls camera` through
    click's environment variables: the run gets past option parsing to the missing-model error,
    and an unknown or mistyped value would have failed with exit code 2 instead."""
    from click.testing import CliRunner

    from edgecls.cli import cli

    env = {k: v for k, v in _env_lines(include_commented=True).items() if k.startswith("EDGECLS_CAMERA_")}
    assert {"EDGECLS_CAMERA_SERVE", "EDGECLS_CAMERA_MQTT", "EDGECLS_CAMERA_SAVE_UNCERTAIN", "EDGECLS_CAMERA_LOG_ON",
            "EDGECLS_CAMERA_JSONL_MAX_MB", "EDGECLS_CAMERA_STALL_TIMEOUT"} <= set(env)
    params = {p.name for p in cli.commands["camera"].params}
    for key in env:
        assert key[len("EDGECLS_CAMERA_"):].lower() in params, key
    env["EDGECLS_CAMERA_SAVE_UNCERTAIN"] = str(tmp_path / "u")
    res = CliRunner().invoke(cli, ["camera", "-m", str(tmp_path / "none.tflite"), "-s", "0"], env=env,
                             auto_envvar_prefix="EDGECLS")
    assert res.exit_code == 1 and "model not found" in res.output, res.output
    bad = CliRunner().invoke(cli, ["camera", "-m", "x", "-s", "0"], env={"EDGECLS_CAMERA_LOG_ON": "always"},
                             auto_envvar_prefix="EDGECLS")
    assert bad.exit_code == 2 and "Invalid value for '--log-on'" in bad.output


def test_install_script_makes_service_files_readable():
    text = (DEVICE / "install.sh").read_text()
    assert 'chmod -R a+rX "$PREFIX/model"' in text and 'chmod 0640 "$CONF_DIR/camera.env"' in text
    assert "ExecStartPre" not in _unit()["Service"]  # the JSONL rotates itself (no .prev trick)
