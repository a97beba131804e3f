"""``--dist loadgroup`` that works with pytest 9.2: the groups travel in a file, not in the node id.

pytest-xdist 3.8 marks a test's group by appending ``@group`` to ``item._nodeid`` in each worker;
pytest 9.2 derives ``nodeid`` from ``item._id``, so the suffix never reaches the controller and
``--dist loadgroup`` hands out tests one by one (both workers then built the ~2-minute shared
training run). Here each worker writes ``{nodeid: group}`` to a folder the controller made (its
path travels in ``workerinput``), before it reports its collection; the controller's scheduler
(xdist's own LoadGroupScheduling, with only the group lookup replaced) reads it when it splits
the collection into work units. A node id that does carry ``@group`` (an xdist/pytest pair that
agree again) keeps xdist's own rule, so this stays correct when the upstream gap closes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

WORKERINPUT_KEY = "edgecls_groups_dir"


def wanted(config) -> bool:
    """True in the xdist controller of a ``-n N --dist loadgroup`` session."""
    return (config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput")
            and config.getvalue("dist") == "loadgroup" and bool(config.getvalue("numprocesses")))


def make_dir(config) -> None:
    config._edgecls_groups_dir = tempfile.mkdtemp(prefix="edgecls-xdist-groups-")


def remove_dir(config) -> None:
    folder = getattr(config, "_edgecls_groups_dir", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def pass_to_worker(node) -> None:
    folder = getattr(node.config, "_edgecls_groups_dir", None)
    if folder:
        node.workerinput[WORKERINPUT_KEY] = folder


def write(config, groups: dict[str, str]) -> None:
    """Worker side: publish this worker's ``{nodeid: group}`` (atomically: the controller may read
    the folder as soon as the other worker has reported)."""
    workerinput = getattr(config, "workerinput", {})
    folder = workerinput.get(WORKERINPUT_KEY)
    if not folder:
        return
    final = Path(folder) / f"{workerinput['workerid']}.json"
    tmp = final.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, final)


def make_scheduler(config, log):
    """Controller side: xdist's LoadGroupScheduling, its groups read from the workers' files."""
    from xdist.scheduler import LoadGroupScheduling

    folder = Path(config._edgecls_groups_dir)

    class FileGroupScheduling(LoadGroupScheduling):
        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):  # xdist's own suffix got through: its rule
                return super()._split_scope(nodeid)
            if self._groups is None:
                # Every worker has reported its collection (hence written its file) before the
                # first split; the workers' collections are identical, so any file will do.
                self._groups = {}
                for path in sorted(folder.glob("*.json")):
                    self._groups.update(json.loads(path.read_text()))
            group = self._groups.get(nodeid)
            return f"@{group}" if group is not None else nodeid

    return FileGroupScheduling(config, log)
