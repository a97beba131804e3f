"""A training cluster as ``TF_CONFIG`` describes it: which task this process is, and where a worker keeps its state.

TF-free, so the CLI refuses a malformed ``TF_CONFIG`` before TensorFlow loads.

Only the chief (``task.type == "chief"``, or worker 0 when the cluster names no chief: Keras'
convention) writes the run folder. Every other worker keeps its own copy of what it needs to
resume (the saved config, labels and split, its checkpoints) and its decoded-image cache in a
*worker folder* on its own machine::

    $XDG_STATE_HOME/edgecls/workers/<run name>-<hash of the run's absolute path>/<task type>-<index>/

(``~/.local/state`` when ``XDG_STATE_HOME`` is unset, ``--worker-dir`` to choose another base).
Never inside the run folder: on a shared filesystem the chief's ``--force`` swaps that folder
away, and two workers must not share one file. Named by run and task, so the same command with
``--resume`` finds it again after a kill or a reboot; deleted when the worker finishes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Mapping, Optional

from edgecls.core.errors import EdgeclsError
from edgecls.core.rundir import STAGING_SUFFIX

TASK_TYPES = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in the cluster."""

    type: str
    index: int
    n_workers: int  # every task that trains, the chief included

    has_chief: bool = False  # whether the cluster names a chief task

    @property
    def is_chief(self) -> bool:
        return self.type == "chief" or (self.type == "worker" and self.index == 0 and not self.has_chief)

    @property
    def name(self) -> str:
        return f"{self.type}-{self.index}"


def parse_tf_config(raw: str) -> Task:
    """This process's task from the text of ``TF_CONFIG``, or one clear line about what is wrong with it."""
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as e:
        raise EdgeclsError(f"TF_CONFIG is not valid JSON ({e.msg} at character {e.pos})") from None
    example = ('e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not isinstance(conf, dict) or not isinstance(conf.get("cluster"), dict) or not conf["cluster"]:
        raise EdgeclsError(f"TF_CONFIG has no \"cluster\" of task lists; {example}")
    cluster = conf["cluster"]
    for kind, hosts in cluster.items():
        if kind not in TASK_TYPES:
            raise EdgeclsError(f"TF_CONFIG cluster has a {kind!r} task list; edgecls trains with "
                               f"{' and '.join(TASK_TYPES)} tasks only")
        if not isinstance(hosts, list) or not hosts or not all(_is_address(h) for h in hosts):
            raise EdgeclsError(f"TF_CONFIG cluster {kind!r} must be a list of \"host:port\" addresses; got {hosts!r}")
    if len(cluster.get("chief", [])) > 1:
        raise EdgeclsError("TF_CONFIG cluster names more than one chief; a cluster has at most one")
    task = conf.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise EdgeclsError(f"TF_CONFIG \"task\" must name this process's type (one of: {', '.join(cluster)}) "
                           f"and index; {example}")
    index = task.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task["type"]]):
        raise EdgeclsError(f"TF_CONFIG task index {index!r} is not in the cluster's {task['type']!r} list "
                           f"(0..{len(cluster[task['type']]) - 1})")
    n = sum(len(hosts) for hosts in cluster.values())
    return Task(type=task["type"], index=index, n_workers=n, has_chief="chief" in cluster)


def _is_address(host: object) -> bool:
    if not isinstance(host, str) or ":" not in host:
        return False
    port = host.rsplit(":", 1)[1]
    return port.isdigit() and 0 < int(port) < 65536


def uses_cluster(strategy: str, env: Mapping[str, str] = os.environ) -> bool:
    """Whether ``strategy`` trains on a ``TF_CONFIG`` cluster (``multiworker``, or ``auto`` with TF_CONFIG set)."""
    return strategy == "multiworker" or (strategy == "auto" and bool(env.get("TF_CONFIG")))


def task_for(strategy: str, env: Mapping[str, str] = os.environ) -> Optional[Task]:
    """This process's cluster task, None when it trains alone; refuses a missing or malformed TF_CONFIG."""
    if not uses_cluster(strategy, env):
        return None
    raw = env.get("TF_CONFIG")
    if not raw:
        raise EdgeclsError("strategy 'multiworker' needs the TF_CONFIG environment variable describing the cluster "
                           "(see docs/train.md, 'Training on several machines')")
    return parse_tf_config(raw)


def default_worker_base(env: Mapping[str, str] = os.environ) -> Path:
    """Local, persistent across kills and reboots, per user: ``$XDG_STATE_HOME/edgecls/workers``."""
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "edgecls" / "workers"


def worker_folder(out: str | os.PathLike, task: Task, base: Optional[str | os.PathLike] = None) -> Path:
    """Where the non-chief ``task`` keeps its state for the run at ``out`` (see the module docstring)."""
    run = Path(os.path.abspath(out))
    digest = hashlib.sha256(str(run).encode()).hexdigest()[:12]
    root = Path(base) if base else default_worker_base()
    return root / f"{run.name}-{digest}" / task.name


def worker_folder_to_resume(out: str | os.PathLike, task: Task, base: Optional[str | os.PathLike] = None) -> Path:
    """The worker folder of ``out``; ``--resume --out RUN.new`` (a killed ``--force``) finds RUN's."""
    exact = worker_folder(out, task, base)
    name = str(out).rstrip("/")
    if not exact.is_dir() and name.endswith(STAGING_SUFFIX):
        return worker_folder(name[: -len(STAGING_SUFFIX)], task, base)
    return exact


def check_worker_folder(folder: Path, task: Task, out: str | os.PathLike, *, resume: bool, force: bool) -> None:
    """Refuse a resume without this worker's state, or a fresh start over it without ``--force``."""
    has_checkpoint = (folder / "checkpoints" / "last.weights.npz").is_file() and (folder / "config.json").is_file()
    if resume:
        if not has_checkpoint:
            raise EdgeclsError(
                f"cannot resume {task.name}: its state for {out} is missing ({folder} holds no checkpoint); "
                "each worker resumes from its own folder on its own machine: give the --worker-dir it ran with, "
                "or restart every worker with --force"
            )
        return
    if folder.is_dir() and any(p.name != ".edgecls.lock" for p in folder.iterdir()) and not force:
        raise EdgeclsError(
            f"{task.name} already holds state for {out} in {folder} (an interrupted run): continue it with --resume, "
            "or start over with --force"
        )
