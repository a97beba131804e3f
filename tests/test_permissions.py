"""What edgecls writes is readable by the Pi service's user, and a permission
problem is one ``Error:`` line naming the file and the user.

A real second OS user (``useradd``; the tests need root, as CI has) reads the files, and runs
edgecls with its uid (``os.setuid`` in a subprocess that imported edgecls first: the shared venv's
interpreter lives under /root, which other users cannot enter).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"),
                                reason="needs root, useradd and runuser to create a second OS user")

# The interpreter here lives under /root, which the second user cannot read: everything it needs
# (the cp437 codec zipfile uses to read labels embedded in a model included) is imported first.
PREIMPORT = ("import json, pwd, zipfile, encodings.cp437, edgecls.cli, edgecls.train.checks, edgecls.core.io, edgecls.runtime.classifier, "
             "edgecls.runtime.interpreter, edgecls.data.synth, edgecls.runtime.bench; from PIL import Image; Image.init()")


@pytest.fixture(scope="module")
def other_user():
    name = f"edgecls-t{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    import pwd

    entry = pwd.getpwnam(name)
    yield name, entry.pw_uid, entry.pw_gid
    subprocess.run(["userdel", name], check=False)


@pytest.fixture()
def shared_dir():
    """A folder everyone can enter (pytest's tmp folders are 0700 under /tmp/pytest-of-root)."""
    folder = Path(tempfile.mkdtemp(prefix="edgecls-perm-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_user(uid: int, gid: int, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", HOME="/tmp")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("EDGECLS_DEBUG", None)
    script = f"{PREIMPORT}\nimport os, sys\nos.setgroups([]); os.setgid({gid}); os.setuid({uid})\n{code}"
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)


def _cli(uid: int, gid: int, *args: str) -> subprocess.CompletedProcess:
    return _as_user(uid, gid, f"sys.argv = ['edgecls', *{list(args)!r}]\nedgecls.cli.main()")


@pytest.mark.slow
def test_a_second_user_reads_every_file_edgecls_made(exported_run, other_user, shared_dir, tmp_path):
    from edgecls.core.io import atomic_write_json
    from edgecls.data.synth import write_synthetic_dataset

    name, uid, gid = other_user
    old = os.umask(0o022)  # the usual default; what a plain open() would give: 0644
    try:
        write_synthetic_dataset(tmp_path / "synth", classes=2, per_class=1, size=32, seed=0)
        atomic_write_json(tmp_path / "stats.json", {"fps": 1})
    finally:
        os.umask(old)
    # Copied "to the Pi" as the docs say (modes preserved, like scp -p / rsync -a).
    pi = shared_dir / "pi"
    shutil.copytree(exported_run.path / "export", pi / "export")
    for src in [exported_run.path / "model.keras", exported_run.path / "model_pruned.keras",
                exported_run.path / "config.json", exported_run.path / "labels.txt", tmp_path / "stats.json",
                *sorted((tmp_path / "synth").rglob("*.jpg"))]:
        shutil.copy2(src, pi / src.name)
    files = sorted(p for p in pi.rglob("*") if p.is_file())
    assert len(files) >= 12
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f  # 0666 & ~umask, not mkstemp's 0600
        r = subprocess.run(["runuser", "-u", name, "--", "cat", str(f)], capture_output=True)
        assert r.returncode == 0 and r.stdout == f.read_bytes(), (f, r.stderr)
    # The service's user runs the model through the device runtime.
    model = pi / "export" / "model_int8.tflite"
    r = _as_user(uid, gid, f"from edgecls.runtime.classifier import Classifier\n"
                           f"c = Classifier({str(model)!r}, num_threads=1)\nprint('loaded', c.input_size)")
    assert r.returncode == 0 and "loaded" in r.stdout, r.stderr


def test_permission_problems_are_one_line_naming_the_file_and_the_user(other_user, shared_dir):
    name, uid, gid = other_user
    run = shared_dir / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    state = run / "checkpoints" / "state.json"
    state.write_text('{"phase": "head"}')
    state.chmod(0o600)  # made by another user's umask 077, say
    for folder in (shared_dir, run, run / "checkpoints"):
        folder.chmod(0o755)
    r = _cli(uid, gid, "train", "--resume", "--out", str(run))
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [f"Error: permission denied: {state} (running as user {name} (uid {uid})); "
                     "check the owner and mode of the file and its folders (ls -l)"], r.stderr


def test_outputs_into_a_read_only_folder_fail_before_the_work(other_user, shared_dir):
    name, uid, gid = other_user
    data = shared_dir / "data"
    from edgecls.data.synth import write_synthetic_dataset

    write_synthetic_dataset(data, classes=2, per_class=2, size=32, seed=0)
    for p in [data, *data.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    ro = shared_dir / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    fake = shared_dir / "model.tflite"
    fake.write_bytes(b"not a model")
    fake.chmod(0o644)
    for args, what in (
        (["data", "check", str(data), "--no-decode", "--json", f"{ro}/report.json"], "--json"),
        (["bench", str(fake), "--json", f"{ro}/bench.json"], "--json"),
        (["data", "synth", f"{ro}/synth", "--per-class", "1"], None),
    ):
        r = _cli(uid, gid, *args)
        assert r.returncode == 1, r.stderr
        errors = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"user {name} (uid {uid})" in errors[0] and str(ro) in errors[0], errors
        if what:  # refused before the scan/benchmark ran: nothing printed before the error
            assert errors[0] == (f"Error: cannot write {what} {args[-1]}: folder {ro} is not writable by user "
                                 f"{name} (uid {uid})"), errors
            assert not r.stdout.strip(), r.stdout
    assert list(ro.iterdir()) == []
