"""The AI Camera on the device side, without the camera: recorded sensor outputs through the real loop,
Picamera2's own output parser on recorded metadata, doctor's AI Camera lines, bench's refusal.

What only hardware proves (docs/device.md): Imx500Source itself (IMX500(rpk), Picamera2(camera_num),
capture_request), the firmware upload, and that the sensor's scores match the host's golden set.
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.core.device_config import CameraConfig
from edgecls.core.errors import EdgeclsError
from edgecls.runtime.imx500 import SensorFrame, open_imx500, scores_from_outputs
from edgecls.runtime.sources import FrameSource

LABELS = ["red", "green", "blue"]


def recorded_outputs(scores: np.ndarray, add_batch: bool = False) -> list[np.ndarray]:
    """What IMX500.get_outputs(metadata) returns for a one-output classifier: a list of float32 tensors."""
    t = np.asarray(scores, np.float32)
    return [t[None] if add_batch else t]


class RecordedSensorSource(FrameSource):
    """Replays frames with the scores the sensor returned for them (a recording, not a camera)."""

    is_live = False

    def __init__(self, frames: list[np.ndarray], outputs: list[Optional[list[np.ndarray]]], kpi=None):
        self.frames, self.outputs, self.kpi = frames, outputs, kpi or [None] * len(frames)
        self.name, self.num_outputs, self.input_size = "recorded imx500", 3, (64, 64)
        self.i = 0

    def read(self):
        while self.i < len(self.frames):
            i, self.i = self.i, self.i + 1
            scores = scores_from_outputs(self.outputs[i])
            if scores is not None:  # as Imx500Source: a frame without a result is skipped
                return True, SensorFrame.wrap(self.frames[i], scores, self.kpi[i])
        return False, None


def test_scores_from_outputs_in_picamera2s_format():
    s = np.array([0.1, 0.7, 0.2], np.float32)
    assert scores_from_outputs(recorded_outputs(s)).tolist() == pytest.approx(s.tolist())
    assert scores_from_outputs(recorded_outputs(s, add_batch=True)).shape == (3,)
    assert scores_from_outputs(None) is None  # no CnnOutputTensor in this frame's metadata
    assert scores_from_outputs([]) is None
    with pytest.raises(EdgeclsError, match="2 output tensors"):
        scores_from_outputs([s, s])


def test_sensor_frame_keeps_its_scores_through_views():
    f = SensorFrame.wrap(np.zeros((4, 4, 3), np.uint8), np.array([1.0, 0.0], np.float32), (3.5, 0.5))
    view = f[:, :, ::-1]
    assert view.scores is f.scores and view.kpi_ms == (3.5, 0.5)


def test_loop_reports_the_sensors_scores_with_the_same_frames(tmp_path):
    """The real camera loop on a recording: each row's top-1 is the recorded score's, frames without a
    result are skipped, the sensor's own timing lands in the stats, labels come from labels.txt."""
    from edgecls.runtime.loop import run

    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    scores = [np.array(v, np.float32) for v in ([0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2], [0.05, 0.9, 0.05])]
    outputs = [recorded_outputs(scores[0]), None, recorded_outputs(scores[1]), recorded_outputs(scores[2]),
               recorded_outputs(scores[3])]
    kpi = [(4.0, 1.0), None, (5.0, 1.0), (6.0, 1.0), (7.0, 1.0)]
    cfg = CameraConfig(model=str(tmp_path / "network.rpk"), source="imx500", jsonl=str(tmp_path / "log.jsonl"),
                       stats_json=str(tmp_path / "stats.json"), headless=True, top_k=2)
    stats = run(cfg, source=RecordedSensorSource(frames, outputs, kpi))
    rows = [json.loads(ln) for ln in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["top_k"][0]["label"] for r in rows] == ["red", "blue", "green", "green"]
    assert rows[0]["top_k"][0]["score"] == pytest.approx(0.8)
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert stats.frames == 4 and saved["runtime"] == "imx500"
    assert saved["outputs"]["imx500"]["dnn_ms"]["p50"] == pytest.approx(5.5)


def test_labels_must_match_the_sensors_output(tmp_path):
    (tmp_path / "labels.txt").write_text("a\nb\n")
    src = RecordedSensorSource([], [])
    with pytest.raises(EdgeclsError, match="2 labels .* gives 3 scores"):
        open_imx500(str(tmp_path / "network.rpk"), None, width=64, height=48, source=src)


@pytest.mark.parametrize("args, message", [
    (["--model", "network.rpk", "--source", "0"], "is an IMX500 network: it runs on the AI Camera's sensor; use --source imx500"),
    (["--model", "model_int8.tflite", "--source", "imx500"], "--source imx500 runs a network.rpk on the sensor"),
    (["--model", "network.rpk", "--source", "imx500"], "picamera2's IMX500 support does not import"),
])
def test_camera_errors_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "network.rpk").write_bytes(b"\0" * 16)
    res = CliRunner().invoke(cli, ["camera", *args, "--headless", "--max-frames", "1"])
    assert res.exit_code == 1, res.output
    assert message in res.output and res.output.count("Error:") == 1 and "Traceback" not in res.output


def test_bench_says_what_it_cannot_measure(tmp_path):
    (tmp_path / "network.rpk").write_bytes(b"\0")
    res = CliRunner().invoke(cli, ["bench", str(tmp_path / "network.rpk")])
    assert res.exit_code == 1
    assert "runs on the AI Camera's sensor, which this host cannot time" in res.output


def _fake_sysfs(root: Path, device: str = "10-001a", progress: Optional[str] = None) -> Path:
    """The sysfs/debugfs layout Picamera2's IMX500 helper reads (a stand-in of the kernel's, for doctor)."""
    drivers = root / "sys" / "bus" / "i2c" / "devices" / device
    (root / "sys" / "module" / "imx500").mkdir(parents=True)
    (drivers / "driver").mkdir(parents=True)
    (drivers / "driver" / "module").symlink_to(root / "sys" / "module" / "imx500")
    subdev = root / "sys" / "class" / "video4linux" / "v4l-subdev2"
    subdev.mkdir(parents=True)
    (subdev / "device").symlink_to(drivers)
    if progress is not None:
        (root / "debug" / f"imx500-fw:{device}").mkdir(parents=True)
        (root / "debug" / f"imx500-fw:{device}" / "fw_progress").write_text(progress)
    return root


def test_doctor_finds_an_ai_camera_and_its_firmware_upload(tmp_path):
    from edgecls.runtime.ai_camera import ai_camera_report, format_ai_camera

    root = _fake_sysfs(tmp_path, progress="2 1048576 4194304\n")
    r = ai_camera_report(root / "sys", root / "debug")
    assert r["present"] and r["cameras"][0]["subdev"] == "/dev/v4l-subdev2"
    assert r["cameras"][0]["firmware_upload"] == {"stage": "network", "bytes": 1048576, "total": 4194304, "percent": 25.0}
    assert "firmware upload: network 1048576/4194304 bytes (25%)" in "\n".join(format_ai_camera(r))
    none = ai_camera_report(tmp_path / "empty", tmp_path / "empty")
    assert not none["present"] and "none attached" in format_ai_camera(none)[0]


def test_doctor_reports_the_ai_camera_section():
    res = CliRunner().invoke(cli, ["doctor", "--json"])
    report = json.loads(res.output)
    assert report["ai_camera"]["present"] is False  # no IMX500 on this machine


# -- Picamera2's own parser on recorded metadata ------------------------------------------------

def _picamera2_source() -> Path:
    from tests.isolated_venv import named_venv

    exe = named_venv("picamera2")
    site = subprocess.run([str(exe), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return Path(site) / "picamera2" / "devices" / "imx500" / "imx500.py"


def _picamera2_parser(source: Path):
    """picamera2's IMX500.get_outputs and what it calls, compiled from the released file: the module does not
    import here (libcamera, pykms), but these methods are numpy and ctypes only."""
    tree = ast.parse(source.read_text())
    keep_top = {"NETWORK_NAME_LEN", "MAX_NUM_TENSORS", "MAX_NUM_DIMENSIONS", "OutputTensorInfo",
                "CnnOutputTensorInfoExported"}
    body = [n for n in tree.body if (isinstance(n, ast.Assign) and n.targets[0].id in keep_top)
            or (isinstance(n, ast.ClassDef) and n.name in keep_top)]
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "IMX500")
    methods = [n for n in cls.body if isinstance(n, ast.FunctionDef)
               and n.name in ("get_outputs", "get_output_shapes", "__get_output_tensor_info", "get_kpi_info")]
    body.append(ast.ClassDef(name="IMX500", bases=[], keywords=[], body=methods, decorator_list=[]))
    module = ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))
    ns = {"np": np, "ctypes": ctypes, "struct": struct, "Optional": Optional}
    exec(compile(module, str(source), "exec"), ns)
    return ns


def record_metadata(scores: np.ndarray, network: str = "edgecls", dnn_us: int = 5500, dsp_us: int = 700,
                    max_tensors: int = 16, max_dims: int = 16) -> dict:
    """Metadata as libcamera's IMX500 helper hands it to Picamera2: CnnOutputTensor (floats),
    CnnOutputTensorInfo (struct CnnOutputTensorInfo: name[64], numTensors, info[MaxNumTensors]
    {tensorDataNum, numDimensions, size[MaxNumDimensions] u16}, frameCount u8, padded to 4 bytes),
    CnnKpiInfo (DNN and DSP microseconds: two integers in Picamera2 0.3.38; packed bytes in older releases)."""
    info = struct.pack("<64sI", network.encode(), 1)
    info += struct.pack(f"<II{max_dims}H", scores.size, 1, scores.size, *([0] * (max_dims - 1)))
    info += bytes(struct.calcsize(f"<II{max_dims}H") * (max_tensors - 1))
    info += b"\x01"
    info += bytes(-len(info) % 4)
    return {"CnnOutputTensor": [float(v) for v in scores], "CnnOutputTensorInfo": info,
            "CnnKpiInfo": [dnn_us, dsp_us]}


@pytest.mark.slow
@pytest.mark.prebuild("picamera2")
def test_picamera2_parses_recorded_metadata_into_our_scores():
    """Picamera2 0.3.38's own IMX500 code reads the recorded metadata; our reader takes its result."""
    src = _picamera2_source()
    ns = _picamera2_parser(src)
    imx = ns["IMX500"].__new__(ns["IMX500"])  # no __init__: that opens /dev/v4l-subdev*
    scores = np.array([0.0625, 0.8125, 0.125], np.float32)
    md = record_metadata(scores)
    assert len(md["CnnOutputTensorInfo"]) == ctypes.sizeof(ns["CnnOutputTensorInfoExported"])
    assert imx.get_output_shapes(md) == [[3]]
    assert scores_from_outputs(imx.get_outputs(md)).tolist() == scores.tolist()
    assert scores_from_outputs(imx.get_outputs(md, add_batch=True)).tolist() == scores.tolist()
    assert scores_from_outputs(imx.get_outputs({})) is None  # a frame before the network's first result
    assert ns["IMX500"].get_kpi_info(md) == (5.5, 0.7)
    # And the fact the docs state: off a Pi, picamera2 itself does not import (no libcamera bindings).
    exe = src.parents[5] / "bin" / "python" if (src.parents[5] / "bin").is_dir() else None
    if exe is not None:
        out = subprocess.run([str(exe), "-c", "import picamera2"], capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert out.returncode != 0 and "libcamera" in out.stderr
