"""Export is a transaction: real SIGKILLs at each named step leave the old set or the new set.

The staging/journal mechanism is driven by a small child process (no TensorFlow: fast) that
kills itself at a step; one end-to-end test kills a real ``edgecls export`` mid-commit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgecls.optimize.transaction import (
    JOURNAL, KILL_ENV, STAGING_PREFIX, ExportTransaction, recover, rejected_name,
)

NAMES = ["parity_int8.json", "model_int8.golden.npz", "labels.txt", "model_int8.card.json", "model_int8.tflite"]
REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import sys
    from edgecls.optimize.transaction import ExportTransaction
    folder, version = sys.argv[1], sys.argv[2]
    names = sys.argv[3:]
    tx = ExportTransaction(folder, "model_int8", names)
    tx.begin()
    for n in names:
        tx.path(n).write_text(version)
    tx.commit(names)
""")


def _write_set(folder: Path, version: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in NAMES:
        (folder / n).write_text(version)


def _versions(folder: Path) -> set[str]:
    return {(folder / n).read_text() if (folder / n).exists() else "missing" for n in NAMES}


def _child(folder: Path, version: str, kill_at: str | None) -> int:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop(KILL_ENV, None)
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.run([sys.executable, "-c", CHILD, str(folder), version, *NAMES], env=env,
                          timeout=60).returncode


@pytest.mark.parametrize("kill_at, after", [
    ("staged", "old"),    # candidate complete, no journal: never committed
    ("journal", "new"),   # journal written: the commit happened, recovery finishes it
    ("moving", "new"),    # one file moved
    ("moved", "new"),     # all moved, journal and staging folder still there
])
def test_sigkill_at_each_step_leaves_old_or_new_set(tmp_path, kill_at, after):
    folder = tmp_path / "export"
    _write_set(folder, "old")
    (folder / ".model_int8.tflite.abc123.tmp").write_text("half")  # a temp file of an earlier kill
    (folder / "model_float16.tflite").write_text("other mode")
    assert _child(folder, "new", kill_at) == -signal.SIGKILL
    assert (folder / f"{STAGING_PREFIX}model_int8").is_dir()
    done = recover(folder, "model_int8", NAMES)
    assert done and _versions(folder) == {after}
    leftovers = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    assert leftovers == []
    assert (folder / "model_float16.tflite").read_text() == "other mode"  # other modes untouched
    # The next export starts clean and commits normally.
    assert _child(folder, "newer", None) == 0
    assert _versions(folder) == {"newer"} and not any(p.name.startswith(".") for p in folder.iterdir())


def test_reject_keeps_the_good_set_and_names_the_candidate(tmp_path):
    folder = tmp_path / "export"
    _write_set(folder, "good")
    tx = ExportTransaction(folder, "model_int8", NAMES)
    tx.begin()
    for n in ("parity_int8.json", "model_int8.card.json", "model_int8.tflite"):
        tx.path(n).write_text("bad")
    kept = tx.reject(["parity_int8.json", "model_int8.card.json", "model_int8.tflite"])
    tx.abort()
    assert kept == ["parity_int8.REJECTED.json", "model_int8.REJECTED.card.json", "model_int8.REJECTED.tflite"]
    assert _versions(folder) == {"good"}
    assert all((folder / k).read_text() == "bad" for k in kept)
    assert not any(p.name.startswith(".") for p in folder.iterdir())


def test_an_error_before_the_commit_point_drops_the_candidate(tmp_path):
    folder = tmp_path / "export"
    _write_set(folder, "good")
    tx = ExportTransaction(folder, "model_int8", NAMES)
    tx.begin()
    tx.path("model_int8.tflite").write_text("half-made")
    tx.abort()
    assert _versions(folder) == {"good"} and not any(p.name.startswith(".") for p in folder.iterdir())


def test_recovery_leaves_other_modes_in_flight_alone(tmp_path):
    folder = tmp_path / "export"
    other = folder / f"{STAGING_PREFIX}model_float16"
    other.mkdir(parents=True)
    (other / "model_float16.tflite").write_text("being written by another export")
    recover(folder, "model_int8", NAMES)
    assert (other / "model_float16.tflite").is_file()
    assert recover(folder) == [f"removed an unfinished export candidate ({other.name})"]


@pytest.mark.parametrize("name, rejected", [
    ("model_int8.tflite", "model_int8.REJECTED.tflite"),
    ("model_int8.card.json", "model_int8.REJECTED.card.json"),
    ("parity_pruned_int8.json", "parity_pruned_int8.REJECTED.json"),
    ("model_int8.golden.npz", "model_int8.REJECTED.golden.npz"),
])
def test_rejected_names_cannot_pass_for_the_model(name, rejected):
    assert rejected_name(name) == rejected


@pytest.mark.slow
def test_sigkilled_real_export_mid_commit_is_finished_by_the_next_one(exported_run, tmp_path):
    """kill -9 of 'edgecls export --force' after its first rename: the journal finishes the set."""
    out = tmp_path / "exp"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-c", "from edgecls.cli import main; main()", "export", str(exported_run.path),
           "--float32", "--out", str(out)]
    # The old set has no golden set; the new one has: the two sets differ in a visible way.
    assert subprocess.run(cmd + ["--golden-images", "0"], env=env, capture_output=True, timeout=600).returncode == 0
    assert json.loads((out / "model_float32.card.json").read_text())["golden"] is None
    env[KILL_ENV] = "moving"
    r = subprocess.run(cmd + ["--force"], env=env, capture_output=True, timeout=600)
    assert r.returncode == -signal.SIGKILL
    staging = out / f"{STAGING_PREFIX}model_float32"
    assert (staging / JOURNAL).is_file()
    recover(out, "model_float32")
    card = json.loads((out / "model_float32.card.json").read_text())
    assert card["golden"] == "model_float32.golden.npz" and (out / card["golden"]).is_file()
    from edgecls.runtime.golden import sha256_of

    assert card["sha256"] == sha256_of(out / "model_float32.tflite")  # card and model of one set
    assert not any(p.name.startswith(".") for p in out.iterdir())


@pytest.mark.slow
def test_a_second_export_of_the_same_file_set_is_refused_while_the_first_runs(exported_run, tmp_path):
    """Two ``export --force`` of one file set at once: the second is one line naming the first (its pid and
    command) and touches nothing; the first finishes its set. Without the lock the second deleted the first's
    staging folder mid-export."""
    out = tmp_path / "exp"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = ["export", str(exported_run.path), "--int8", "--out", str(out), "--force", "--max-drop", "100",
            "--min-clear-agreement", "0"]
    # The second process loads TensorFlow first and waits, so it reaches the lock within a second of "go".
    second = subprocess.Popen(
        [sys.executable, "-c", "import sys, edgecls.optimize.export\nfrom edgecls.cli import main\nsys.stdin.readline()\n"
                               f"sys.argv = ['edgecls', *{args!r}]\nmain()"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen([sys.executable, "-c", "from edgecls.cli import main; main()", *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / ".model_int8.lock"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (lock.is_file() and lock.read_text().startswith(f"pid {first.pid}")):
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        assert (out / f"{STAGING_PREFIX}model_int8").is_dir() or first.poll() is None
        _, err2 = second.communicate("go\n", timeout=120)
        assert second.returncode == 1, err2
        errors = [line for line in err2.splitlines() if line.startswith("Error:")]
        assert errors == [f"Error: {out} is in use by another edgecls process (pid {first.pid}: edgecls export "
                          f"{exported_run.path} --int8); wait for it to finish, or choose another --out"], err2
        _, err1 = first.communicate(timeout=600)
        assert first.returncode == 0, err1
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
    card = json.loads((out / "model_int8.card.json").read_text())
    from edgecls.runtime.golden import sha256_of

    assert card["sha256"] == sha256_of(out / "model_int8.tflite")
    assert not (out / f"{STAGING_PREFIX}model_int8").exists()
