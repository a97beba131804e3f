"""``--install``: the device's venv with edgecls[device], the same steps as device/install.sh.

edgecls is installed from a wheel this host builds from its own installed source (so the device
runs the very code that made the golden set), copied over; pip on the device resolves
``[device]``'s dependencies (the TFLite runtime, OpenCV) for its own CPU from PyPI.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from edgecls.core.errors import EdgeclsError
from edgecls.deploy.ssh import Ssh, is_disk_full, q

WHEEL_BUILD_TIMEOUT_S = 600
# What a wheel needs from a source tree; copied so the build leaves nothing in the user's checkout.
_SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in")


def source_root() -> Path:
    """The folder this edgecls was installed from (an editable install or a checkout)."""
    import edgecls

    root = Path(edgecls.__file__).resolve().parents[1]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "edgecls"' not in pyproject.read_text(encoding="utf-8"):
        raise EdgeclsError(
            f"this edgecls ({root}) is not installed from source, so no wheel can be built from it; "
            "pass --wheel edgecls-X.whl"
        )
    return root


def source_digest(package_dir: Path) -> str:
    """A short hash of every file of the package: same code, same digest."""
    h = hashlib.sha256()
    for f in sorted(p for p in package_dir.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(package_dir)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _local_version(pyproject: Path, digest: str) -> None:
    """Give the wheel a PEP 440 local version (0.1.0+src.<digest>): between two releases, changed
    code is a different version, so pip on the device upgrades it like any other package."""
    text = pyproject.read_text(encoding="utf-8")
    new, n = re.subn(r'^(version\s*=\s*")([^"+]+)(")', rf"\g<1>\g<2>+src.{digest}\g<3>", text, count=1, flags=re.M)
    if n != 1:
        raise EdgeclsError(f"cannot find the version in {pyproject}; pass --wheel edgecls-X.whl")
    pyproject.write_text(new, encoding="utf-8")


def build_wheel(out_dir: Path, root: Optional[Path] = None) -> Path:
    """``pip wheel`` (this package only) of this host's edgecls source; returns the .whl path."""
    root = root or source_root()
    with tempfile.TemporaryDirectory(prefix="edgecls-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in _SOURCE_FILES:
            if (root / name).is_file():
                shutil.copy2(root / name, src / name)
        shutil.copytree(root / "edgecls", src / "edgecls", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _local_version(src / "pyproject.toml", source_digest(src / "edgecls"))
        argv = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                "-w", str(out_dir), str(src)]
        if importlib.util.find_spec("setuptools") is not None:
            argv.insert(4, "--no-build-isolation")  # build offline with it, no isolated env to download
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=WHEEL_BUILD_TIMEOUT_S)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or ["no message"]
        raise EdgeclsError(f"building the edgecls wheel failed: {last[0]}")
    wheels = sorted(out_dir.glob("edgecls-*.whl"))
    if not wheels:
        raise EdgeclsError("building the edgecls wheel produced no .whl")
    return wheels[-1]


def install_script(python: str, venv: str, wheel: str) -> str:
    """The device side of --install: device/install.sh's venv steps (apt and the unit need root)."""
    py, v, w = q(python), q(venv), q(wheel)
    return "\n".join([
        "set -e",
        f'if [ ! -x {v}/bin/python ]; then',
        # --system-site-packages: Picamera2 comes from apt (python3-picamera2), tied to libcamera.
        f'  {py} -m venv --system-site-packages {v} || {{ echo "EDGECLS: no venv module" >&2; exit 3; }}',
        "fi",
        f"{v}/bin/python -m pip install -q --disable-pip-version-check --upgrade pip",
        # Changed code carries another local version (see build_wheel), so this upgrades it too.
        f'{v}/bin/python -m pip install -q --disable-pip-version-check --upgrade "{w}[device]"',
        f"{v}/bin/edgecls --version",
    ])


def install_on_device(ssh: Ssh, *, python: str, venv: str, wheel: Path, remote_tmp: str) -> str:
    """Copy the wheel, create/upgrade the venv; returns the installed ``edgecls --version`` line."""
    ssh.put([wheel], remote_tmp)
    proc = ssh.run(install_script(python, venv, f"{remote_tmp}/{wheel.name}"), what="installing edgecls[device]",
                   check=False)
    if proc.returncode == 3 or "ensurepip is not available" in proc.stdout + proc.stderr:
        raise EdgeclsError(f"{python} on {ssh.target.host} cannot create a venv; install it there: "
                           "sudo apt install python3-venv (or run device/install.sh)")
    if proc.returncode != 0 and is_disk_full(proc.stderr):
        raise EdgeclsError(f"the disk of {ssh.target.host} is full: installing edgecls[device] failed "
                           "(No space left on device); free some space there and try again")
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no message")
        raise EdgeclsError(f"installing edgecls[device] on {ssh.target.host} failed: {why}")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
