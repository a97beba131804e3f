"""An export is a transaction: the whole file set is replaced, or none of it.

Design (staging folder + commit journal, all inside the destination folder so every rename is
on one filesystem and atomic):

1. ``begin``: recover what an earlier, killed export left (below), then create
   ``.staging-<model stem>/``. The candidate model, card, parity report and golden set are
   written and checked there under their final names.
2. ``commit(names)``: write ``COMMIT`` (the list of names to move) atomically into the staging
   folder — this is the commit point — then ``os.replace`` each file into place, then delete
   the journal and the folder.
3. ``reject(names)``: the candidate failed its gate; move its files into place under
   ``<stem>.REJECTED...`` names (the journal is used the same way), leaving the good set alone.

Recovery (at the start of every export, and by :func:`recover` for readers): a staging folder
*with* a journal is rolled forward (the renames are finished); one *without* a journal is a
candidate that never reached the commit point and is deleted. Temp files that atomic writes
(``.<name>.XXXX.tmp``) left behind are deleted too. So a SIGKILL at any moment leaves, once
recovered, either the complete old set or the complete new one, and no stray files.

``EDGECLS_EXPORT_KILL_AT=<step>`` makes the process SIGKILL itself at a named step (tests only):
``staged`` (candidate written, before the journal), ``journal`` (journal written, nothing
moved), ``moving`` (after the first rename), ``moved`` (all renamed, journal still there).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Iterable

from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_text

KILL_ENV = "EDGECLS_EXPORT_KILL_AT"
STAGING_PREFIX = ".staging-"
JOURNAL = "COMMIT"
REJECTED_TAG = ".REJECTED"


def _kill_point(step: str) -> None:
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def rejected_name(name: str) -> str:
    """``model_int8.tflite`` -> ``model_int8.REJECTED.tflite``; ``parity_int8.json`` -> ``parity_int8.REJECTED.json``."""
    for suffix in (".card.json", ".golden.npz", ".packerOut.zip", ".mct.keras", ".tflite", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + REJECTED_TAG + suffix
    return name + REJECTED_TAG


def _roll_forward(staging: Path, journal: Path) -> None:
    moves = json.loads(journal.read_text(encoding="utf-8"))
    for src, dst in moves:
        s = staging / src
        if s.exists():  # absent: renamed before the kill
            os.replace(s, staging.parent / dst)
    journal.unlink()
    shutil.rmtree(staging, ignore_errors=True)


def recover(folder: str | os.PathLike, stem: str = "*", names: Iterable[str] = ()) -> list[str]:
    """Finish or undo interrupted exports of ``stem`` (every one by default) in ``folder`` and delete
    temp files of ``names`` (every edgecls temp file by default); returns what was done."""
    folder = Path(folder)
    done: list[str] = []
    if not folder.is_dir():
        return done
    names = list(names)
    for staging in sorted(folder.glob(STAGING_PREFIX + stem)):
        if not staging.is_dir():
            continue
        journal = staging / JOURNAL
        if journal.is_file():
            _roll_forward(staging, journal)
            done.append(f"finished an interrupted export ({staging.name})")
        else:
            shutil.rmtree(staging, ignore_errors=True)
            done.append(f"removed an unfinished export candidate ({staging.name})")
    for tmp in folder.glob(".*.tmp"):
        # Temp files of edgecls.core.io's atomic writes: ".<name>.<random>.tmp".
        if names and not any(tmp.name.startswith(f".{n}.") for n in names):
            continue
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            done.append(f"removed a stray temp file ({tmp.name})")
    for lock in folder.glob(lock_name(stem)):
        _remove_if_unheld(lock)  # left by a killed export; a running one holds its lock
    return done


def lock_name(stem: str) -> str:
    """The lock file one export of ``stem``'s file set holds (removed when it ends)."""
    return f".{stem}.lock"


def _remove_if_unheld(lock: Path) -> None:
    """Delete ``lock`` when nobody holds it (its process died without removing it), while holding it, so no
    other export takes it in between. A lock this process holds counts as held."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


class ExportTransaction:
    """Stage a file set in ``folder/.staging-<stem>/``, then commit or reject it as a whole."""

    def __init__(self, folder: str | os.PathLike, stem: str, names: Iterable[str] = ()):
        self.folder = Path(folder)
        self.stem = stem
        self.names = list(names)
        self.staging = self.folder / f"{STAGING_PREFIX}{stem}"

    def begin(self) -> list[str]:
        """Recover this file set's interrupted exports (other modes' are theirs), open the staging folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        done = recover(self.folder, self.stem, self.names + [rejected_name(n) for n in self.names])
        self.staging.mkdir()
        return done

    def path(self, name: str) -> Path:
        """Where to write a staged file that will be published as ``name``."""
        return self.staging / name

    def _publish(self, moves: list[tuple[str, str]]) -> None:
        missing = [src for src, _ in moves if not (self.staging / src).is_file()]
        if missing:
            raise EdgeclsError(f"export bug: staged file(s) missing: {', '.join(missing)}")
        _kill_point("staged")
        atomic_write_text(self.staging / JOURNAL, json.dumps(moves))
        _kill_point("journal")
        for i, (src, dst) in enumerate(moves):
            os.replace(self.staging / src, self.folder / dst)
            if i == 0:
                _kill_point("moving")
        _kill_point("moved")
        (self.staging / JOURNAL).unlink()
        shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self, names: Iterable[str]) -> None:
        """Move the staged files into place under their own names, in the order given (the model
        last: a reader that sees the new model is sure its card, report and golden set are new too)."""
        self._publish([(n, n) for n in names])

    def reject(self, names: Iterable[str]) -> list[str]:
        """Move the staged files into place under ``*.REJECTED*`` names; returns those names."""
        moves = [(n, rejected_name(n)) for n in names]
        self._publish(moves)
        return [dst for _, dst in moves]

    def abort(self) -> None:
        """Drop the candidate (an error before the commit point); after it, finish the commit."""
        journal = self.staging / JOURNAL
        if journal.is_file():
            _roll_forward(self.staging, journal)
        else:
            shutil.rmtree(self.staging, ignore_errors=True)
