"""Venvs the tests build for other programs' real clients (MediaPipe, tflite-runtime, a user's pip).

Each is built once under ``.venv-test/<name>-<hash of its requirements>`` (git-ignored) and reused
while its requirements stay the same; a lock keeps two test processes from building one at once.
Only package registries are used, as a user's own ``pip install`` would.

The venvs the suite needs are named in ``SPECS``, so the background builds a session starts
(tests/prebuild.py) make exactly the venvs the tests then open:

    python tests/isolated_venv.py mediapipe tflite-support   # build (or find) them now
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

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


def python_at_most_311() -> Optional[str]:
    """A CPython <= 3.11 (tflite-runtime 2.14 has no wheel past 3.11), or None."""
    if sys.version_info[:2] <= (3, 11):
        return sys.executable
    for name in ("python3.11", "python3.10"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass(frozen=True)
class VenvSpec:
    requirements: tuple[str, ...]
    python: Callable[[], Optional[str]] = lambda: sys.executable
    """The interpreter the venv is made from; None when this machine has none that fits."""


SPECS: dict[str, VenvSpec] = {
    "mediapipe": VenvSpec(("mediapipe==1.2.2",)),
    # Its compiled helpers need libusb-1.0-0 (tools/system-packages.txt).
    "tflite-support": VenvSpec(("tflite-support==0.4.4",)),
    # Editable, so the venv (cached by its requirements) always runs this tree's current code.
    "tflite-runtime": VenvSpec(("tflite-runtime==2.14.0", "numpy<2", "opencv-python-headless", "-e", str(ROOT)),
                               python=python_at_most_311),
    # Picamera2's released source, for its IMX500 output parser (it does not import off a Pi: libcamera, pykms).
    "picamera2": VenvSpec(("--no-deps", "picamera2==0.3.38")),
}


def named_venv(name: str) -> Path:
    """The python executable of ``SPECS[name]``'s venv (built on first use); LookupError when this
    machine has no interpreter for it."""
    spec = SPECS[name]
    python = spec.python()
    if python is None:
        raise LookupError(f"{name}: no suitable Python interpreter on this machine")
    return isolated_venv(name, spec.requirements, python=python)


def main(argv: Sequence[str]) -> int:
    unknown = [n for n in argv if n not in SPECS]
    if not argv or unknown:
        print(f"Error: usage: isolated_venv.py NAME... (names: {', '.join(SPECS)}; unknown: {' '.join(unknown)})",
              file=sys.stderr)
        return 2
    for name in argv:
        try:
            print(f"{name}: {named_venv(name)}", flush=True)
        except LookupError as e:
            print(f"{e}: skipped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
