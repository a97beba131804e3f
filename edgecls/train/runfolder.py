"""The run folder's life around one training: scan and split, create or reopen, lock, replace.

:func:`opened` is what :func:`edgecls.train.fit.train` wraps the training in: it checks the
destination, takes the locks, builds a ``--force`` replacement in ``OUT.new`` (never touching
``OUT`` until the new run is complete, see :func:`edgecls.core.rundir.swap_in`), reopens a run
for ``--resume``, and removes a folder it created when the run fails before its first checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

from edgecls import __version__
from edgecls.core.config import TrainConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import read_json
from edgecls.core.rundir import LOCK_NAME, RunDir, RunLock, staging_path, swap_in
from edgecls.data.negatives import model_labels
from edgecls.data.split import split_warnings
from edgecls.train import cluster
from edgecls.train.checkpoint import LAST_WEIGHTS, read_checkpoint_state
from edgecls.train.checks import check_run_dir
from edgecls.train.state import PHASE_DONE, STATE_JSON, TrainState


@dataclasses.dataclass
class Start:
    """Where training begins: the config to use, the reopened run (resume) or the folder to create it in."""

    cfg: TrainConfig
    run: Optional[RunDir]
    state: TrainState
    folder: Optional[Path] = None
    worker: Optional[cluster.Task] = None  # a non-chief cluster worker: run and folder are its worker folder


def scan_and_split(cfg: TrainConfig) -> tuple[Any, dict]:
    """Scan and split the data; nothing is written yet (a data error leaves no run folder)."""
    from edgecls import data

    if cfg.labels_csv:
        scan = data.scan_labels_csv(cfg.data, cfg.labels_csv)
    else:
        scan = data.scan_dataset(cfg.data)
    split = data.make_split(scan, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
    data.check_split(split, cfg.data)
    if cfg.negatives:
        from edgecls.data.negatives import scan_negatives, split_negatives

        usable, skipped = scan_negatives(cfg.negatives, scan)
        for path, reason in skipped:
            print(f"Warning: skipping negative {path}: {reason}", file=sys.stderr, flush=True)
        split["negatives"] = split_negatives(usable, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                             seed=cfg.seed)
    for warning in split_warnings(split, list(scan.classes)):
        print(f"Warning: {warning}", file=sys.stderr, flush=True)
    return scan, split


def create_run(cfg: TrainConfig, folder: Path, scan: Any, split: dict) -> RunDir:
    """Write the run's small files into ``folder`` (the run itself, or its staging copy under --force)."""
    from edgecls import data

    run = RunDir(folder)
    run.write_json(run.config_json, {"train": dataclasses.asdict(cfg), "edgecls_version": __version__})
    run.write_labels(model_labels(list(scan.classes), split))
    data.save_split(run, scan, split, cfg.seed)
    return run


def prepare_staging(target: Path) -> Path:
    """OUT.new for ``train --force``: a stale one from a killed --force is replaced, anything else refused."""
    staging = staging_path(target)
    if not staging.exists():
        return staging
    state_file = staging / "checkpoints" / STATE_JSON
    try:
        state = read_json(state_file) if state_file.is_file() else {}
    except ValueError:
        state = {}
    is_partial = (staging / "config.json").is_file() and state.get("replaces") == str(target) \
        and state.get("phase") != PHASE_DONE
    only_lock = staging.is_dir() and {p.name for p in staging.iterdir()} <= {LOCK_NAME}
    if not (is_partial or only_lock):
        raise EdgeclsError(
            f"{staging} exists (train --force builds the new run there); move it away or delete it first"
        )
    with RunLock(staging, "train --force (cleanup)"):
        shutil.rmtree(staging)  # an unfinished replacement that a kill left behind
    return staging


def resume_state(run: RunDir) -> TrainState:
    """The state saved with the last weights (authoritative), or a clear refusal."""
    last = run.checkpoints / LAST_WEIGHTS
    if not last.is_file():
        raise EdgeclsError(f"cannot resume: {last} is missing, so the run cannot continue where it stopped; "
                           "start again with --force")
    state = read_checkpoint_state(last)
    if state is None:
        raise EdgeclsError(f"cannot resume: {last} holds no training state (made by an older edgecls); "
                           "start again with --force")
    return TrainState.from_dict(state)


@contextlib.contextmanager
def opened(cfg: TrainConfig, *, resume: bool = False, force: bool = False,
           worker_dir: Optional[str] = None) -> Iterator[Start]:
    """The run folder, locked for the whole run (a second writer gets an error), ready to train into.

    ``resume=True`` reopens ``cfg.out`` with its *saved* config (other fields of ``cfg`` are
    ignored). ``force=True`` over an existing run yields the staging folder ``OUT.new``.
    A non-chief cluster worker never looks at ``cfg.out``: it gets its own worker folder
    (under ``worker_dir``, see :mod:`edgecls.train.cluster`).
    """
    task = cluster.task_for(cfg.strategy)
    if task is not None and not task.is_chief:
        with _opened_worker(cfg, task, resume=resume, force=force, base=worker_dir) as start:
            yield start
        return
    check_run_dir(cfg.out, force=force, resume=resume)
    with contextlib.ExitStack() as locks:
        if resume:
            locks.enter_context(RunLock(cfg.out, "edgecls train --resume"))
            run = RunDir.open(cfg.out)
            state = resume_state(run)
            replaces = state.replaces
            if replaces and Path(replaces).is_dir():
                locks.enter_context(RunLock(replaces, f"edgecls train --resume --out {run.path}"))
            yield Start(dataclasses.replace(run.train_config(), out=str(run.path)), run, state)
            return
        target = Path(cfg.out)
        if force and target.is_dir() and any(target.iterdir()):
            locks.enter_context(RunLock(target, "edgecls train --force"))
            folder = prepare_staging(target)
        else:
            folder = target
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            locks.enter_context(RunLock(folder, f"edgecls train --out {target}"))
        except BaseException:
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        state = TrainState()
        if folder != target:
            state.replaces = str(target)
        try:
            yield Start(cfg, None, state, folder)
        except BaseException:
            # Nothing trained yet (a data or model error): leave no half-made run behind.
            if created and not (folder / "checkpoints" / STATE_JSON).is_file():
                shutil.rmtree(folder, ignore_errors=True)
            raise


@contextlib.contextmanager
def _opened_worker(cfg: TrainConfig, task: cluster.Task, *, resume: bool, force: bool,
                   base: Optional[str]) -> Iterator[Start]:
    """A worker's own folder: a run folder's small files + checkpoints + cache, never the chief's run."""
    folder = (cluster.worker_folder_to_resume if resume else cluster.worker_folder)(cfg.out, task, base)
    cluster.check_worker_folder(folder, task, cfg.out, resume=resume, force=force)
    if resume:
        with RunLock(folder, f"edgecls train --resume --out {cfg.out} ({task.name})"):
            run = RunDir.open(folder)
            # out stays the chief's run: the worker only names it (messages), never opens it.
            yield Start(dataclasses.replace(run.train_config(), out=str(cfg.out)), run, resume_state(run),
                        worker=task)
        return
    if folder.exists():  # --force: only this worker's own earlier state, never anything of the run's
        with RunLock(folder, f"edgecls train --force --out {cfg.out} ({task.name}, cleanup)"):
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with RunLock(folder, f"edgecls train --out {cfg.out} ({task.name})"):
        try:
            yield Start(cfg, None, TrainState(), folder, worker=task)
        except BaseException:
            if not (folder / "checkpoints" / STATE_JSON).is_file():
                drop_worker_folder(folder)
            raise


def drop_worker_folder(folder: Path) -> None:
    """A worker's folder once its run is over (and the run's parent folder when no other task uses it)."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # only when empty: another task of the same run on this machine keeps it


def put_in_place(run: RunDir, state: TrainState) -> RunDir:
    """A finished ``--force`` replacement takes the old run's place; other runs are already there."""
    target = state.replaces
    if not target:
        return run
    aside = swap_in(run.path, target)
    kept = f"; the old run (with its export/ and other files) is now {aside}" if aside else \
        "; the old run held only training outputs and was removed"
    print(f"Replaced {target} with the new run{kept}", flush=True)
    return RunDir(Path(target))
