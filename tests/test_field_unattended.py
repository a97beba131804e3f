"""Weeks unattended: bounded JSONL, a watchdog for a source that stops delivering,
and capture-to-result latency percentiles."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import COLOURS_RGB, write_colour_video

from edgecls.cli import cli
from edgecls.core.device_config import CameraConfig
from edgecls.runtime import loop, watchdog
from edgecls.runtime.jsonlog import RotatingJsonl
from edgecls.runtime.loop import run
from edgecls.runtime.sources import FrameSource

pytestmark = pytest.mark.slow  # converts a model


class StallingCamera(FrameSource):
    """A live source that delivers ``frames`` frames, then blocks in read() as a wedged camera does.

    ``reopen()`` works ``reopen_ok`` times; each success delivers ``frames`` frames again.
    """

    is_live = True
    name = "stalling camera"
    fps = 30.0

    def __init__(self, frames: int, reopen_ok: int, colour: str = "red") -> None:
        self.frames, self.reopen_ok = frames, reopen_ok
        self.left = frames
        self.reopen_calls = 0
        self._unblock = threading.Event()
        self.img = np.empty((48, 64, 3), np.uint8)
        self.img[:] = COLOURS_RGB[colour]

    def read(self):
        if self.left > 0:
            self.left -= 1
            time.sleep(0.03)  # ~30 fps, like a camera
            return True, self.img.copy()
        self._unblock.wait()  # stuck until closed, like a read on a dead USB device
        return False, None

    def reopen(self) -> bool:
        self.reopen_calls += 1
        self._unblock.set()  # the old read() returns (closing the device does that)
        if self.reopen_calls > self.reopen_ok:
            return False
        self._unblock = threading.Event()
        self.left = self.frames
        return True

    def close(self) -> None:
        self._unblock.set()


def test_watchdog_reopens_a_stalled_source_and_keeps_going(colour_model, tmp_path):
    cam = StallingCamera(frames=8, reopen_ok=1)
    t0 = time.perf_counter()
    stats = run(CameraConfig(model=str(colour_model), threads=1, headless=True, max_frames=10,
                             stall_timeout=0.5, stall_retries=2, stats_json=str(tmp_path / "s.json")), source=cam)
    assert stats.frames == 10 and stats.stop_reason == "max frames"
    assert stats.stalls == 1 and stats.reopens == 1 and cam.reopen_calls == 1
    assert time.perf_counter() - t0 >= 0.5 + watchdog.WATCHDOG_BACKOFF_S  # waited the timeout, then backed off
    assert json.loads((tmp_path / "s.json").read_text())["stalls"] == 1


def test_watchdog_exits_nonzero_when_the_source_stays_dead(colour_model, tmp_path, monkeypatch):
    cam = StallingCamera(frames=4, reopen_ok=0)
    monkeypatch.setattr(loop, "open_source", lambda spec, **kw: cam)  # the CLI's own path, this camera
    jsonl = tmp_path / "p.jsonl"
    res = CliRunner().invoke(cli, ["camera", "-m", str(colour_model), "-s", "0", "--threads", "1", "--headless",
                                   "--stall-timeout", "0.3", "--stall-retries", "2", "--jsonl", str(jsonl),
                                   "--stats-json", str(tmp_path / "s.json")])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: no frame from stalling camera for 0.3s and reopening it failed 2 time(s); "
                                 "exiting so that systemd restarts the service")
    assert "Traceback" not in res.output and cam.reopen_calls == 2
    # What was seen before the stall is kept, and the stats say why it stopped. (A live source
    # keeps only the newest frame: on a busy machine one may be dropped, and is counted.)
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["stop_reason"] == "source stalled" and saved["stalls"] == 1
    assert saved["frames"] + saved["dropped_frames"] == 4 and saved["frames"] >= 2
    assert len(jsonl.read_text().splitlines()) == saved["frames"]


def test_jsonl_on_change_with_heartbeat(colour_model, tmp_path):
    video = write_colour_video(tmp_path / "v.mp4", [("red", 12), ("blue", 12), ("red", 12)], fps=30.0)
    jsonl = tmp_path / "p.jsonl"
    stats = run(CameraConfig(model=str(colour_model), source=str(video), threads=1, headless=True, realtime=True,
                             jsonl=str(jsonl), log_on="change", log_interval=0.15))
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    changes = [(r["frame"], r["top_k"][0]["label"]) for r in rows if r["reason"] == "change"]
    assert changes == [(0, "red"), (12, "blue"), (24, "red")]
    beats = [r for r in rows if r["reason"] == "heartbeat"]
    # 1.2 s of video at 30 fps with a 0.15 s heartbeat: about 6 (paced, so never fewer than 4).
    assert 4 <= len(beats) <= 8
    times = [r["time"] for r in rows]
    assert all(b - a <= 0.15 + 0.12 for a, b in zip(times, times[1:]))  # never silent much past the interval
    assert stats.outputs["jsonl_rows"] == len(rows) and stats.frames == 36
    assert all(r["frame_age_ms"] > 0 for r in rows)


def test_jsonl_rotates_by_size_and_keeps_previous_runs(colour_model, tmp_path):
    video = write_colour_video(tmp_path / "v.mp4", [("red", 30), ("blue", 30)])
    jsonl = tmp_path / "p.jsonl"
    cap_mb = 2000 / 1024 / 1024  # 2000 bytes: ~8 rows per file
    cfg = CameraConfig(model=str(colour_model), source=str(video), threads=1, headless=True, jsonl=str(jsonl),
                       jsonl_max_mb=cap_mb, jsonl_keep=3)
    run(cfg)
    files = [jsonl, *(jsonl.with_name(f"p.jsonl.{n}") for n in (1, 2, 3))]
    assert all(f.exists() for f in files) and not jsonl.with_name("p.jsonl.4").exists()
    frames = [[json.loads(line)["frame"] for line in f.read_text().splitlines()] for f in files]
    for rows in frames[1:]:
        assert 0 < len(rows) and sum(len(json.dumps(r)) for r in rows) < 2000 + 400
    # Oldest first: .3, .2, .1, current hold consecutive frames ending at the last one.
    flat = [n for rows in reversed(frames) for n in rows]
    assert flat == list(range(flat[0], 60)) and flat[0] > 0
    # A restart (the systemd unit) rotates the finished log instead of refusing or truncating it.
    last_run = jsonl.read_text()
    run(CameraConfig(**{**cfg.__dict__, "max_frames": 2}))
    assert jsonl.with_name("p.jsonl.1").read_text() == last_run
    assert len(jsonl.read_text().splitlines()) == 2


def test_rotating_jsonl_unit(tmp_path):
    p = tmp_path / "x.jsonl"
    log = RotatingJsonl(p, max_bytes=50, keep=2)
    for i in range(7):
        log.write({"i": i, "pad": "xxxxxxxxxx"})  # 30 bytes per row: rotates after every 2nd row
    log.close()
    read = lambda f: [json.loads(line)["i"] for line in f.read_text().splitlines()]  # noqa: E731
    assert read(p) == [6] and read(tmp_path / "x.jsonl.1") == [4, 5] and read(tmp_path / "x.jsonl.2") == [2, 3]
    assert not (tmp_path / "x.jsonl.3").exists()


def test_frame_age_percentiles(colour_model, tmp_path):
    video = write_colour_video(tmp_path / "v.mp4", [("red", 40)])
    stats = run(CameraConfig(model=str(colour_model), source=str(video), threads=1, headless=True))
    age = stats.frame_age_ms
    assert age["n"] == 40 and 0 < age["p50"] <= age["p90"] <= age["p99"] <= age["max"]
    # The age includes at least the frame's own preprocess + invoke, and not more than the whole run.
    assert age["p50"] >= stats.stage_ms["invoke"] and age["max"] <= stats.elapsed_s * 1e3


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--serve", "nope"], 1, "Error: --serve expects [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080; got 'nope'"),
        (["--serve", "0.0.0.0:0"], 1, "Error: --serve 0.0.0.0:0 would be reachable from other machines; set --serve-token"),
        (["--serve", "127.0.0.1:99999"], 1, "Error: --serve port must be 0-65535, got 99999"),
        (["--mqtt", "http://x"], 1, "Error: --mqtt must look like mqtt://[USER[:PASSWORD]@]HOST[:PORT][/TOPIC/PREFIX]"),
        (["--mqtt", "mqtt://h:port"], 1, "Error: --mqtt port is not a number"),
        (["--mqtt", "mqtt://h/a/#"], 1, "Error: --mqtt topic prefix 'a/#' must not contain MQTT wildcards"),
        (["--save-uncertain", "{file}"], 2, "Invalid value for '--save-uncertain'"),
        (["--below", "0"], 2, "Invalid value for '--below'"),
        (["--max-per-hour", "0"], 2, "Invalid value for '--max-per-hour'"),
        (["--log-on", "always"], 2, "Invalid value for '--log-on'"),
        (["--jsonl-max-mb", "-1"], 2, "Invalid value for '--jsonl-max-mb'"),
        (["--stall-timeout", "-1"], 2, "Invalid value for '--stall-timeout'"),
    ],
)
def test_camera_field_options_bad_inputs(args, code, message, colour_model, tmp_path):
    video = write_colour_video(tmp_path / "v.mp4", [("red", 2)])
    (tmp_path / "f.txt").write_text("x")
    res = CliRunner().invoke(cli, ["camera", "-m", str(colour_model), "-s", str(video), "--threads", "1",
                                   *[a.format(file=tmp_path / "f.txt") for a in args]])
    assert res.exit_code == code, res.output
    assert message in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("extra, refused", [
    ([], True),                                            # no rotation: an existing log needs --force
    (["--jsonl-max-mb", "1", "--jsonl-keep", "0"], True),  # rotation that keeps no file would lose it too
    (["--jsonl-max-mb", "1", "--jsonl-keep", "1"], False),  # kept as .1
    (["--force"], False),                                  # the user said so
], ids=["plain", "keep-0", "keep-1", "force"])
def test_an_existing_jsonl_is_never_lost_without_force(colour_model, tmp_path, extra, refused):
    video = write_colour_video(tmp_path / "v.mp4", [("red", 3)])
    log = tmp_path / "results.jsonl"
    log.write_text('{"old": "weeks of results"}\n')
    res = CliRunner().invoke(cli, ["camera", "-m", str(colour_model), "-s", str(video), "--threads", "1", "--headless",
                                   "--jsonl", str(log), *extra])
    if refused:
        assert res.exit_code == 1, res.output
        assert f"Error: {log} already exists; choose another --jsonl path or pass --force" in res.output
        assert log.read_text() == '{"old": "weeks of results"}\n'
    else:
        assert res.exit_code == 0, res.output
        kept = log.with_name(log.name + ".1")
        assert (kept.is_file() and "weeks of results" in kept.read_text()) == ("--force" not in extra)
        assert "weeks of results" not in log.read_text() and json.loads(log.read_text().splitlines()[0])["label"] == "red"


def _result(frame: int, t: float, label: str | None):
    from edgecls.runtime.scores import Category
    from edgecls.runtime.sinks import FrameResult

    cats = [Category(0 if label == "red" else 1, label, 0.9)] if label else []
    return FrameResult(frame=frame, source_frame=frame, rgb=np.zeros((2, 2, 3), np.uint8), categories=cats,
                       probs=np.array([0.9, 0.1], np.float32), labels=["red", "blue"], fps=10.0,
                       stage_ms={"invoke": 1.0}, frame_age_ms=2.0, wall_time=t)


@pytest.mark.parametrize(
    "mode, interval, expected",
    [
        ("frame", 0.0, [0, 1, 2, 3, 4, 5, 6, 7]),           # every frame
        ("frame", 1.0, [0, 4, 7]),                           # at most one row a second
        ("change", 0.0, [0, 2, 5]),                          # red -> None (under --threshold) -> blue
        ("change", 1.0, [0, 2, 4, 5]),                       # + a heartbeat when 1 s passed without a row
    ],
)
def test_jsonl_sink_policies(mode, interval, expected, tmp_path):
    from edgecls.runtime.jsonlog import JsonlSink

    sink = JsonlSink(RotatingJsonl(tmp_path / "x.jsonl"), mode=mode, interval_s=interval)
    timeline = [(0.0, "red"), (0.3, "red"), (0.6, None), (0.9, None), (1.7, None), (2.0, "blue"), (2.2, "blue"),
                (2.9, "blue")]
    for i, (t, label) in enumerate(timeline):
        sink.handle(_result(i, 1000.0 + t, label))
    sink.close()
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == expected
