"""The device side runs with TensorFlow unimportable (as on a Pi with only edgecls[device])."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {"tensorflow", "tf_keras", "keras", "tensorflow_model_optimization"}

    class _NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the device side must not need it")
            return None

    sys.meta_path.insert(0, _NoTensorFlow())
    """
)

DRIVER = textwrap.dedent(
    """
    import json, sys
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker did not work")
    import edgecls.runtime.bench, edgecls.runtime.doctor, edgecls.runtime.loop, edgecls.runtime.overlay  # noqa
    from edgecls.cli import cli
    model, video, out = sys.argv[1:4]
    for args in (
        ["bench", model, "--threads", "1,2", "--runs", "5", "--warmup", "1", "--json", out + "/bench.json"],
        ["camera", "-m", model, "-s", video, "--headless", "--threads", "1", "--max-frames", "6",
         "--jsonl", out + "/rows.jsonl", "--stats-json", out + "/stats.json", "--save", out + "/v.mp4"],
        ["doctor", "--model", model],
    ):
        try:
            cli.main(args, prog_name="edgecls", standalone_mode=False)
        except SystemExit as e:
            if e.code:
                raise
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras"))
    print("MODULES" + json.dumps(heavy))
    """
)


@pytest.mark.slow
def test_bench_camera_doctor_run_without_tensorflow(tiny_tflite, device_video, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    env.pop("DISPLAY", None)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tiny_tflite["int8"]), str(device_video), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("MODULES"))
    assert json.loads(line[len("MODULES"):]) == []
    assert json.loads((tmp_path / "bench.json").read_text())["results"][0]["runtime"] == "ai_edge_litert"
    assert json.loads((tmp_path / "stats.json").read_text())["frames"] == 6
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 6


def test_the_blocker_blocks(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "is blocked" in proc.stderr


def test_device_extra_has_no_tensorflow():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    device = project["optional-dependencies"]["device"]
    assert device, "the device extra must list the runtime"
    names = [d.split(";")[0].strip().lower() for d in device]
    assert not [n for n in names if "tensorflow" in n or n.startswith(("tf-keras", "tf_keras", "keras"))]
    assert any(n.startswith("ai-edge-litert") for n in names)
    for dep in project["dependencies"]:
        assert "tensorflow" not in dep.lower()
