"""The camera loop driven by a generated video and an image folder (no camera needed)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.core.device_config import CameraConfig
from edgecls.runtime.loop import run
from edgecls.runtime.overlay import draw_overlay
from edgecls.runtime.scores import Category

pytestmark = pytest.mark.slow  # uses the converted tiny models

STAGES = ("capture", "preprocess", "invoke", "postprocess", "draw")


def _read_video(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


@pytest.mark.parametrize("pipeline", [True, False])
def test_loop_on_video_writes_jsonl_stats_and_annotated_video(tiny_tflite, device_video, tmp_path, pipeline):
    cfg = CameraConfig(
        model=str(tiny_tflite["int8"]), source=str(device_video), threads=1, top_k=2, headless=True,
        save=str(tmp_path / "out.mp4"), jsonl=str(tmp_path / "out.jsonl"), stats_json=str(tmp_path / "stats.json"),
        pipeline=pipeline,
    )
    stats = run(cfg)
    assert stats.frames == 36 and stats.stop_reason == "end of source"
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 36
    assert [r["frame"] for r in rows] == list(range(36))
    for r in rows:
        assert set(r) >= {"time", "frame", "top_k", "inference_ms"}
        assert len(r["top_k"]) == 2 and r["top_k"][0]["score"] >= r["top_k"][1]["score"]
        assert {"label", "score", "index"} == set(r["top_k"][0]) and r["inference_ms"] > 0
    saved = json.loads((tmp_path / "stats.json").read_text())
    for key in ("frames", "loop_fps", "invoke_fps", "dropped_frames", "source", "model", "threads", "runtime"):
        assert key in saved
    assert saved["frames"] == 36 and saved["threads"] == 1 and saved["runtime"] == "ai_edge_litert"
    assert saved["dropped_frames"] == 0 and saved["pipeline"] is pipeline
    assert all(saved["stage_ms"][s] >= 0 for s in STAGES) and saved["stage_ms"]["invoke"] > 0
    assert 0 < saved["loop_fps"] <= saved["invoke_fps"]
    # The saved video carries the overlay: its top-left panel is darker than the source's.
    out, src = _read_video(tmp_path / "out.mp4"), _read_video(device_video)
    assert len(out) == 36 and out[0].shape == src[0].shape
    panel = (slice(0, 60), slice(0, 300))
    assert out[5][panel].mean() < src[5][panel].mean() - 20
    far = (slice(400, 480), slice(400, 640))  # away from the panel the image is unchanged (up to the codec)
    assert abs(float(out[5][far].mean()) - float(src[5][far].mean())) < 8
    assert not list(tmp_path.glob(".*partial*"))  # the temp video was renamed into place


def test_loop_on_folder_with_max_frames_smoothing_and_labels(tiny_tflite, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(tiny_tflite["images"]):
        cv2.imwrite(str(folder / f"{i:02d}.png"), cv2.cvtColor(np.kron(img, np.ones((3, 3, 1), np.uint8)), cv2.COLOR_RGB2BGR))
    labels = tmp_path / "l.txt"
    labels.write_text("x\ny\nz\n")
    seen = []
    stats = run(CameraConfig(model=str(tiny_tflite["float32"]), source=str(folder), labels=str(labels),
                             threads=1, top_k=3, smoothing=0.5, max_frames=5, headless=True,
                             jsonl=str(tmp_path / "r.jsonl")),
                on_frame=lambda n, cats: seen.append(cats))
    assert stats.frames == 5 and stats.stop_reason == "max frames"
    assert {c.label for c in seen[0]} == {"x", "y", "z"}
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    # Frame 0 is unsmoothed: it equals the model's answer on the 96x96 image squashed back to 32x32.
    assert rows[0]["top_k"][0]["index"] == int(np.argmax(tiny_tflite["keras_probs"][0]))
    # Frames 1-4 are the running average 0.5 * previous + 0.5 * current of the model's own scores on
    # each file (the classifier alone, outside the loop), to the JSONL's 4 decimals.
    from edgecls.runtime.classifier import Classifier

    clf = Classifier(tiny_tflite["float32"], labels=["x", "y", "z"], num_threads=1)
    raw = [clf.probabilities(cv2.cvtColor(cv2.imread(str(folder / f"{i:02d}.png")), cv2.COLOR_BGR2RGB))
           for i in range(5)]
    expected = [raw[0]]
    for p in raw[1:]:
        expected.append(0.5 * expected[-1] + 0.5 * p)
    for row, want in zip(rows, expected):
        got = np.zeros(3)
        for c in row["top_k"]:
            got[c["index"]] = c["score"]
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert not np.allclose(expected[4], raw[4], atol=1e-3)  # the images differ enough for smoothing to show


def test_sigterm_and_realtime_pacing(tiny_tflite, device_video, tmp_path):
    import os
    import signal
    import time

    def terminate(n, cats):  # systemd stops the service with SIGTERM
        if n == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    t0 = time.perf_counter()
    stats = run(CameraConfig(model=str(tiny_tflite["int8"]), source=str(device_video), threads=1, headless=True,
                             realtime=True, stats_json=str(tmp_path / "s.json")), on_frame=terminate)
    assert stats.interrupted and 4 <= stats.frames <= 5
    assert time.perf_counter() - t0 >= 3 / 30.0  # paced at the video's 30 fps
    assert json.loads((tmp_path / "s.json").read_text())["stop_reason"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_overlay_draws_labels_and_fps():
    frame = np.full((120, 400, 3), 200, np.uint8)
    out = draw_overlay(frame.copy(), [Category(0, "cat", 0.9)], fps=30.0, inference_ms=3.2)
    assert out[:60, :300].mean() < frame[:60, :300].mean() - 50
    assert (out[60:, 320:] == 200).all()


def test_existing_outputs_need_force(tiny_tflite, device_video, tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("keep me\n")
    runner = CliRunner()
    args = ["camera", "-m", str(tiny_tflite["int8"]), "-s", str(device_video), "--jsonl", str(jsonl),
            "--max-frames", "2", "--threads", "1"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 1 and "already exists" in res.output and "--force" in res.output
    assert jsonl.read_text() == "keep me\n"
    res = runner.invoke(cli, args + ["--force"])
    assert res.exit_code == 0, res.output
    assert len(jsonl.read_text().splitlines()) == 2
    assert "2 frames" in res.output


def test_ctrl_c_flushes_and_closes_outputs(tiny_tflite, device_video, tmp_path):
    def interrupt(n, cats):
        if n == 3:
            raise KeyboardInterrupt

    cfg = CameraConfig(model=str(tiny_tflite["int8"]), source=str(device_video), threads=1, headless=True,
                       jsonl=str(tmp_path / "r.jsonl"), stats_json=str(tmp_path / "s.json"), save=str(tmp_path / "v.mp4"))
    stats = run(cfg, on_frame=interrupt)
    assert stats.interrupted and stats.frames == 3
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3
    assert json.loads((tmp_path / "s.json").read_text())["interrupted"] is True
    assert len(_read_video(tmp_path / "v.mp4")) == 3


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["-m", "{tmp}/missing.tflite", "-s", "{video}"], 1, "Error: model not found: "),
        (["-m", "{corrupt}", "-s", "{video}"], 1, "is not a valid .tflite model ("),
        (["-m", "{model}", "-s", "{tmp}/nope.mp4"], 1, "Error: source not found: "),
        (["-m", "{model}", "-s", "97"], 1, "Error: could not open camera 97 (tried V4L2 /dev/video97, then CAP_ANY)"),
        (["-m", "{model}", "-s", "{video}", "--threads", "0"], 2, "Invalid value for '--threads'"),
        (["-m", "{model}", "-s", "{video}", "--smoothing", "1"], 2, "Invalid value for '--smoothing'"),
        (["-m", "{model}", "-s", "{video}", "--labels", "{tmp}/no.txt"], 1, "Error: labels file not found"),
        (["-m", "{model}", "-s", "{video}", "--window"], 1, "Error: cannot show a window"),
    ],
)
def test_camera_cli_bad_inputs(args, code, message, tiny_tflite, device_video, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(np.random.default_rng(1).bytes(2048))
    fill = {"tmp": str(tmp_path), "video": str(device_video), "corrupt": str(corrupt), "model": str(tiny_tflite["int8"])}
    res = CliRunner().invoke(cli, ["camera", *[a.format(**fill) for a in args]])
    assert res.exit_code == code, res.output
    assert message in res.output
    assert "Traceback" not in res.output
