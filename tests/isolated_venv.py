"""Venvs the tests build for other programs' real clients (MediaPipe, tflite-runtime, a user's pip).

Each is built once under ``.venv-test/<name>-<hash of its requirements>`` (git-ignored) and reused
while its requirements stay the same; a lock keeps two test processes from building one at once.
Only package registries are used, as a user's own ``pip install`` would.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
VENVS = Path(os.environ.get("EDGECLS_TEST_VENVS", ROOT / ".venv-test"))


def isolated_venv(name: str, requirements: Sequence[str], *, python: str = sys.executable,
                  timeout_s: int = 1200) -> Path:
    """The python executable of a venv with ``requirements`` installed (built on first use)."""
    key = hashlib.sha256("\n".join([python, *requirements]).encode()).hexdigest()[:12]
    home = VENVS / f"{name}-{key}"
    exe = home / "bin" / "python"
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f"{name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / ".complete").is_file():
            return exe
        subprocess.run([python, "-m", "venv", "--clear", str(home)], check=True, timeout=timeout_s)
        subprocess.run([str(exe), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
                       check=True, timeout=timeout_s)
        (home / ".complete").write_text("\n".join(requirements) + "\n")
    return exe
