"""Network-bound builds started in the background when a test session starts.

On a fresh clone the emulated Pi's userland (tools/pi_userland.sh: a Debian rootfs and aarch64
wheels) and the venvs of other programs' clients (tests/isolated_venv.py: MediaPipe, TFLite
Support, tflite-runtime) spend minutes downloading. Started right after collection, that time
overlaps the CPU-bound tests; the tests that need them later wait on the same file locks the
builders hold, then find them complete. With a warm cache each builder finds its ``.complete``
marker and exits in well under a second.

Only builds some selected test is marked for (``@pytest.mark.prebuild("name")``) start. The
builders run in their own process groups; whatever still runs when the session ends is stopped,
so no process outlives pytest. A build that failed is named in the summary with its log, and the
test that needs it builds it again in the foreground (so its own error is the one reported).

``EDGECLS_PREBUILD=0`` turns background builds off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 10  # SIGTERM, then this long before SIGKILL


def _venvs_dir() -> Path:
    return Path(os.environ.get("EDGECLS_TEST_VENVS", ROOT / ".venv-test"))


def _env_without_pythonpath(**extra: str) -> dict[str, str]:
    # As the tests run them: the builders must not see a checkout through PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Build:
    command: Callable[[], list[str]]
    env: Callable[[], dict[str, str]] = lambda: _env_without_pythonpath()
    applies: Callable[[], bool] = lambda: True
    """False when the tests that need it will skip on this machine (then it is not started)."""


def _isolated(name: str) -> Build:
    from isolated_venv import SPECS

    return Build(command=lambda: [sys.executable, str(ROOT / "tests" / "isolated_venv.py"), name],
                 applies=lambda: SPECS[name].python() is not None)


def _imx500_applies() -> bool:
    from edgecls.core.errors import EdgeclsError
    from edgecls.optimize.imx500.toolchain import find_python

    try:
        return bool(find_python())
    except EdgeclsError:  # no CPython 3.11: the test says so and skips
        return False


def _imx500_env() -> dict[str, str]:
    from isolated_venv import VENVS

    return _env_without_pythonpath(EDGECLS_IMX500_CACHE=str(VENVS / "imx500"))


BUILDS: dict[str, Build] = {
    "pi-userland": Build(command=lambda: ["bash", str(ROOT / "tools" / "pi_userland.sh"), "--build-only"],
                         env=lambda: _env_without_pythonpath(PYTHON=sys.executable),
                         applies=lambda: os.geteuid() == 0),  # debootstrap needs root; the test skips otherwise
    "mediapipe": _isolated("mediapipe"),
    "tflite-support": _isolated("tflite-support"),
    "tflite-runtime": _isolated("tflite-runtime"),
    "picamera2": _isolated("picamera2"),
    # Sony's IMX500 toolchain (~2.3 GB): edgecls builds it itself, in the folder the tests point it to.
    "imx500": Build(command=lambda: [sys.executable, "-m", "edgecls.optimize.imx500.toolchain"], env=_imx500_env,
                    applies=_imx500_applies),
}
# Two lanes: the rootfs download overlaps the pip downloads; more would compete with the tests
# for the two cores. Each lane is ordered as the tests that need its builds run.
LANES = (("pi-userland", "imx500"), ("mediapipe", "tflite-support", "tflite-runtime", "picamera2"))


@dataclass
class Outcome:
    name: str
    log: Path
    started: float = field(default_factory=time.monotonic)
    returncode: Optional[int] = None
    seconds: Optional[float] = None
    stopped: bool = False


class Prebuilder:
    """Runs the lanes in threads; each build is one subprocess in its own process group."""

    def __init__(self, names: set[str]):
        self.names = names
        self.logs = _venvs_dir() / "prebuild"
        self.outcomes: list[Outcome] = []
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for lane in LANES:
            todo = [n for n in lane if n in self.names]
            if todo:
                t = threading.Thread(target=self._run_lane, args=(todo,), name=f"prebuild-{todo[0]}", daemon=True)
                t.start()
                self._threads.append(t)

    def _run_lane(self, names: list[str]) -> None:
        for name in names:
            build = BUILDS[name]
            outcome = Outcome(name, self.logs / f"{name}.log")
            with self._lock:
                if self._stopping:
                    return
                self.outcomes.append(outcome)
                with open(outcome.log, "wb") as log:  # the child keeps its own descriptor
                    proc = subprocess.Popen(build.command(), env=build.env(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                self._procs[name] = proc
            outcome.returncode = proc.wait()
            outcome.seconds = time.monotonic() - outcome.started

    def stop(self) -> None:
        """Stop whatever still runs (process group: pip's and debootstrap's children too)."""
        with self._lock:
            self._stopping = True
            running = [(n, p) for n, p in self._procs.items() if p.poll() is None]
        for name, proc in running:
            next(o for o in self.outcomes if o.name == name).stopped = True
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for _, proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Whatever is left of the group (the leader, or a child that ignored SIGTERM) ends now.
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        for t in self._threads:
            t.join(STOP_GRACE_S)

    def summary(self) -> list[str]:
        lines = []
        for o in self.outcomes:
            if o.stopped:
                lines.append(f"background build {o.name}: stopped unfinished at the end of the session (log: {o.log})")
            elif o.returncode not in (0, None):
                lines.append(f"background build {o.name} FAILED (exit {o.returncode}); the tests that need it try again "
                             f"in the foreground. Log: {o.log}")
            elif o.returncode == 0 and o.seconds is not None:
                lines.append(f"background build {o.name}: ready after {o.seconds:.0f} s")
        return lines


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def wanted(markers: list[str]) -> set[str]:
    """The builds named by selected tests' markers that apply on this machine."""
    unknown = set(markers) - set(BUILDS)
    if unknown:
        raise ValueError(f"prebuild marker names unknown build(s) {sorted(unknown)}; known: {sorted(BUILDS)}")
    return {n for n in set(markers) if BUILDS[n].applies()}


def enabled() -> bool:
    return os.environ.get("EDGECLS_PREBUILD", "1") != "0"
