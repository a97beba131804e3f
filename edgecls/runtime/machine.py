"""The conditions of a measurement: OS, CPU, cores, Python and library versions."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Optional


def cpu_model() -> str:
    """A human name for the CPU: a Pi's board model, else /proc/cpuinfo's model name."""
    board = Path("/proc/device-tree/model")
    try:
        if board.is_file():
            name = board.read_text(errors="replace").strip("\x00\n ")
            if name:
                return name
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(runtime: Optional[str] = None, runtime_version: Optional[str] = None) -> dict[str, Any]:
    import numpy

    info: dict[str, Any] = {
        "os": platform.platform(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "runtime": runtime,
        "runtime_version": runtime_version,
        "numpy": numpy.__version__,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        info["opencv"] = None
    return info


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MB (ru_maxrss: KB on Linux, bytes on macOS)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024
    except (ImportError, OSError):
        try:
            import psutil

            return psutil.Process().memory_info().rss / (1024 * 1024)
        except ImportError:
            return 0.0
