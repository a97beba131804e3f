"""edgecls deploy / bench --remote against a real OpenSSH server on 127.0.0.1.

The "Pi" is a temp folder on this machine: its own venv, created by ``deploy --install`` from a
wheel of this checkout (pip resolves edgecls[device] from the package index, as on a Pi), and the
model folder the bundle goes to. A tmpfs mounted by the test stands in for a full SD card.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from tests.loopback_sshd import start_sshd

pytestmark = pytest.mark.slow  # sshd, a venv on the "Pi", pip, converted models

PI_PYTHON = getattr(sys, "_base_executable", sys.executable)  # a plain python3 to build the Pi's venv from


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def make_run(root: Path, tiny_tflite, mode: str = "int8", n_golden: int = 8) -> Path:
    """A run folder as train + export leave it: config, labels, export/model_<mode>.tflite + card + golden set."""
    from edgecls.runtime.golden import write_golden_set

    (root / "export").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"train": {"image_size": 32}}))
    (root / "labels.txt").write_text("cat\ndog\nbird\n")
    model = root / "export" / f"model_{mode}.tflite"
    shutil.copy(tiny_tflite[mode], model)
    (root / "export" / "labels.txt").write_text("cat\ndog\nbird\n")
    (root / "export" / f"model_{mode}.card.json").write_text(json.dumps({"mode": mode}))
    write_golden_set(model, tiny_tflite["images"][:n_golden], label_names=["cat", "dog", "bird"])
    return root


def ssh_args(sshd) -> list[str]:
    return ["-F", str(sshd.client_config)]


@pytest.fixture(scope="module")
def pi(sshd, tiny_tflite, tmp_path_factory):
    """A deployed "Pi": `edgecls deploy RUN pi:DIR --install` run once for the module."""
    home = tmp_path_factory.mktemp("pi")
    run = make_run(home.parent / (home.name + "-run"), tiny_tflite)
    venv = home / "venv"
    res = CliRunner().invoke(cli, [
        "deploy", str(run), f"pi:{home / 'model'}", "--install", "--venv", str(venv), "--python", PI_PYTHON,
        "--threads", "1,2", "--runs", "5", "--warmup", "1", *ssh_args(sshd),
    ])
    return {"home": home, "run": run, "venv": venv, "res": res, "dir": home / "model"}


def test_deploy_installs_verifies_benches_and_brings_results_home(pi):
    res = pi["res"]
    assert res.exit_code == 0, res.output
    venv, model_dir, run = pi["venv"], pi["dir"], pi["run"]
    # The Pi's venv is real and runs this checkout's edgecls, installed from a wheel.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a login on the Pi sees it
    version = subprocess.run([str(venv / "bin" / "edgecls"), "--version"], capture_output=True, text=True, check=True,
                             env=clean)
    assert "edgecls" in version.stdout
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import edgecls, ai_edge_litert, cv2; print(edgecls.__file__)"],
                          capture_output=True, text=True, check=True, env=clean,
                          cwd=venv).stdout
    assert str(venv) in site  # installed into the Pi's venv, not borrowed from the host
    # The bundle is live, byte for byte, and no temp folder is left behind.
    for name in ("model_int8.tflite", "model_int8.golden.npz", "model_int8.card.json", "labels.txt"):
        assert sha(model_dir / name) == sha(run / "export" / name), name
    assert not list(model_dir.glob(".edgecls-*"))
    # Results came home into RUN/device/<host>/.
    out = run / "device" / "pi"
    verify = json.loads(next(out.glob("verify_model_int8_*.json")).read_text())
    assert verify["passed"] and verify["model_matches_golden"] and verify["n_images"] == 8
    device = json.loads(next(out.glob("bench_model_int8_*.json")).read_text())
    host = json.loads(next(out.glob("host_bench_model_int8_*.json")).read_text())
    assert device["format"] == "edgecls-bench/1"
    assert [(r["threads"], r["runs"]) for r in device["results"]] == [(1, 5), (2, 5)]
    assert device["results"][0]["model"] == str(model_dir / "model_int8.tflite")  # measured on the Pi's copy
    m = device["machine"]
    assert m["runtime"] == "ai_edge_litert" and m["runtime_version"] and "cpu_features" in m and "dot_product" in m
    assert m["python"] == ".".join(map(str, sys.version_info[:3]))
    assert [r["threads"] for r in host["results"]] == [1, 2]
    record = json.loads(next(out.glob("deploy_model_int8_*.json")).read_text())
    assert record["deploy"]["install"] is True and record["remote_model"] == str(model_dir / "model_int8.tflite")
    assert record["sha256"]["model_int8.tflite"] == sha(run / "export" / "model_int8.tflite")
    # Printed side by side: one column per machine, a p50 row per thread count.
    lines = res.output.splitlines()
    header = next(ln for ln in lines if ln.split() == ["host", "pi"])
    assert header
    p50 = next(ln for ln in lines if ln.startswith("model_int8.tflite 1 thr p50 ms"))
    assert len(p50.split()) == 7  # name (5 words) + host + device
    assert "Verify on pi: PASSED, 8 golden images" in res.output
    assert f"Live on pi: {model_dir / 'model_int8.tflite'}" in res.output


def test_install_again_upgrades_the_code_at_the_same_version(pi, sshd, tmp_path):
    """A checkout changes between releases: --install replaces the Pi's code though the version is equal."""
    assert pi["res"].exit_code == 0, pi["res"].output
    from edgecls.deploy.install import build_wheel, source_root

    src = tmp_path / "src"
    shutil.copytree(source_root(), src, ignore=shutil.ignore_patterns(".git", ".venv*", "__pycache__", "tests", "runs"))
    (src / "edgecls" / "core" / "upgrade_marker.py").write_text('MARK = "new code"\n')
    wheel = build_wheel(tmp_path / "dist", root=src)
    res = CliRunner().invoke(cli, [
        "deploy", str(pi["run"]), f"pi:{pi['dir']}", "--install", "--wheel", str(wheel), "--venv", str(pi["venv"]),
        "--python", PI_PYTHON, "--runs", "2", "--warmup", "0", *ssh_args(sshd),
    ])
    assert res.exit_code == 0, res.output
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    mark = subprocess.run([str(pi["venv"] / "bin" / "python"), "-c", "from edgecls.core.upgrade_marker import MARK; "
                           "print(MARK)"], capture_output=True, text=True, env=clean, cwd=pi["venv"])
    assert mark.stdout.strip() == "new code", mark.stderr


def test_bench_remote_prints_the_device_table(pi, sshd, tiny_tflite, tmp_path):
    assert pi["res"].exit_code == 0, pi["res"].output
    out = tmp_path / "remote.json"
    res = CliRunner().invoke(cli, [
        "bench", str(tiny_tflite["float32"]), str(tiny_tflite["int8"]), "--remote", "pi", "--venv", str(pi["venv"]),
        "--runs", "4", "--warmup", "1", "--json", str(out), *ssh_args(sshd),
    ])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert {Path(r["model"]).name for r in report["results"]} == {"model_float32.tflite", "model_int8.tflite"}
    assert all(r["model"].startswith("/tmp/edgecls-bench.") for r in report["results"])  # the device's temp copy
    assert "p50 ratio model_int8.tflite / model_float32.tflite" in res.output
    # The temp folder on the device is gone.
    assert not any(Path(r["model"]).parent.exists() for r in report["results"])


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")


@pytest.mark.parametrize("options, filler_bytes, expected", [
    # Too few inodes for the whole bundle: the free-space check passes and the copy dies part-way.
    ("size=4m,nr_inodes=8", 0, "Error: the disk of pi is full ({dir}: no free inodes): the copy failed part-way; "
                               "free some space there (the previous model is still live)"),
    # Too few bytes: caught before anything is copied.
    ("size=2m", 1_400_000, "Error: the disk of pi is full: {dir} has 0.{free} MB free, the bundle needs 1.{need} MB; "
                           "free some space there (the previous model is still live)"),
])
def test_failed_copy_leaves_the_previous_model_live(pi, sshd, tiny_tflite, tmp_path, options, filler_bytes, expected):
    assert pi["res"].exit_code == 0, pi["res"].output
    card = tmp_path / "sd"
    _mount_tmpfs(card, options)
    try:
        first = make_run(tmp_path / "run1", tiny_tflite, n_golden=2)
        args = ["--venv", str(pi["venv"]), "--runs", "2", "--warmup", "0", *ssh_args(sshd)]
        res = CliRunner().invoke(cli, ["deploy", str(first), f"pi:{card}", *args])
        assert res.exit_code == 0, res.output
        before = {p.name: sha(p) for p in card.iterdir()}
        assert len(before) == 4
        if filler_bytes:
            (card / "other-files").write_bytes(b"x" * filler_bytes)
        second = make_run(tmp_path / "run2", tiny_tflite, mode="float32", n_golden=8)
        res = CliRunner().invoke(cli, ["deploy", str(second), f"pi:{card}", "--mode", "float32", *args])
        assert res.exit_code == 1 and "Traceback" not in res.output
        line = res.output.strip().splitlines()[-1]
        pattern = re.escape(expected.format(dir=card, free="{F}", need="{N}")).replace(r"\{F\}", r"\d").replace(
            r"\{N\}", r"\d")
        assert re.fullmatch(pattern, line), line
        # The previous bundle is untouched and nothing of the new one is live or left over.
        assert {p.name: sha(p) for p in card.iterdir() if p.name != "other-files"} == before
    finally:
        subprocess.run(["umount", str(card)], check=False)


def test_verify_failure_on_the_device_keeps_the_old_model(pi, sshd, tiny_tflite, tmp_path):
    """A golden set that belongs to another model: verify fails on the Pi, nothing is replaced."""
    assert pi["res"].exit_code == 0, pi["res"].output
    run = make_run(tmp_path / "run", tiny_tflite, mode="float32")
    shutil.copy(run / "export" / "model_float32.tflite", tmp_path / "keep.tflite")
    # Same name, other bytes: the golden set's sha256 no longer matches the model.
    (run / "export" / "model_float32.tflite").write_bytes(Path(tiny_tflite["int8"]).read_bytes())
    target_dir = pi["home"] / "verify-fail"
    target_dir.mkdir()
    (target_dir / "model_float32.tflite").write_bytes(b"previous model")
    res = CliRunner().invoke(cli, ["deploy", str(run), f"pi:{target_dir}", "--mode", "float32",
                                   "--venv", str(pi["venv"]), *ssh_args(sshd)])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        "Error: verify failed on pi: the model file differs from the one the golden set was made with; "
        "the new model was not put live")
    assert (target_dir / "model_float32.tflite").read_bytes() == b"previous model"
    assert not list(target_dir.glob(".edgecls-*"))


def test_service_puts_the_model_where_the_unit_reads_it(pi, sshd, tiny_tflite, tmp_path):
    """--service: the model lands under EDGECLS_MODEL's name; the restart needs systemd (absent
    in this container), so the deploy says the model is live and the restart failed."""
    assert pi["res"].exit_code == 0, pi["res"].output
    run = make_run(tmp_path / "run", tiny_tflite)
    live = pi["home"] / "opt-model" / "camera_model.tflite"
    env = pi["home"] / "camera.env"
    env.write_text(f"EDGECLS_SOURCE=0\nEDGECLS_MODEL={live}\n")
    res = CliRunner().invoke(cli, ["deploy", str(run), "pi", "--service", "--service-env", str(env),
                                   "--venv", str(pi["venv"]), *ssh_args(sshd)])
    assert sha(live) == sha(run / "export" / "model_int8.tflite")
    assert sha(live.with_name("camera_model.golden.npz")) == sha(run / "export" / "model_int8.golden.npz")
    if shutil.which("systemctl") and Path("/run/systemd/system").is_dir():
        pytest.skip("a real systemd is running here; not restarting units from a test")
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith(
        "Error: the model is live but restarting edgecls-camera on pi failed: ")


@pytest.mark.parametrize("target, extra, expected", [
    ("pi-badkey", [], "Error: pi-badkey refused the key (Permission denied); add your public key to "
                      "~/.ssh/authorized_keys on the device (ssh-copy-id pi-badkey) or pass --identity"),
    ("pi-closed", [], "Error: cannot reach pi-closed: connection refused (is the SSH server running? "
                      "enable it with raspi-config)"),
    ("pi-unknown", [], "Error: the host key of pi-unknown is unknown or changed; connect once with "
                       "'ssh pi-unknown' to check and accept it"),
    ("pi", ["--python", "/nonexistent/python3"], "Error: no Python on pi ('/nonexistent/python3' not found); "
                                                 "install it there: sudo apt install python3 python3-venv, "
                                                 "or pass --python PATH"),
    ("pi", ["--venv", "/nonexistent/venv"], "Error: edgecls is not installed on pi (no /nonexistent/venv/bin/edgecls); "
                                            "pass --install, or --venv PATH if it is elsewhere"),
    ("pi:/proc/edgecls", [], "Error: cannot create or write /proc/edgecls on pi (permissions?)"),
])
def test_deploy_errors_are_one_line(sshd, tiny_tflite, tmp_path, target, extra, expected):
    run = make_run(tmp_path / "run", tiny_tflite, n_golden=2)
    res = CliRunner().invoke(cli, ["deploy", str(run), target, "--python", PI_PYTHON, *extra, *ssh_args(sshd)])
    assert (res.exit_code, res.output.strip()) == (1, expected)


@pytest.mark.parametrize("args, expected", [
    (["--mode", "float16"], "Error: {run} has no export/model_float16.tflite; it has model_int8.tflite (choose with --mode)"),
    (["--service"], "Error: --service deploys where the unit reads its model; do not also give :DIR"),
])
def test_deploy_bad_input_before_connecting(tiny_tflite, tmp_path, args, expected):
    run = make_run(tmp_path / "run", tiny_tflite, n_golden=2)
    res = CliRunner().invoke(cli, ["deploy", str(run), "pi@203.0.113.1:/x", *args])  # TEST-NET: never contacted
    assert (res.exit_code, res.output.strip()) == (1, expected.format(run=run))


def test_deploy_without_golden_set_says_how(tiny_tflite, tmp_path):
    res = CliRunner().invoke(cli, ["deploy", str(tiny_tflite["int8"]), "pi@203.0.113.1"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: no golden set beside the model (model_int8.golden.npz); 'edgecls export' writes it and the "
        "device's 'edgecls verify' needs it: export again, or deploy with --no-verify")
