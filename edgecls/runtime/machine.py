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


# /proc/cpuinfo flags that decide int8/float speed. Arm: asimddp is the dot-product (SDOT/UDOT)
# XNNPACK's fast int8 kernels use (Cortex-A76 in the Pi 5 has it, the Pi 4's A72 does not);
# i8mm the int8 matrix multiply. x86: AVX2/FMA, and VNNI (the x86 int8 dot-product).
NOTABLE_CPU_FEATURES = (
    "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2",
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
)
DOT_PRODUCT_FEATURES = frozenset({"asimddp", "avx512_vnni", "avx_vnni"})


def board_model() -> Optional[str]:
    """The board's name from the device tree ("Raspberry Pi 5 Model B Rev 1.0"), None off a Pi."""
    try:
        name = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None
    return name or None


def cpu_features(cpuinfo: Optional[str] = None) -> list[str]:
    """The notable CPU flags present on every core ("Features" on Arm, "flags" on x86)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return []
    per_core = []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("features", "flags"):
            per_core.append(set(value.split()))
    if not per_core:
        return []
    common = set.intersection(*per_core)
    return [f for f in NOTABLE_CPU_FEATURES if f in common]


def machine_info(runtime: Optional[str] = None, runtime_version: Optional[str] = None) -> dict[str, Any]:
    import numpy

    features = cpu_features()
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
        # So several devices' bench JSONs compare in one table: which board, which int8 instructions.
        "board": board_model(),
        "cpu_features": features,
        "dot_product": any(f in DOT_PRODUCT_FEATURES for f in features),
        "hostname": platform.node(),
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
