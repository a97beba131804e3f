"""The Pi's own userland under qemu-user (tools/pi_userland.sh, `make pi-check`): Debian bookworm
arm64 + Python 3.11, edgecls[device] from aarch64 wheels, camera/verify/doctor/bench as a
Cortex-A72 (Pi 4) and a Cortex-A76 (Pi 5). Correctness only; the emulated timings mean nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1800  # a cold build downloads a rootfs and ~60 MB of wheels

pytestmark = pytest.mark.slow


@pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap needs root (CI and these machines run as root)")
@pytest.mark.prebuild("pi-userland")
def test_pi_userland_check_passes_on_a72_and_a76():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = ["bash", str(ROOT / "tools" / "pi_userland.sh")]
    # --build-only (what the session starts in the background) fills the cache and runs nothing...
    built = subprocess.run([*script, "--build-only"], capture_output=True, text=True,
                           env={**env, "PYTHON": sys.executable}, timeout=TIMEOUT_S)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "nothing run (--build-only)" in built.stdout and "== cortex" not in built.stdout
    # ... so the check itself finds the rootfs and the wheels ready.
    proc = subprocess.run(script, capture_output=True, text=True, env={**env, "PYTHON": sys.executable},
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "building the bookworm arm64 rootfs" not in out and "installing edgecls[device]" not in out, out
    for cpu, features in (("cortex-a72", "features asimd;"), ("cortex-a76", "features asimd asimddp")):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"pi-check: {cpu}: "))
        assert "verify PASSED (bit-identical to the host)" in line and "camera 24 frames" in line, line
        assert features in line, line
    assert "passed on cortex-a72,cortex-a76" in out and "meaningless" in out


def test_pi_userland_refuses_an_unknown_option():
    proc = subprocess.run(["bash", str(ROOT / "tools" / "pi_userland.sh"), "--fast"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "Error: unknown option '--fast' (usage: bash tools/pi_userland.sh [--build-only])\n"
