"""Where one training run's time goes: named stages, wall-clock seconds, kept in metrics.json.

Always on (a few ``perf_counter`` calls): ``metrics.json["timings"]`` holds seconds per stage
of the run (scan, model build, feature cache, each phase, evaluation, plots, ...) and the time
from process start to the start of training (interpreter start-up, imports, option checks),
so a slow run can be explained after the fact without re-running it under a profiler.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator, Optional

_CLK_TCK = "SC_CLK_TCK"


def process_age_s() -> Optional[float]:
    """Seconds since this process started (Linux /proc), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5); two fields precede the split point
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf(_CLK_TCK))
    except (OSError, ValueError, IndexError):
        return None


class Timings:
    """Accumulates wall-clock seconds per named stage, in the order stages first ran."""

    def __init__(self, *, resumed: bool = False) -> None:
        self.resumed = resumed  # a resumed run's figures cover only the part after the restart
        self.t0 = time.perf_counter()
        self.before_s = process_age_s()
        self.stages: dict[str, float] = {}
        self.overlapped: dict[str, float] = {}
        """Work done on another thread while the stages ran (not part of their sum)."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def add(self, name: str, seconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + seconds

    def record(self) -> dict:
        """The metrics.json entry: stages, their sum, and the whole run's wall time so far."""
        total = time.perf_counter() - self.t0
        return {
            "stages_s": {k: round(v, 2) for k, v in self.stages.items()},
            "other_s": round(max(0.0, total - sum(self.stages.values())), 2),
            "overlapped_s": {k: round(v, 2) for k, v in self.overlapped.items()},
            "train_total_s": round(total, 2),
            "process_start_to_train_s": None if self.before_s is None else round(self.before_s, 2),
            "resumed": self.resumed,
        }


def summary_line(record: dict) -> str:
    """``time: 41.2 s in training (head 3.1, fine_tune 30.2, ...); 6.3 s before it (start-up, imports)``."""
    parts = ", ".join(f"{k} {v:.1f}" for k, v in record["stages_s"].items() if v >= 0.05)
    line = f"time:    {record['train_total_s']:.1f} s training ({parts})"
    if record.get("process_start_to_train_s") is not None:
        line += f"; {record['process_start_to_train_s']:.1f} s before it (start-up, imports)"
    return line
