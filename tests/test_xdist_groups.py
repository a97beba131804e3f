"""`pytest -n 2 --dist loadgroup` keeps a group in one worker (tests/xdist_groups.py, docs/testing.md).

A small project whose conftest is this suite's own runs under two real xdist workers: the tests
that share a module-scoped fixture must all run in one worker, which builds the fixture once
(xdist 3.8's own "@group" node-id suffix is lost under pytest 9.2, so without tests/xdist_groups.py
they are handed out one by one and both workers build it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

PROJECT_TEST = '''
import os, time
from pathlib import Path
import pytest

LOG = Path(os.environ["GROUPS_LOG"])

@pytest.fixture(scope="module")
def shared():
    with open(LOG / "builds", "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
    time.sleep(0.5)  # like a real build: the other worker would have started its own meanwhile

@pytest.mark.parametrize("i", range(6))
def test_grouped(shared, i):
    with open(LOG / "grouped", "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")

@pytest.mark.parametrize("i", range(6))
def test_free(i):
    time.sleep(0.1)
'''


def test_a_group_runs_in_one_worker_and_builds_its_fixture_once(tmp_path):
    pytest.importorskip("xdist")
    project, log = tmp_path / "project", tmp_path / "log"
    project.mkdir()
    log.mkdir()
    # This suite's conftest, run as the project's own (its helper modules on sys.path).
    (project / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(CONFTEST.parent)!r})\n"
                                         f"exec(compile(open({str(CONFTEST)!r}).read(), {str(CONFTEST)!r}, 'exec'))\n")
    (project / "test_groups.py").write_text(PROJECT_TEST)
    env = dict(os.environ, GROUPS_LOG=str(log), EDGECLS_PREBUILD="0")
    env.pop("PYTEST_XDIST_WORKER", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                        "--dist", "loadgroup", str(project)], cwd=project, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "12 passed" in r.stdout
    grouped = (log / "grouped").read_text().split()
    assert len(grouped) == 6 and len(set(grouped)) == 1, grouped  # one worker ran the whole group
    assert (log / "builds").read_text().split() == grouped[:1]  # and built the fixture once
