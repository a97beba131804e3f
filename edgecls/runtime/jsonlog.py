"""A bounded JSONL log for weeks unattended: log on change (or at a rate), rotate by size, keep N files.

Per-frame rows at 30 FPS are ~250 MB a day; on an SD card that is the first thing to fail.
``RotatingJsonl`` renames ``log.jsonl`` -> ``log.jsonl.1`` -> ... -> ``log.jsonl.N`` when it
passes its size cap, so the log never holds more than (N + 1) x cap bytes and a restart keeps
the previous runs (the old systemd ``.prev`` trick kept only one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Optional

from edgecls.core.device_config import LOG_MODES
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import apply_default_mode
from edgecls.runtime.sinks import FrameResult

BYTES_PER_MB = 1024 * 1024


def rotated_name(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def rotate_files(path: Path, keep: int) -> None:
    """log -> log.1 -> log.2 ... ; the oldest beyond ``keep`` is deleted."""
    if keep < 1:
        path.unlink(missing_ok=True)
        return
    rotated_name(path, keep).unlink(missing_ok=True)
    for n in range(keep - 1, 0, -1):
        if rotated_name(path, n).exists():
            os.replace(rotated_name(path, n), rotated_name(path, n + 1))
    if path.exists():
        os.replace(path, rotated_name(path, 1))


class RotatingJsonl:
    """Append JSON rows, flushed per row; rotate when the file passes ``max_bytes`` (0 = never)."""

    def __init__(self, path: str | os.PathLike, *, max_bytes: int = 0, keep: int = 5, force: bool = False) -> None:
        self.path = Path(path)
        self.max_bytes, self.keep = max_bytes, keep
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.max_bytes and self.path.exists():
            rotate_files(self.path, self.keep)  # the previous run is kept, not overwritten
        mode = "w" if (force or self.max_bytes) else "x"
        self._f: Optional[IO[str]] = self._open(mode)

    def _open(self, mode: str) -> IO[str]:
        f = open(self.path, mode, encoding="utf-8")
        apply_default_mode(self.path)
        return f

    def write(self, row: dict[str, Any]) -> None:
        if self._f is None:
            return
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()  # a crash or power cut keeps every row written so far
        if self.max_bytes and self._f.tell() >= self.max_bytes:
            self._f.close()
            rotate_files(self.path, self.keep)
            self._f = self._open("w")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class JsonlSink:
    """The loop's prediction log: every frame (``frame``), or when the top-1 changes (``change``).

    ``interval_s`` > 0 also bounds the rate: in ``frame`` mode at most one row per interval, in
    ``change`` mode a heartbeat row at least once per interval (so a silent log means a dead loop,
    not a quiet scene).
    """

    def __init__(self, log: RotatingJsonl, *, mode: str = "frame", interval_s: float = 0.0) -> None:
        if mode not in LOG_MODES:
            raise EdgeclsError(f"--log-on must be one of {', '.join(LOG_MODES)}, got {mode!r}")
        self.log, self.mode, self.interval_s = log, mode, interval_s
        self._last_label: Optional[str] = None
        self._last_t: Optional[float] = None
        self.rows = 0

    def _due(self, r: FrameResult) -> tuple[bool, str]:
        label = r.top1.label if r.top1 else None
        elapsed = None if self._last_t is None else r.wall_time - self._last_t
        if self.mode == "frame":
            return (self.interval_s <= 0 or elapsed is None or elapsed >= self.interval_s), "frame"
        if self._last_t is None or label != self._last_label:
            return True, "change"
        if self.interval_s > 0 and elapsed is not None and elapsed >= self.interval_s:
            return True, "heartbeat"
        return False, ""

    def handle(self, r: FrameResult) -> None:
        due, why = self._due(r)
        if not due:
            return
        top = r.top1
        row = {
            "time": round(r.wall_time, 6),
            "frame": r.frame,
            "source_frame": r.source_frame,
            "label": top.label if top else None,
            "unknown": r.unknown is not None,
            "top_k": [c.as_dict() for c in r.categories],
            "inference_ms": round(r.stage_ms.get("invoke", 0.0), 4),
            "frame_age_ms": round(r.frame_age_ms, 3),
        }
        if self.mode == "change":
            row["reason"] = why
        self.log.write(row)
        self.rows += 1
        self._last_label = r.top1.label if r.top1 else None
        self._last_t = r.wall_time

    def report(self) -> dict[str, Any]:
        return {"jsonl_rows": self.rows}

    def close(self) -> None:
        self.log.close()
