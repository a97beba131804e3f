"""Live web view in a real headless Chromium (Debian's chromium + chromium-driver),
driven through WebDriver; `edgecls camera --serve` runs as the user runs it (a subprocess)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import write_colour_video

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                       reason="needs Debian's chromium and chromium-driver (tools/install_system_packages.sh)"),
]
webdriver = pytest.importorskip("selenium.webdriver")

EDGECLS = [sys.executable, "-c", "from edgecls.cli import main; main()"]
TOKEN = "s3cret-token"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=900,600")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, headers=None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def served_camera(colour_model, tmp_path):
    """`edgecls camera --serve` on a 16 s real-time video that switches red/blue every 2 s."""
    video = write_colour_video(tmp_path / "v.mp4", [(c, 30) for c in ["red", "blue"] * 8], fps=15.0, size=(320, 240))
    port = free_port()
    proc = subprocess.Popen(
        [*EDGECLS, "camera", "-m", str(colour_model), "-s", str(video), "--threads", "1", "--headless", "--realtime",
         "--serve", f"127.0.0.1:{port}", "--serve-token", TOKEN, "--stats-json", str(tmp_path / "s.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if get(f"{base}/status?token={TOKEN}")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"web view did not come up: {proc.communicate()[1]}")
    yield base, proc, tmp_path / "s.json"
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    yield driver
    driver.quit()


def _png_pixels(png: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def test_page_stream_and_label_follow_the_video(served_camera, browser):
    base, proc, stats_json = served_camera
    # Token: required everywhere (query or bearer header).
    assert get(f"{base}/status")[0] == 401 and get(f"{base}/")[0] == 401
    assert get(f"{base}/status?token=wrong")[0] == 401
    code, body = get(f"{base}/status", {"Authorization": f"Bearer {TOKEN}"})
    status = json.loads(body)
    assert code == 200 and status["labels"] == ["red", "blue"]
    time.sleep(1.0)
    later = json.loads(get(f"{base}/status", {"Authorization": f"Bearer {TOKEN}"})[1])
    assert later["frames"] > status["frames"] and later["uptime_s"] > status["uptime_s"]  # live, not a snapshot
    code, jpeg = get(f"{base}/frame.jpg?token={TOKEN}")
    assert code == 200 and _png_pixels(jpeg).shape == (240, 320, 3)

    browser.get(f"{base}/?token={TOKEN}")
    img = browser.find_element("id", "stream")
    wait_until = lambda cond, t=20: _wait(cond, t)  # noqa: E731
    assert wait_until(lambda: browser.execute_script("return arguments[0].naturalWidth", img) == 320)
    assert wait_until(lambda: browser.find_element("id", "frames").text not in ("", "0"))
    frames1 = int(browser.find_element("id", "frames").text)
    labels_seen, stream_colours = set(), set()
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and (len(labels_seen) < 2 or len(stream_colours) < 2):
        labels_seen.add(browser.find_element("id", "label").text)
        px = _png_pixels(img.screenshot_as_png)
        b, r = px[100:, 100:, 0].mean(), px[100:, 100:, 2].mean()  # below the overlay panel
        stream_colours.add("red" if r > b + 80 else "blue" if b > r + 80 else "?")
        time.sleep(0.25)
    # The label text and the streamed picture both follow the video's colour: the picture was seen red
    # and blue. (An element screenshot can catch the page background while the layout settles, so a
    # single before/after pair of screenshots is no evidence either way; the colours seen are.)
    assert {"red", "blue"} <= labels_seen, labels_seen
    assert {"red", "blue"} <= stream_colours, stream_colours
    assert int(browser.find_element("id", "frames").text) > frames1
    fps = float(browser.find_element("id", "fps").text)
    assert fps > 5  # the video plays at 15 fps
    stages = browser.find_element("id", "stages").text
    for stage in ("capture", "preprocess", "invoke", "postprocess"):
        assert stage in stages
    # systemd's stop: SIGTERM ends the loop cleanly, the server goes away, stats are written.
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert proc.returncode == 0, proc.stderr.read()
    saved = json.loads(stats_json.read_text())
    assert saved["stop_reason"] == "interrupted" and saved["outputs"]["web"]["encoded"] > 10
    with pytest.raises(OSError):
        get(f"{base}/status?token={TOKEN}")


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def _thread_cpu_ticks(native_id: int) -> int:
    fields = open(f"/proc/self/task/{native_id}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


def test_no_viewer_no_encoding_and_loopback_default(colour_model, tmp_path):
    """Nobody watching: nothing is encoded and the encoder thread sleeps (it used no CPU)."""
    import threading

    from edgecls.core.device_config import CameraConfig
    from edgecls.runtime.loop import run
    from edgecls.runtime.web import parse_serve

    assert parse_serve("8080") == ("127.0.0.1", 8080) and parse_serve("[::1]:81") == ("::1", 81)
    video = write_colour_video(tmp_path / "v.mp4", [("red", 20), ("blue", 20)], fps=20.0)
    ticks = []

    def sample(n, cats):
        if n == 39:  # 2 s into the real-time video
            enc = next(t for t in threading.enumerate() if t.name == "edgecls-web-encode")
            ticks.append(_thread_cpu_ticks(enc.native_id))

    stats = run(CameraConfig(model=str(colour_model), source=str(video), threads=1, headless=True, realtime=True,
                             serve=f"127.0.0.1:{free_port()}"), on_frame=sample)
    assert stats.frames == 40 and stats.outputs["web"]["encoded"] == 0
    assert ticks and ticks[0] <= 5, ticks  # <= 50 ms of CPU in 2 s (a busy-waiting thread takes ~all of it)
