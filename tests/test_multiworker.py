"""``--strategy multiworker`` on a real two-process cluster (127.0.0.1).

Two ``edgecls train`` processes (the CLI a user runs) form a ``TF_CONFIG`` cluster on free
loopback ports. Each worker gets its own ``XDG_STATE_HOME``, as if on its own machine. The
non-chief runs in a mount namespace where the folder holding the runs is *read-only*: if it
ever created, deleted or overwrote a run (``--force`` included), the kernel would refuse and
the worker would fail, so "the worker never wrote into the run folder" is enforced, not hoped.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.train import cluster
from train_procs import WAIT_S, env, kill_after_checkpoints, log_tail, old_exported_run, start, tree, weights

# Tiny and deterministic (see tests/test_train_faults.py): no augmentation or dropout draws.
# The cheapest backbone to trace (see tests/test_train_faults.py): six processes each trace it.
# The decoded-image cache on disk, so each worker's own cache is real files in its own folder.
TINY = ["--backbone", "mobilenet_v3_small", "--minimalistic", "--alpha", "0.35", "--size", "32", "--weights", "none",
        "--batch-size", "8", "--no-augment", "--dropout", "0", "--cache", "disk", "--seed", "7",
        "--fine-tune-epochs", "0", "--patience", "10", "--strategy", "multiworker"]
HEAD_EPOCHS = 3
WORKER = cluster.Task("worker", 1, 2)


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _machine(tmp_path: Path, index: int, pair: str = "") -> Path:
    return tmp_path / f"{pair}machine{index}"  # the worker's own XDG_STATE_HOME


def _worker_folder(tmp_path: Path, out: Path) -> Path:
    return cluster.worker_folder(out, WORKER, _machine(tmp_path, 1) / "edgecls" / "workers")


def _read_only(folder: Path) -> list[str]:
    """Run the command with ``folder`` mounted read-only for it alone (a private mount namespace)."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"',
            str(folder)]


def _can_isolate(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    r = subprocess.run([*_read_only(probe), "sh", "-c", f"! touch {probe}/x"], capture_output=True)
    return r.returncode == 0 and not (probe / "x").exists()


def _start_cluster(tmp_path: Path, runs: Path, name: str, *args: str, ports: list[int] | None = None,
                   pair: str = "") -> list[subprocess.Popen]:
    """Worker 0 (the chief) and worker 1 (read-only view of ``runs``), each logging to ``tmp_path/name-<i>.log``;
    ``pair`` names the two machines (their XDG_STATE_HOME) when another pair runs beside this one."""
    ports = ports or _free_ports(2)
    return [start(tmp_path / f"{name}-{index}.log", *args, prefix=_read_only(runs) if index == 1 else (),
                  environ=env(TF_CONFIG=_tf_config(ports, index), XDG_STATE_HOME=str(_machine(tmp_path, index, pair))))
            for index in (0, 1)]


def _finish(procs: list[subprocess.Popen]) -> None:
    try:
        for proc in procs:
            proc.wait(timeout=WAIT_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, f"worker {i} exited {proc.returncode}:\n{log_tail(proc)}"


@pytest.mark.slow
def test_two_workers_killed_then_resumed_end_with_the_weights_of_an_uninterrupted_pair(tmp_path):
    from edgecls.data.synth import write_synthetic_dataset

    if not _can_isolate(tmp_path):
        pytest.skip("needs a private mount namespace (unshare -m as root) to make the runs read-only for the worker")
    data = tmp_path / "data"
    write_synthetic_dataset(data, classes=2, per_class=12, size=32, seed=5)
    runs = tmp_path / "runs"
    runs.mkdir()
    common = ["train", str(data), "--epochs", str(HEAD_EPOCHS), *TINY]

    # 1. An existing run a user exported from: --force must keep it until the new run is complete.
    out = runs / "run"
    before = old_exported_run(out)

    # 2. The reference, an uninterrupted pair, trains beside the pair that gets killed: it reads
    # nothing of it, its machines are its own, and TF_DETERMINISTIC_OPS makes its result
    # independent of the load. The two pairs fill each other's waits (start-up, all-reduce).
    ref = runs / "ref"
    ports = _free_ports(4)
    reference = _start_cluster(tmp_path, runs, "ref", *common, "--out", str(ref), ports=ports[:2], pair="ref-")
    staging = runs / "run.new"
    worker_state = _worker_folder(tmp_path, out)
    try:
        procs = _start_cluster(tmp_path, runs, "killed", *common, "--out", str(out), "--force", ports=ports[2:])
        states = kill_after_checkpoints(procs, [staging / "checkpoints" / "state.json",
                                                worker_state / "checkpoints" / "state.json"], 1)
        _finish(reference)
    finally:
        for proc in reference:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert (ref / "model.keras").is_file()
    ref_workers = _machine(tmp_path, 1, "ref-") / "edgecls" / "workers"
    assert not ref_workers.exists() or not any(ref_workers.iterdir())  # cleaned after success

    saved = [len(s.get("rows", [])) for s in states]
    assert min(saved) >= 1 and max(saved) <= HEAD_EPOCHS  # killed mid-run, after the first checkpoint
    assert tree(out) == before  # the old run is intact, byte for byte
    assert (worker_state / "checkpoints" / "last.weights.npz").is_file()  # the worker's own state survived
    assert list((worker_state / "cache" / "train").glob("decoded-*.index"))  # and its own input cache
    assert list((staging / "cache" / "train").glob("decoded-*.index"))  # the chief's, in its run
    assert not str(worker_state).startswith(str(runs))

    # 3. Both resume with the command the chief printed; the worker finds its own folder.
    _finish(_start_cluster(tmp_path, runs, "resumed", "train", "--resume", "--out", str(staging)))
    assert not staging.exists() and not worker_state.exists()
    aside = [p for p in runs.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and (aside[0] / "export" / "model_int8.tflite").read_bytes() == b"the old deployed model"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    # The head phase ran on the sharded image pipeline, not on a per-process feature cache: each
    # worker said so, and the run records no cache.
    for index in (0, 1):
        log = (tmp_path / f"ref-{index}.log").read_text()
        assert "Head phase on the full path (no feature cache): multi-worker training shards" in log, log[-2000:]
    assert metrics["head_cache"] is None

    # Same seed, data order, optimizer state and all-reduce: the same weights as the uninterrupted
    # pair, bit for bit (measured: max |difference| 0.0; two workers' ring all-reduce adds two
    # numbers, which is exact in either order, and TF_DETERMINISTIC_OPS fixes the rest).
    for a, b in zip(weights(ref), weights(out), strict=True):
        np.testing.assert_array_equal(a, b)
    hist_ref = json.loads((ref / "history.json").read_text())["epochs"]
    hist = json.loads((out / "history.json").read_text())["epochs"]
    assert [row["loss"] for row in hist] == [row["loss"] for row in hist_ref]


# -- refusals, before TensorFlow loads --------------------------------------------------------

TWO = {"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize(
    "tf_config, args, message",
    [
        (None, ["--strategy", "multiworker"],
         "Error: strategy 'multiworker' needs the TF_CONFIG environment variable describing the cluster "
         "(see docs/train.md, 'Training on several machines')"),
        ("{not json", [], "Error: TF_CONFIG is not valid JSON (Expecting property name enclosed in double quotes "
                          "at character 1)"),
        ('{"task": {"type": "worker", "index": 0}}', [],
         'Error: TF_CONFIG has no "cluster" of task lists; e.g. {"cluster": {"worker": ["host1:12345", '
         '"host2:12345"]}, "task": {"type": "worker", "index": 0}}'),
        ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', [],
         "Error: TF_CONFIG cluster 'worker' must be a list of \"host:port\" addresses; got ['localhost']"),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker", "index": 0}}', [],
         "Error: TF_CONFIG cluster has a 'ps' task list; edgecls trains with chief and worker tasks only"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', [],
         "Error: TF_CONFIG task index 3 is not in the cluster's 'worker' list (0..0)"),
        (json.dumps(TWO), ["--resume"],
         "Error: cannot resume worker-1: its state for {out} is missing ({folder} holds no checkpoint); each worker "
         "resumes from its own folder on its own machine: give the --worker-dir it ran with, or restart every "
         "worker with --force"),
        (json.dumps(TWO), ["--stale-state"],
         "Error: worker-1 already holds state for {out} in {folder} (an interrupted run): continue it with "
         "--resume, or start over with --force"),
    ],
)
def test_cluster_refusals(tmp_path, monkeypatch, tf_config, args, message):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    out = tmp_path / "run"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    folder = _worker_folder_default(out)
    if args == ["--stale-state"]:  # a worker killed earlier left its checkpoints behind
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "checkpoints" / "last.weights.npz").write_bytes(b"x")
        args = []
    cmd = ["train", "--out", str(out), *args] if "--resume" in args else ["train", str(data), "--out", str(out), *args]
    res = CliRunner().invoke(cli, cmd)
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == message.replace("{out}", str(out)).replace("{folder}", str(folder))
    assert "Traceback" not in res.output
    assert not out.exists()  # a worker never creates the run


def _worker_folder_default(out: Path) -> Path:
    return cluster.worker_folder(out, WORKER)


@pytest.mark.parametrize(
    "tf_config, task",
    [
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}', ("worker", 0, True)),
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}', ("worker", 1, False)),
        ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}',
         ("worker", 0, False)),
        ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
         ("chief", 0, True)),
    ],
)
def test_the_chief_is_named_or_worker_0(tf_config, task):
    t = cluster.parse_tf_config(tf_config)
    assert (t.type, t.index, t.is_chief) == task and t.n_workers == 2


def test_worker_folder_is_per_run_and_task_outside_the_run_and_found_again_from_the_staging_name(tmp_path):
    base = tmp_path / "state"
    run = tmp_path / "runs" / "flowers"
    a = cluster.worker_folder(run, WORKER, base)
    assert a.parent.name.startswith("flowers-") and a.name == "worker-1" and base in a.parents
    assert cluster.worker_folder(tmp_path / "other" / "flowers", WORKER, base) != a  # same name, other run
    assert cluster.worker_folder(run, cluster.Task("worker", 2, 3), base) != a  # another task on a shared home
    assert cluster.worker_folder(str(run) + "/", WORKER, base) == a
    a.mkdir(parents=True)  # a killed `--force --out flowers`: the chief says `--resume --out flowers.new`
    assert cluster.worker_folder_to_resume(tmp_path / "runs" / "flowers.new", WORKER, base) == a


# -- workers agree on one checkpoint (the all-gather itself runs in the two-worker test) ----

E1, E2, PHASE_END = (1, 0, 1), (2, 0, 2), (2, 1, 0)  # progress after epoch 1, epoch 2, the head phase's end


@pytest.mark.parametrize(
    "everyone, mine, resume, expected",
    [
        ([E2, E2], E2, True, None),  # level: everyone continues from its own last save
        ([E2, E1], E2, True, E1),  # one save ahead: step back
        ([E2, E1], E1, True, None),  # behind: the other steps back to this
        ([PHASE_END, E2], PHASE_END, True, E2),  # the end-of-phase save sorts after the phase's last epoch
        ([(0, 0, 0), (0, 0, 0)], (0, 0, 0), False, None),  # a fresh start
        ([E2, (0, 0, 0)], (0, 0, 0), False, "disagree"),
        ([E2, (0, 0, 0)], E2, True, "disagree"),
    ],
)
def test_decide_which_save_every_worker_continues_from(everyone, mine, resume, expected):
    from edgecls.core.errors import EdgeclsError
    from edgecls.train.agree import decide

    if expected == "disagree":
        with pytest.raises(EdgeclsError, match="the cluster's workers disagree: some start fresh, others resume"):
            decide(everyone, mine, resume=resume, task_name="worker-1")
    else:
        assert decide(everyone, mine, resume=resume, task_name="worker-1") == expected


def test_progress_orders_the_saves_of_a_run():
    from edgecls.train.agree import progress
    from edgecls.train.state import TrainState

    saves = [None,
             {"phase": "head", "phase_epochs_done": 1, "rows": [{}]},
             {"phase": "head", "phase_epochs_done": 2, "rows": [{}, {}]},
             {"phase": "fine_tune", "phase_epochs_done": 0, "rows": [{}, {}]},  # end of the head phase
             {"phase": "fine_tune", "phase_epochs_done": 1, "rows": [{}, {}, {}]}]
    got = [progress(TrainState.from_dict(s) if s else None) for s in saves]
    assert got == sorted(got) and len(set(got)) == len(got) and got[3] == PHASE_END


def test_step_back_makes_the_previous_save_the_last_or_refuses(tmp_path):
    from edgecls.core.errors import EdgeclsError
    from edgecls.core.keras import keras
    from edgecls.train.agree import PREVIOUS_WEIGHTS, step_back
    from edgecls.train.checkpoint import LAST_WEIGHTS, ResumeState, read_checkpoint_state, save_checkpoint

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    older = {"phase": "head", "phase_epochs_done": 1, "rows": [{"epoch": 1}]}
    newer = {"phase": "head", "phase_epochs_done": 2, "rows": [{"epoch": 1}, {"epoch": 2}]}
    save_checkpoint(tmp_path / PREVIOUS_WEIGHTS, model, ResumeState(state=older))
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
    save_checkpoint(tmp_path / LAST_WEIGHTS, model, ResumeState(state=newer))
    with pytest.raises(EdgeclsError, match="cannot resume: worker-1 saved more than one save after another worker"):
        step_back(tmp_path, (5, 0, 5), "worker-1")  # the others stopped where this worker has no save
    assert read_checkpoint_state(tmp_path / LAST_WEIGHTS) == newer
    from edgecls.train.state import TrainState

    assert step_back(tmp_path, E1, "worker-1") == TrainState.from_dict(older)
    assert read_checkpoint_state(tmp_path / LAST_WEIGHTS) == older
    assert (tmp_path / LAST_WEIGHTS).read_bytes() == (tmp_path / PREVIOUS_WEIGHTS).read_bytes()
    assert TrainState.read(tmp_path) == TrainState.from_dict(older)


def test_fingerprint_ignores_where_each_machine_keeps_things_and_nothing_else():
    from edgecls.core.config import TrainConfig
    from edgecls.train.agree import fingerprint

    split = {"train": [("a/1.png", 0), ("b/1.png", 1)], "val": [("a/2.png", 0)], "test": []}
    base = fingerprint(TrainConfig(data="/mnt/photos", out="runs/x", epochs=3), split)
    assert fingerprint(TrainConfig(data="/home/me/photos", out="/srv/runs/x", epochs=3, cache="disk"), split) == base
    assert fingerprint(TrainConfig(data="/mnt/photos", out="runs/x", epochs=4), split)[0] != base[0]
    other = dict(split, val=[("a/3.png", 0)])  # the same folder name holding other images
    assert fingerprint(TrainConfig(data="/mnt/photos", out="runs/x", epochs=3), other)[1] != base[1]
