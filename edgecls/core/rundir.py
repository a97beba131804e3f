"""The run folder: what ``edgecls train`` writes and every later stage reads.

One class owns the file names so train, prune, export, parity and the report agree::

    RUN/
      config.json        {"train": asdict(TrainConfig), "edgecls_version": ...}
      labels.txt         one class name per line, in the model's output order
      split.json         {"root": DATA, "layout": ..., "seed": ..., "train"|"val"|"test": [[relpath, label_index], ...]}
      scan.json          files skipped by the data check, and why
      model.keras        best float model (takes raw RGB uint8-valued input of the run's size)
      model_pruned.keras pruned + stripped model (edgecls prune)
      pruning.json
      checkpoints/       for --resume
      history.json  metrics.json  plots/*.png  logs/ (TensorBoard)
      export/            model_<mode>.tflite, model_<mode>.card.json, parity_<mode>.json, labels.txt
                         model_imx500.packerOut.zip (+ .card.json, .golden.npz, parity_imx500.json): the AI Camera
      report.html        one self-contained page about the run (edgecls.report)
      report/            what the page is made from: predictions, thumbnails, heatmaps (edgecls.report.store)
      explain/           edgecls explain's heatmap overlays, by default
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from edgecls.core.config import TrainConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json, atomic_write_text, read_json
from edgecls.core.unknown import UNKNOWN_CLASS

REPORT_HTML = "report.html"  # also looked for beside a model by the camera's web view


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder, and the small files every stage reads."""

    path: Path

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """An existing run; a clear error if it is not one."""
        run = cls(Path(path))
        if not run.path.is_dir():
            raise EdgeclsError(f"run folder not found: {run.path} (create one with 'edgecls train DATA --out RUN')")
        if not run.config_json.is_file() or not run.labels_txt.is_file():
            raise EdgeclsError(
                f"{run.path} is not an edgecls run (no config.json/labels.txt); "
                "point at a folder made by 'edgecls train'"
            )
        return run

    # -- file names -------------------------------------------------------------------------
    @property
    def config_json(self) -> Path:
        return self.path / "config.json"

    @property
    def labels_txt(self) -> Path:
        return self.path / "labels.txt"

    @property
    def split_json(self) -> Path:
        return self.path / "split.json"

    @property
    def scan_json(self) -> Path:
        return self.path / "scan.json"

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def pruned_model_path(self) -> Path:
        return self.path / "model_pruned.keras"

    @property
    def pruning_json(self) -> Path:
        return self.path / "pruning.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def history_json(self) -> Path:
        return self.path / "history.json"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def report_html(self) -> Path:
        return self.path / REPORT_HTML

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def explain_dir(self) -> Path:
        return self.path / "explain"

    def export_files(self, mode: str, pruned: bool = False, out: str | os.PathLike | None = None) -> "ExportFiles":
        """The file set of one export mode; ``out`` is a folder, or a .tflite path (the rest beside it)."""
        tag = f"{'pruned_' if pruned else ''}{mode}"
        if out and str(out).endswith(".tflite"):
            model = Path(out)
            folder = model.parent
        else:
            folder = Path(out) if out else self.export_dir
            model = folder / f"model_{tag}.tflite"
        return ExportFiles(model=model, card=card_path_for(model), parity=folder / f"parity_{tag}.json",
                           labels=folder / "labels.txt",
                           golden=model.with_name(model.name[: -len(".tflite")] + ".golden.npz"))

    def imx500_files(self, pruned: bool = False, out: str | os.PathLike | None = None) -> "Imx500Files":
        """The file set of an IMX500 export (the converter's package instead of a .tflite); ``out`` is a folder."""
        folder = Path(out) if out else self.export_dir
        stem = f"model_{'pruned_' if pruned else ''}imx500"
        return Imx500Files(package=folder / f"{stem}.packerOut.zip", card=folder / f"{stem}.card.json",
                           parity=folder / f"parity_{stem[len('model_'):]}.json", labels=folder / "labels.txt",
                           golden=folder / f"{stem}.golden.npz", quantized=folder / f"{stem}.mct.keras")

    # -- small files ------------------------------------------------------------------------
    def unknown_rule(self, pruned: bool = False) -> Optional[dict[str, Any]]:
        """The unknown rule training chose (``metrics.json``), or pruning chose again for the pruned model
        (``pruning.json``); None for a run made before the rule existed."""
        source = self.pruning_json if pruned else self.metrics_json
        try:
            rule = (json.loads(source.read_text(encoding="utf-8")) if source.is_file() else {}).get("unknown")
        except (OSError, ValueError) as e:
            raise EdgeclsError(f"{source} is not valid JSON ({e}); train or prune the run again") from None
        return rule if isinstance(rule, dict) and isinstance(rule.get("threshold"), (int, float)) else None

    def read_labels(self) -> list[str]:
        """labels.txt, checked against the class order split.json recorded when the run was made: an edited
        labels.txt would otherwise rename every class of everything exported from the run."""
        labels = read_labels(self.labels_txt)
        if self.split_json.is_file():
            split = read_json(self.split_json)
            classes = split.get("classes")
            if classes and split.get("negatives"):  # the unknown class the negatives trained, last
                classes = [*classes, UNKNOWN_CLASS]
            if classes and list(classes) != labels:
                raise EdgeclsError(
                    f"{self.labels_txt} does not match the classes this run was trained on ({', '.join(classes)}, "
                    f"in that order, as {self.split_json.name} records); restore labels.txt to exactly those lines")
        return labels

    def write_labels(self, labels: list[str]) -> None:
        write_labels(self.labels_txt, labels)

    def read_config(self) -> dict[str, Any]:
        return read_json(self.config_json)

    def train_config(self) -> TrainConfig:
        """The TrainConfig the run was made with (size, backbone, seed ...)."""
        return TrainConfig.from_dict(self.read_config().get("train", {}))

    def read_split(self) -> dict[str, Any]:
        if not self.split_json.is_file():
            raise EdgeclsError(f"{self.split_json} is missing; the run is incomplete (re-run 'edgecls train')")
        return read_json(self.split_json)

    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write_json(path, obj)


@dataclass(frozen=True)
class ExportFiles:
    """One exported model's file set: it is written, checked and replaced as a whole."""

    model: Path
    card: Path
    parity: Path
    labels: Path
    golden: Path


@dataclass(frozen=True)
class Imx500Files:
    """An IMX500 export's file set: ``package`` goes to the Pi (imx500-package makes network.rpk of it);
    ``quantized`` is MCT's Keras model the converter compiled, kept when the gate rejects it."""

    package: Path
    card: Path
    parity: Path
    labels: Path
    golden: Path
    quantized: Path


def card_path_for(model_path: str | os.PathLike) -> Path:
    """``model_int8.tflite`` -> ``model_int8.card.json`` (beside any .tflite, in a run or not)."""
    p = Path(model_path)
    return p.with_name((p.name[: -len(".tflite")] if p.name.endswith(".tflite") else p.stem) + ".card.json")


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names, one per line, blank lines ignored; a name given twice is an error (two outputs of one
    model cannot share a name: every result would be ambiguous)."""
    try:
        with open(path, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError:
        raise EdgeclsError(f"{path} is not a text file of class names (UTF-8, one per line)") from None
    seen: set[str] = set()
    for name in labels:
        if name in seen:
            raise EdgeclsError(f"{path} names the class {name!r} twice; each line must name a different class")
        seen.add(name)
    if not labels:
        raise EdgeclsError(f"{path} names no class; it needs one class name per line")
    return labels


def write_labels(path: str | os.PathLike, labels: list[str]) -> None:
    atomic_write_text(path, "".join(f"{name}\n" for name in labels))


# -- one writer at a time, and replacing a run without losing it -------------------------------

LOCK_NAME = ".edgecls.lock"
# What `edgecls train` itself writes into a run. Anything else (export/, model_pruned.keras,
# a user's own files) was made later or by hand, so --force moves the old run aside instead
# of deleting it.
TRAIN_OUTPUTS = frozenset({
    "config.json", "labels.txt", "split.json", "scan.json", "model.keras", "checkpoints", "history.json",
    "metrics.json", "plots", "logs", "cache", LOCK_NAME, REPORT_HTML, "report",
})
STAGING_SUFFIX = ".new"  # train --force builds OUT.new beside OUT and swaps it in on success
REPLACED_INFIX = ".replaced-"  # OUT.replaced-YYYYmmdd-HHMMSS: an old run that held more than train's outputs


class RunLock:
    """An exclusive ``fcntl`` lock on ``FOLDER/.edgecls.lock``; a second writer gets one clear line.

    The kernel drops the lock when the process dies (even by SIGKILL), so a stale lock file
    never blocks anyone. The file holds the owner's pid and command, for the message.

    ``remove=True`` deletes the lock file on release (a folder the user copies, such as an export's,
    keeps no trace of it); a process that opened the file just before it was deleted sees that its
    lock is on a file no longer there and opens the new one.
    """

    def __init__(self, folder: str | os.PathLike, what: str, name: str = LOCK_NAME, *, remove: bool = False) -> None:
        self.folder, self.what, self.name, self.remove = Path(folder), what, name, remove
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        lock = self.folder / self.name
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise EdgeclsError(
                    f"{self.folder} is in use by another edgecls process ({holder}); "
                    "wait for it to finish, or choose another --out"
                ) from None
            if not self.remove or _same_file(fd, lock):
                break
            os.close(fd)  # locked a file its previous holder has just deleted: take the current one
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {self.what}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            if self.remove:
                (self.folder / self.name).unlink(missing_ok=True)  # still held: nobody can lock it meanwhile
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def staging_path(target: str | os.PathLike) -> Path:
    """Where ``train --force`` builds the replacement of ``target``."""
    target = Path(target)
    return target.with_name(target.name + STAGING_SUFFIX)


def has_foreign_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything `edgecls train` did not write (exports, pruned models, user files)."""
    return any(p.name not in TRAIN_OUTPUTS for p in folder.iterdir())


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    rc = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    import errno

    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def swap_in(new: str | os.PathLike, target: str | os.PathLike) -> Path | None:
    """Put the finished run ``new`` at ``target``; returns where the old run was kept, if it was.

    The old run is deleted only when it holds nothing but train's own outputs; otherwise it is
    moved to ``TARGET.replaced-<time>`` whole, export/ included. ``target`` names either the old
    or the new complete run at every instant (one atomic exchange), so a kill cannot lose both.
    """
    import shutil
    import time

    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        return None
    keep = has_foreign_files(target)
    aside = target.with_name(f"{target.name}{REPLACED_INFIX}{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        aside = aside.with_name(f"{target.name}{REPLACED_INFIX}{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        n += 1
    if _exchange(new, target):
        old = new  # the exchange left the old run where the new one was built
    else:
        os.rename(target, aside)
        os.rename(new, target)
        old = aside
    if keep:
        if old != aside:
            os.rename(old, aside)
        return aside
    shutil.rmtree(old)
    return None
