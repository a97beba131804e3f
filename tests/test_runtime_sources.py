"""Frame sources and the grabber thread (fakes stand in for cameras: none exist here)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecls.core.errors import EdgeclsError
from edgecls.runtime.grabber import FrameGrabber, InlineReader
from edgecls.runtime.sources import FrameSource, ImageFolderSource, bgrx_to_rgb, open_source


def test_picamera_xrgb8888_bytes_become_rgb():
    # XRGB8888 lands in memory as B, G, R, X per pixel.
    bgrx = np.zeros((2, 3, 4), np.uint8)
    bgrx[..., 0], bgrx[..., 1], bgrx[..., 2], bgrx[..., 3] = 10, 20, 30, 255  # B, G, R, X
    rgb = bgrx_to_rgb(bgrx)
    assert rgb.shape == (2, 3, 3) and rgb.flags["C_CONTIGUOUS"]
    assert rgb[0, 0].tolist() == [30, 20, 10]
    # Agrees with OpenCV's own conversion of the same bytes.
    np.testing.assert_array_equal(rgb, cv2.cvtColor(bgrx, cv2.COLOR_BGRA2RGB))


class FakeCamera(FrameSource):
    """A live source producing numbered frames every ``period_s``; can fail and recover."""

    is_live = True

    def __init__(self, period_s=0.002, fail_after=None, reopen_ok_after=0, limit=None):
        self.name, self.period_s = "fake camera", period_s
        self.n = 0
        self.fail_after, self.reopen_ok_after, self.limit = fail_after, reopen_ok_after, limit
        self.failed = False
        self.reopen_calls = 0

    def read(self):
        time.sleep(self.period_s)
        if self.limit is not None and self.n >= self.limit:
            return False, None
        if self.failed or (self.fail_after is not None and self.n == self.fail_after):
            self.failed = True
            return False, None
        self.n += 1
        return True, np.full((4, 4, 3), self.n % 256, np.uint8)

    def reopen(self):
        self.reopen_calls += 1
        if self.reopen_calls > self.reopen_ok_after:
            self.failed, self.fail_after = False, None
            return True
        return False


def test_grabber_keeps_only_the_newest_frame_for_a_slow_consumer():
    cam = FakeCamera(period_s=0.002)
    grabber = FrameGrabber(cam, transform=lambda rgb: rgb.astype(np.float32)).start()
    seen, staleness = [], []
    try:
        for _ in range(8):
            frame = grabber.get(timeout=2.0)
            staleness.append(cam.n - 1 - frame.index)  # frames the camera made after this one
            seen.append(frame.index)
            assert frame.tensor is not None and frame.tensor.dtype == np.float32  # transform ran in the thread
            time.sleep(0.03)  # slow consumer: ~15 frames arrive meanwhile
    finally:
        grabber.stop()
    # The frame handed out is (nearly) the newest, not a queued stale one (median: robust to a busy CI box).
    assert sorted(staleness)[len(staleness) // 2] <= 3
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert max(np.diff(seen)) > 3  # frames were skipped...
    assert grabber.dropped >= 8 * 5  # ...and counted
    assert not grabber._thread.is_alive()


def test_grabber_reopens_a_live_source_that_drops():
    cam = FakeCamera(period_s=0.001, fail_after=5, reopen_ok_after=1)
    grabber = FrameGrabber(cam, latest_only=False, reopen_backoff_s=0.01).start()
    try:
        idx = [grabber.get(timeout=2.0).index for _ in range(10)]
    finally:
        grabber.stop()
    assert idx == list(range(10))
    assert cam.reopen_calls == 2 and grabber.reopens == 1


def test_grabber_gives_up_after_bounded_retries():
    cam = FakeCamera(period_s=0.0, fail_after=2, reopen_ok_after=99)
    grabber = FrameGrabber(cam, latest_only=False, reopen_attempts=3, reopen_backoff_s=0.001).start()
    assert grabber.get(timeout=2.0).index == 0
    assert grabber.get(timeout=2.0).index == 1
    with pytest.raises(EdgeclsError, match="could not be reopened after 3 attempts"):
        grabber.get(timeout=2.0)
    assert cam.reopen_calls == 3
    grabber.stop()


def test_file_sources_are_queued_without_drops(tmp_path):
    files = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.png"
        cv2.imwrite(str(p), np.full((8, 8, 3), i * 10, np.uint8))
        files.append(p)
    grabber = FrameGrabber(ImageFolderSource(files, name="f")).start()
    got = []
    while (frame := grabber.get(timeout=2.0)) is not None:
        got.append(int(frame.rgb[0, 0, 0]))
        time.sleep(0.005)
    grabber.stop()
    assert got == [i * 10 for i in range(12)] and grabber.dropped == 0


def test_inline_reader_paces_at_the_given_fps(tmp_path):
    files = [tmp_path / f"{i}.png" for i in range(5)]
    for p in files:
        cv2.imwrite(str(p), np.zeros((4, 4, 3), np.uint8))
    reader = InlineReader(ImageFolderSource(files, name="f"), pace_fps=50.0)
    t0 = time.perf_counter()
    n = sum(1 for _ in iter(reader.get, None))
    assert n == 5
    assert time.perf_counter() - t0 >= 4 / 50.0 * 0.9


def test_open_source_reads_folder_sorted_as_rgb(tmp_path):
    for name, bgr in (("b.png", (255, 0, 0)), ("a.jpg", (0, 0, 255)), ("notes.txt", None)):
        if bgr is None:
            (tmp_path / name).write_text("x")
        else:
            cv2.imwrite(str(tmp_path / name), np.full((6, 6, 3), bgr, np.uint8))
    src = open_source(str(tmp_path))
    ok, first = src.read()
    assert ok and first[0, 0].argmax() == 0  # a.jpg: red in RGB order
    ok, second = src.read()
    assert ok and second[0, 0].argmax() == 2  # b.png: blue
    assert src.read() == (False, None) and not src.is_live


def test_open_source_reads_a_video_file(device_video):
    src = open_source(str(device_video))
    assert not src.is_live and src.fps == pytest.approx(30.0)
    n = 0
    while True:
        ok, frame = src.read()
        if not ok:
            break
        assert frame.shape == (480, 640, 3)
        n += 1
    src.close()
    assert n == 36


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing.mp4", "source not found: missing.mp4"),
        ("97", "could not open camera 97 (tried V4L2 /dev/video97, then CAP_ANY)"),
        ("/dev/video97", "could not open camera /dev/video97 (no such device)"),
        ("picamera", "picamera2 not found: on Raspberry Pi OS run 'sudo apt install python3-picamera2'"),
        ("videotestsrc ! appsink", "could not open GStreamer pipeline"),
        ("", "empty --source"),
    ],
)
def test_open_source_errors(spec, message, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "picamera2", None)  # as on a non-Pi machine
    with pytest.raises(EdgeclsError) as e:
        open_source(spec)
    assert message in str(e.value)


def test_open_source_empty_folder_and_bad_video(tmp_path):
    with pytest.raises(EdgeclsError, match="no images in folder"):
        open_source(str(tmp_path))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(EdgeclsError, match="could not open video file"):
        open_source(str(bad))


def test_grabber_stop_unblocks_a_waiting_consumer():
    """A camera whose read() never returns (a wedged driver): the consumer waiting for a frame gets None
    soon after stop(), not never. Nothing else could wake it: no frame ever arrives."""
    release = threading.Event()

    class Wedged(FrameSource):
        is_live, name, fps = True, "wedged camera", 30.0

        def read(self):
            release.wait()  # until the test ends
            return False, None

        def close(self):
            pass

    grabber = FrameGrabber(Wedged())
    grabber.stop_timeout_s = 0.2  # stop() does not wait long for the stuck reader thread
    grabber.start()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("f", grabber.get()))
    t.start()
    time.sleep(0.3)
    assert t.is_alive()  # really waiting: no frame, no end of stream
    t0 = time.monotonic()
    grabber.stop()
    t.join(2.0)
    try:
        assert not t.is_alive() and out == {"f": None}
        assert time.monotonic() - t0 < 1.0
    finally:
        release.set()


def test_picamera_source_with_a_fake_picamera2(monkeypatch):
    """The Picamera2 path without hardware: XRGB8888 at the requested size, B,G,R,X -> RGB."""
    import sys
    import types

    calls = {}

    class FakePicamera2:
        def create_video_configuration(self, main):
            calls["main"] = main
            return {"main": main}

        def configure(self, config):
            calls["configured"] = config

        def start(self):
            calls["started"] = True

        def capture_array(self, name="main"):
            w, h = calls["main"]["size"]
            a = np.zeros((h, w, 4), np.uint8)
            a[..., 0], a[..., 1], a[..., 2], a[..., 3] = 1, 2, 3, 255  # B, G, R, X
            return a

        def stop(self):
            calls["stopped"] = True

        def close(self):
            calls["closed"] = True

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    src = open_source("picamera", width=320, height=240)
    assert src.is_live and calls["main"] == {"size": (320, 240), "format": "XRGB8888"}
    ok, rgb = src.read()
    assert ok and rgb.shape == (240, 320, 3) and rgb[0, 0].tolist() == [3, 2, 1]
    src.close()
    assert calls["stopped"] and calls["closed"]


def test_folder_source_skips_what_training_skips_without_libjpeg_noise(tmp_path):
    """A truncated JPEG: training's scan refuses it, so the device skips it too, in one log line of its own."""
    import json
    import subprocess
    import sys

    from edgecls.data import scan_dataset

    cls = tmp_path / "data" / "a"
    cls.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(cls / f"{i}.jpg"), rng.integers(0, 255, (32, 32, 3), np.uint8))
    whole = (cls / "0.jpg").read_bytes()
    (cls / "0.jpg").write_bytes(whole[: len(whole) // 2])  # cut mid-scan: libjpeg would grey the rest
    (cls / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # a signature and nothing else
    (tmp_path / "data" / "b").mkdir()
    cv2.imwrite(str(tmp_path / "data" / "b" / "x.jpg"), np.zeros((32, 32, 3), np.uint8))

    # In its own process: the device's stderr is a real file descriptor there, as on the Pi.
    device = subprocess.run([sys.executable, "-c", """
import json, sys
from pathlib import Path
from edgecls.runtime.sources import ImageFolderSource
source = ImageFolderSource(sorted(Path(sys.argv[1]).iterdir()), name="f")
shapes = []
while (got := source.read())[0]:
    shapes.append(list(got[1].shape))
print(json.dumps({"shapes": shapes, "skipped": [Path(p).name for p in source.skipped]}))
""", str(cls)], capture_output=True, text=True, timeout=120)
    assert device.returncode == 0, device.stderr
    out = json.loads(device.stdout)
    training_skips = {Path(p).name for p, _ in scan_dataset(tmp_path / "data").skipped}
    assert out["shapes"] == [[32, 32, 3]] * 2
    assert set(out["skipped"]) == training_skips == {"0.jpg", "3.png"}
    assert "Premature end" not in device.stderr and "IHDR" not in device.stderr, device.stderr
    assert "skipping truncated image" in device.stderr and "skipping undecodable image" in device.stderr
