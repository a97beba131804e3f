"""The background builds a session starts (tests/prebuild.py): they run, report failures with their
log, and leave no process behind when the session ends first."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

import prebuild


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie awaiting its parent's wait() has stopped running.
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def _wait_for(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def builds(monkeypatch, tmp_path):
    """Shell builds in place of the real ones (which download for minutes)."""
    monkeypatch.setenv("EDGECLS_TEST_VENVS", str(tmp_path / "venvs"))
    table = {
        "ok": prebuild.Build(command=lambda: ["sh", "-c", f"echo built > {tmp_path / 'ok.done'}"]),
        "broken": prebuild.Build(command=lambda: ["sh", "-c", "echo 'pip: no matching distribution' >&2; exit 3"]),
        # A build whose child outlives its shell unless the whole process group is stopped.
        "slow": prebuild.Build(command=lambda: ["sh", "-c", f"sleep 300 & echo $! > {tmp_path / 'pid.tmp'}; mv {tmp_path / 'pid.tmp'} {tmp_path / 'child.pid'}; wait"]),
        "elsewhere": prebuild.Build(command=lambda: ["true"], applies=lambda: False),
    }
    monkeypatch.setattr(prebuild, "BUILDS", table)
    monkeypatch.setattr(prebuild, "LANES", (("ok", "broken"), ("slow",)))
    return table


def test_builds_run_in_lanes_and_a_failure_names_its_log(builds, tmp_path):
    b = prebuild.Prebuilder({"ok", "broken"})
    b.start()
    for t in b._threads:
        t.join(60)
    b.stop()
    assert (tmp_path / "ok.done").read_text() == "built\n"
    lines = b.summary()
    log = tmp_path / "venvs" / "prebuild" / "broken.log"
    assert lines[0].startswith("background build ok: ready after ")
    assert lines[1] == (f"background build broken FAILED (exit 3); the tests that need it try again in the foreground. "
                        f"Log: {log}")
    assert log.read_text() == "pip: no matching distribution\n"


def test_a_build_still_running_at_the_end_is_stopped_with_its_children(builds, tmp_path):
    b = prebuild.Prebuilder({"slow"})
    b.start()
    _wait_for(tmp_path / "child.pid")
    child = int((tmp_path / "child.pid").read_text())
    with b._lock:  # registered under the lock the builder holds while starting it
        shell = b._procs["slow"].pid
    started = time.monotonic()
    b.stop()
    assert time.monotonic() - started < prebuild.STOP_GRACE_S  # SIGTERM was enough
    assert _gone(shell)
    deadline = time.monotonic() + 5  # the signal is sent; the kernel ends the child right after
    try:
        while not _gone(child):
            assert time.monotonic() < deadline, f"pid {child} of the stopped build still runs"
            time.sleep(0.01)
    finally:
        if not _gone(child):  # the test failed: leave nothing behind anyway
            os.kill(child, signal.SIGKILL)
    assert b.summary() == [f"background build slow: stopped unfinished at the end of the session "
                           f"(log: {tmp_path / 'venvs' / 'prebuild' / 'slow.log'})"]


def test_only_named_builds_that_apply_here_are_wanted(builds):
    assert prebuild.wanted(["ok", "ok", "elsewhere"]) == {"ok"}
    with pytest.raises(ValueError, match=r"unknown build\(s\) \['typo'\]"):
        prebuild.wanted(["typo"])


def test_this_session_started_the_builds_its_selected_tests_are_marked_for(request):
    """The conftest hook itself, in the running session."""
    marked = {m.args[0] for item in request.session.items for m in item.iter_markers("prebuild")}
    builder = getattr(request.config, "_edgecls_prebuilder", None)
    if getattr(request.config, "workerinput", {}).get("workerid", "gw0") != "gw0":
        assert builder is None  # under pytest -n N only worker gw0 starts them: no build runs twice
        return
    if not prebuild.enabled() or not prebuild.wanted(sorted(marked)):
        assert builder is None
        pytest.skip("no background build wanted in this session (select e.g. tests/test_metadata.py)")
    assert builder is not None and builder.names == prebuild.wanted(sorted(marked))
    # Each lane starts its first wanted build at once: it is running or done by now, never missing.
    firsts = {next(n for n in lane if n in builder.names) for lane in prebuild.LANES if set(lane) & builder.names}
    deadline = time.monotonic() + 10
    while not firsts <= {o.name for o in builder.outcomes} and time.monotonic() < deadline:
        time.sleep(0.1)
    started = {o.name for o in builder.outcomes}
    assert firsts <= started <= builder.names, (firsts, started)
    assert all(o.log.is_file() for o in builder.outcomes)


def test_every_prebuild_marker_names_a_known_build():
    import ast

    names = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "prebuild"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    assert names == set(prebuild.BUILDS)  # each build is needed by some test, each marker is known


def test_isolated_venv_cli_refuses_unknown_names():
    import subprocess

    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "isolated_venv.py"), "nosuch"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: usage: isolated_venv.py NAME... (names: mediapipe, tflite-support, "
                                  "tflite-runtime, picamera2; unknown: nosuch)")
