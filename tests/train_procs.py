"""Real ``edgecls train`` subprocesses for the fault tests, and SIGKILL after their N-th checkpoint.

Shared by tests/test_train_faults.py (one process) and tests/test_multiworker.py (a two-worker
cluster): both start the CLI a user runs and kill it at a chosen checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest

CLI = [sys.executable, "-c", "from edgecls.cli import main; main()"]
POLL_S = 0.02  # a checkpoint is seen within 20 ms of its write
WAIT_S = 900  # generous: CI machines are shared too
REPO = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    """The test's environment with this checkout first on PYTHONPATH, TF quiet and deterministic."""
    out = dict(os.environ, TF_DETERMINISTIC_OPS="1", TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def start(log: Path, *args: str, environ: Optional[dict[str, str]] = None,
          prefix: Sequence[str] = ()) -> subprocess.Popen:
    """``[prefix...] edgecls ARGS`` in the background, stdout and stderr into ``log`` (see log_tail)."""
    with open(log, "wb") as f:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([*prefix, *CLI, *args], env=environ or env(), stdout=f, stderr=subprocess.STDOUT)
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def run(*args: str) -> subprocess.CompletedProcess:
    """``edgecls ARGS`` to completion (text output captured)."""
    return subprocess.run([*CLI, *args], env=env(), capture_output=True, text=True, timeout=WAIT_S)


def log_tail(proc: subprocess.Popen, chars: int = 4000) -> str:
    path = getattr(proc, "log_path", None)
    return path.read_text(errors="replace")[-chars:] if path else ""


def read_state(state_json: Path) -> dict:
    """A checkpoint's state.json, or {} before the first one (it is written atomically)."""
    try:
        return json.loads(state_json.read_text())
    except (OSError, ValueError):
        return {}


def saved_epochs(state_json: Path) -> int:
    return len(read_state(state_json).get("rows", []))


def kill_after_checkpoints(procs: Sequence[subprocess.Popen], state_files: Sequence[Path], epochs: int = 1) -> list[dict]:
    """SIGKILL every process once each ``state_files[i]`` records ``epochs`` finished epochs.

    Fails the test if a process ends first or nothing appears within WAIT_S. Returns the states
    on disk after the kill (what a resume finds)."""
    deadline = time.monotonic() + WAIT_S
    try:
        while time.monotonic() < deadline:
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    pytest.fail(f"process {i} ended (exit {proc.returncode}) before it could be killed:\n"
                                f"{log_tail(proc)}")
            if all(saved_epochs(f) >= epochs for f in state_files):
                for proc in procs:
                    proc.send_signal(signal.SIGKILL)
                for proc in procs:
                    proc.wait()
                return [read_state(f) for f in state_files]
            time.sleep(POLL_S)
        pytest.fail(f"no checkpoint of {epochs} epoch(s) appeared within {WAIT_S} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def old_exported_run(out: Path) -> dict[str, str]:
    """An existing run a user exported from, in ``out`` (made here); returns its ``tree`` to compare after."""
    out.mkdir()
    (out / "config.json").write_text('{"train": {}}')
    (out / "labels.txt").write_text("a\nb\n")
    (out / "model.keras").write_bytes(b"the old model")
    (out / "export").mkdir()
    (out / "export" / "model_int8.tflite").write_bytes(b"the old deployed model")
    return tree(out)


def tree(folder: Path) -> dict[str, str]:
    """Every file's hash, except the writer's lock file (edgecls' own, kept: deleting lock files races)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".edgecls.lock"}


def weights(run_dir: Path) -> list[np.ndarray]:
    from edgecls.train.model_io import load_model

    return load_model(run_dir / "model.keras").get_weights()
