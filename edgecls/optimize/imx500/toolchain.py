"""Sony's IMX500 toolchain in a venv of its own, and the Python and Java it needs.

``edge-mdt[tf]`` pins TensorFlow 2.15 and numpy<2 and needs CPython 3.11; the host runs
TensorFlow 2.21, so the two cannot share a venv (pip's resolver refuses). The venv is built on
first use under a cache folder, keyed by the interpreter and the pinned requirements, under a file
lock so two exports never build it at once; a ``.complete`` marker is written last, so a build
that was killed midway is started again. The converter's back end (``imxconv-tf``) is Java and
needs Java 17.

    python -m edgecls.optimize.imx500.toolchain      # build (or find) it now; prints its path
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from edgecls.core.errors import EdgeclsError

REQUIREMENTS = ("edge-mdt[tf]==1.3.0",)
"""Sony's bundle: tensorflow 2.15, model-compression-toolkit 2.5.1, imx500-converter 3.18.2."""
PYTHON_VERSION = (3, 11)
JAVA_MAJOR = 17
CACHE_ENV = "EDGECLS_IMX500_CACHE"  # folder that holds the keyed venvs (the test suite points it into .venv-test)
VENV_ENV = "EDGECLS_IMX500_VENV"  # an existing venv to use as is
PYTHON_ENV = "EDGECLS_IMX500_PYTHON"  # the CPython 3.11 to build the venv from
JAVA_ENV = "EDGECLS_IMX500_JAVA"  # a java executable (17) for the converter
BUILD_TIMEOUT_S = 3600  # ~2.3 GB of wheels on a slow line
PYTHON_HINT = ("install CPython 3.11 (Debian/Raspberry Pi OS bookworm: sudo apt install python3.11 python3.11-venv; "
               f"or pyenv install 3.11) or point {PYTHON_ENV} at one")
JAVA_HINT = f"sudo apt install openjdk-17-jre-headless (or point {JAVA_ENV} at a Java 17 'java')"


@dataclass(frozen=True)
class Toolchain:
    """A ready Sony venv and the Java the converter runs on."""

    venv: Path
    java: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def converter(self) -> Path:
        return self.venv / "bin" / "imxconv-tf"

    def env(self) -> dict[str, str]:
        """The environment Sony's tools run in: no host PYTHONPATH, this Java first on PATH."""
        # TF_USE_LEGACY_KERAS=1 (set for the host's TF 2.21) makes TF 2.15's tf.keras look for tf_keras.
        drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "TF_USE_LEGACY_KERAS")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        java_home = self.java.resolve().parent.parent
        env["JAVA_HOME"] = str(java_home)
        env["PATH"] = os.pathsep.join([str(java_home / "bin"), str(self.venv / "bin"), env.get("PATH", "")])
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        env["PYTHONNOUSERSITE"] = "1"
        return env


def _version_of(python: str) -> Optional[tuple[int, int]]:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.fullmatch(r"(\d+)\.(\d+)", out.stdout.strip())
    return (int(m.group(1)), int(m.group(2))) if out.returncode == 0 and m else None


def find_python() -> str:
    """A CPython 3.11 to build the venv from; one clear error when there is none."""
    wanted = f"{PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}"
    given = os.environ.get(PYTHON_ENV)
    candidates = [given] if given else [f"python{wanted}", "python3"]
    if not given and sys.version_info[:2] == PYTHON_VERSION:
        candidates.insert(0, getattr(sys, "_base_executable", sys.executable))
    seen = []
    for name in candidates:
        path = shutil.which(name) if name and os.sep not in name else name
        if not path or not Path(path).exists():
            continue
        version = _version_of(path)
        if version == PYTHON_VERSION:
            return str(Path(path).absolute())
        seen.append(f"{path} is {'.'.join(map(str, version)) if version else 'not runnable'}")
    found = f" ({'; '.join(seen)})" if seen else ""
    raise EdgeclsError(f"the IMX500 toolchain (Sony edge-mdt) needs Python {wanted}, none found{found}: {PYTHON_HINT}")


def java_major(java: str) -> Optional[int]:
    """The major version ``java -version`` reports (``1.8`` -> 8), or None."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def find_java() -> Path:
    """A Java 17 ``java``: JAVA_ENV, then JAVA_HOME, then the Debian JVM folders, then PATH."""
    given = os.environ.get(JAVA_ENV)
    candidates = [given] if given else []
    if not given:
        if os.environ.get("JAVA_HOME"):
            candidates.append(os.path.join(os.environ["JAVA_HOME"], "bin", "java"))
        candidates += sorted(glob.glob(f"/usr/lib/jvm/*{JAVA_MAJOR}*/bin/java"))
        candidates.append(shutil.which("java") or "")
    seen = []
    for java in dict.fromkeys(c for c in candidates if c):
        if not Path(java).exists():
            continue
        major = java_major(java)
        if major == JAVA_MAJOR:
            return Path(java).absolute()
        seen.append(f"{java} is Java {major if major is not None else '?'}")
    found = f"; found {', '.join(seen)}" if seen else ""
    raise EdgeclsError(f"the IMX500 converter (imxconv-tf) needs Java {JAVA_MAJOR}{found}: {JAVA_HINT}")


def cache_dir() -> Path:
    """Where keyed venvs live: CACHE_ENV, else $XDG_CACHE_HOME/edgecls (~/.cache/edgecls)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgecls"


def venv_path(python: str, requirements: Sequence[str] = REQUIREMENTS) -> Path:
    """``<cache>/imx500-<hash of interpreter + requirements>``: a new pin is a new venv."""
    key = hashlib.sha256("\n".join([str(Path(python).resolve()), *requirements]).encode()).hexdigest()[:12]
    return cache_dir() / f"imx500-{key}"


def build_venv(python: str, home: Path, requirements: Sequence[str] = REQUIREMENTS, *,
               log=lambda line: print(line, file=sys.stderr, flush=True)) -> Path:
    """Build (or find) the venv at ``home`` under its lock; returns ``home``."""
    home.parent.mkdir(parents=True, exist_ok=True)
    logfile = home.with_name(home.name + ".log")
    with open(home.with_name(home.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / ".complete").is_file():
            return home
        log(f"Building the IMX500 toolchain ({', '.join(requirements)}; TensorFlow 2.15, ~2.3 GB) in {home}, once ...")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        with open(logfile, "w") as out:
            steps = ([python, "-m", "venv", "--clear", str(home)],
                     [str(home / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                      *requirements])
            for step in steps:
                try:
                    rc = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, env=env,
                                        timeout=BUILD_TIMEOUT_S).returncode
                except subprocess.TimeoutExpired:
                    rc = "timeout"
                if rc != 0:
                    raise EdgeclsError(f"could not build the IMX500 toolchain venv in {home} ({Path(step[0]).name} "
                                       f"{'timed out' if rc == 'timeout' else f'exit {rc}'}); log: {logfile}")
        (home / ".complete").write_text("\n".join(requirements) + "\n")
    return home


def ensure(*, build: bool = True) -> Toolchain:
    """The toolchain, built on first use; Python 3.11 and Java 17 are checked before anything is built."""
    java = find_java()
    given = os.environ.get(VENV_ENV)
    if given:
        venv = Path(given)
        if not (venv / "bin" / "imxconv-tf").is_file():
            raise EdgeclsError(f"{VENV_ENV}={given} has no bin/imxconv-tf; pip install '{REQUIREMENTS[0]}' there "
                               f"(Python {PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}), or unset it")
        return Toolchain(venv, java)
    python = find_python()
    home = venv_path(python)
    if not (home / ".complete").is_file():
        if not build:
            raise EdgeclsError(f"the IMX500 toolchain is not built yet ({home}); run 'make imx500-venv'")
        build_venv(python, home)
    return Toolchain(home, java)


def main(argv: Sequence[str] = ()) -> int:
    try:
        tc = ensure()
    except EdgeclsError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print(f"IMX500 toolchain: {tc.venv} (Java: {tc.java})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
