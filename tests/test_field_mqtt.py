"""MQTT against a real Mosquitto broker on 127.0.0.1, started and stopped here, with a
real paho client subscribing; `edgecls camera` runs as the user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import write_colour_video

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mosquitto") is None,
                       reason="needs Debian's mosquitto (tools/install_system_packages.sh installs it)"),
]
paho = pytest.importorskip("paho.mqtt.client")

PREFIX = "test/feeder"
EDGECLS = [sys.executable, "-c", "from edgecls.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Mosquitto on 127.0.0.1:port with a temp config; stop() and start() again on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        # log_type all: the broker's own record of every PUBLISH it received (read by the tests).
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "log_type all\n")
        self.log = tmp / "mosquitto.log"
        self.proc = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.stop()


class Subscriber:
    """A paho client recording (time, topic, payload, retained); re-subscribes after reconnects."""

    def __init__(self, port: int, topics=(f"{PREFIX}/#", "homeassistant/#")) -> None:
        self.messages: list[tuple[float, str, str, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{os.getpid()}-{id(self)}")
        self.c.reconnect_delay_set(0.2, 1)

        def on_connect(client, userdata, flags, reason, props):
            for t in topics:
                client.subscribe(t, qos=1)
            self.ready.set()

        def on_message(client, userdata, msg):
            with self.lock:
                self.messages.append((time.time(), msg.topic, msg.payload.decode(), bool(msg.retain)))

        self.c.on_connect, self.c.on_message = on_connect, on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(10)
        time.sleep(0.2)  # SUBACK

    def on(self, topic: str) -> list[tuple[float, str, bool]]:
        with self.lock:
            return [(t, p, r) for t, top, p, r in self.messages if top == topic]

    def wait_for(self, pred, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def camera(model, video, *extra) -> list[str]:
    return [*EDGECLS, "camera", "-m", str(model), "-s", str(video), "--threads", "1", "--headless", *map(str, extra)]


def test_events_on_change_retained_state_and_home_assistant(colour_model, broker, tmp_path):
    # red, then grey (0.5/0.5: under --threshold 0.8), blue, red: 60 frames, 4 events.
    video = write_colour_video(tmp_path / "v.mp4", [("red", 15), ("grey", 15), ("blue", 15), ("red", 15)])
    sub = Subscriber(broker.port)
    try:
        url = f"mqtt://127.0.0.1:{broker.port}/{PREFIX}"
        res = subprocess.run(camera(colour_model, video, "--threshold", "0.8", "--mqtt", url, "--mqtt-home-assistant",
                                    "--stats-json", tmp_path / "s.json"),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert sub.wait_for(lambda: len(sub.on(f"{PREFIX}/event")) >= 4 and sub.on(f"{PREFIX}/status")[-1:]
                            and sub.on(f"{PREFIX}/status")[-1][1] == "offline")
        time.sleep(0.3)
        events = [json.loads(p) for _, p, _ in sub.on(f"{PREFIX}/event")]
        assert [(e["type"], e["label"], e["previous"]) for e in events] == [
            ("start", "red", None), ("below", None, "red"), ("above", "blue", None), ("change", "red", "blue")]
        assert [e["frame"] for e in events] == [0, 15, 30, 45]  # not one message per frame
        assert events[2]["score"] > 0.8 and events[2]["top_k"][0]["label"] == "blue"
        assert [p for _, p, _ in sub.on(f"{PREFIX}/status")] == ["online", "offline"]
        assert json.loads((tmp_path / "s.json").read_text())["outputs"]["mqtt"]["events"] == 4
    finally:
        sub.close()
    # A client that connects later gets the retained picture: state, availability, discovery, stats.
    late = Subscriber(broker.port)
    try:
        assert late.wait_for(lambda: len(late.messages) >= 5, timeout=5)
        retained = {top: (p, r) for _, top, p, r in late.messages}
        assert json.loads(retained[f"{PREFIX}/state"][0])["label"] == "red" and retained[f"{PREFIX}/state"][1]
        assert retained[f"{PREFIX}/status"] == ("offline", True)
        assert json.loads(retained[f"{PREFIX}/stats"][0])["frames"] == 60  # the final figures, retained
        node = "test_feeder"
        label_cfg = json.loads(retained[f"homeassistant/sensor/{node}/label/config"][0])
        assert label_cfg["state_topic"] == f"{PREFIX}/state" and label_cfg["availability_topic"] == f"{PREFIX}/status"
        assert label_cfg["value_template"] == "{{ value_json.label }}" and label_cfg["unique_id"] == f"{node}_label"
        assert f"homeassistant/sensor/{node}/score/config" in retained
    finally:
        late.close()


def test_broker_restart_reconnects_and_never_blocks_the_loop(colour_model, broker, tmp_path):
    # 9 s of video at 30 fps, played in real time, switching colour every second.
    video = write_colour_video(tmp_path / "v.mp4", [(c, 30) for c in ["red", "blue"] * 4 + ["red"]])
    jsonl = tmp_path / "p.jsonl"
    sub = Subscriber(broker.port)
    proc = subprocess.Popen(camera(colour_model, video, "--realtime", "--jsonl", jsonl, "--mqtt",
                                   f"mqtt://127.0.0.1:{broker.port}/{PREFIX}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sub.wait_for(lambda: len(sub.on(f"{PREFIX}/event")) >= 2, timeout=30)
        t_down = time.time()
        broker.stop()
        time.sleep(2.5)
        t_up = time.time()
        broker.start()
        assert sub.wait_for(lambda: any(t > t_up for t, _, _ in sub.on(f"{PREFIX}/event")), timeout=20)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "MQTT disconnected" in err and err.count("MQTT connected") >= 2
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    # The loop kept its pace while the broker was away: no gap in its per-frame log.
    times = [json.loads(line)["time"] for line in jsonl.read_text().splitlines()]
    assert len(times) == 270
    outage = [t for t in times if t_down <= t <= t_up]
    assert len(outage) >= 2.0 * 30 * 0.8
    assert max(b - a for a, b in zip(times, times[1:])) < 0.5
    # Events published during the outage (QoS 1, queued by paho) reach the broker after the
    # reconnect, in order: the broker's log counts them (the subscriber may reconnect later
    # than the camera and miss them, as any non-persistent subscriber would).
    received = [line for line in broker.log.read_text().splitlines()
                if "Received PUBLISH from edgecls-" in line and f"'{PREFIX}/event'" in line]
    assert len(received) == 9  # one per colour change: 9 segments, nothing lost, no per-frame flood
    events = [json.loads(p) for _, p, _ in sub.on(f"{PREFIX}/event")]
    frames = [e["frame"] for e in events]
    assert frames == sorted(frames) and frames[0] == 0 and set(frames) <= {30 * i for i in range(9)}
    assert [e["label"] for e in events] == ["red" if f % 60 == 0 else "blue" for f in frames]


@pytest.mark.parametrize("password_ok", [True, False])
def test_credentials(colour_model, tmp_path, password_ok):
    """A broker with a password file: the right password (here from EDGECLS_MQTT_PASSWORD) gets the
    events through; a wrong one is logged, and the camera still runs to the end (exit 0)."""
    b = Broker(tmp_path)
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "edge", "right-pw"], check=True, capture_output=True)
    pw.chmod(0o600)
    # Started as root, mosquitto drops to user 'mosquitto', who cannot read pytest's 0700 tmp dir.
    user = "user root\n" if os.geteuid() == 0 else ""
    b.conf.write_text(b.conf.read_text().replace("allow_anonymous true",
                                                 f"{user}allow_anonymous false\npassword_file {pw}"))
    b.start()
    try:
        video = write_colour_video(tmp_path / "v.mp4", [("red", 10), ("blue", 10)])
        env = dict(os.environ, EDGECLS_MQTT_PASSWORD="right-pw" if password_ok else "wrong")
        listener = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-auth-sub")
        listener.username_pw_set("edge", "right-pw")
        got: list[str] = []
        listener.on_message = lambda c, u, m: got.append(m.payload.decode())
        listener.connect("127.0.0.1", b.port)
        listener.subscribe(f"{PREFIX}/event", qos=1)
        listener.loop_start()
        time.sleep(0.3)
        res = subprocess.run(camera(colour_model, video, "--realtime", "--mqtt", f"mqtt://edge@127.0.0.1:{b.port}/{PREFIX}"),
                             capture_output=True, text=True, timeout=60, env=env)
        time.sleep(0.5)
        listener.loop_stop()
        listener.disconnect()
        assert res.returncode == 0, res.stderr
        if password_ok:
            assert [json.loads(p)["label"] for p in got] == ["red", "blue"]
        else:
            assert got == [] and "refused the connection" in res.stderr and "20 frames" in res.stdout
    finally:
        b.stop()


@pytest.mark.parametrize("url, says", [
    ("mqtt//broken::", "empty level"),
    ("mqtt://ho st/feeder", "no usable broker host"),
    ("mqtt://:1883/feeder", "no usable broker host"),
    ("mqtt://127.0.0.1:18x3/feeder", "port is not a number"),
    ("mqtt://127.0.0.1/feeder/#", "wildcards"),
    ("http://127.0.0.1/feeder", "must look like"),
])
def test_a_malformed_broker_url_is_refused_before_the_loop_starts(colour_model, tmp_path, url, says):
    video = write_colour_video(tmp_path / "v.mp4", [("red", 5)])
    r = subprocess.run(camera(colour_model, video, "--mqtt", url), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0] and "Traceback" not in r.stderr, r.stderr
    assert "frames from" not in r.stdout  # refused up front, not after running without a broker


def test_a_broker_that_is_never_reached_is_said_in_the_log_in_status_and_at_the_end(colour_model, tmp_path):
    """A closed port: the loop runs (a broker down at boot must not stop the camera), the log says it is not
    connected and retrying, /status shows the output as not connected, and the run ends saying no event left."""
    import urllib.request

    port, web = free_port(), free_port()
    video = write_colour_video(tmp_path / "v.mp4", [("red", 30), ("blue", 30), ("red", 30)])
    proc = subprocess.Popen(camera(colour_model, video, "--realtime", "--serve", f"127.0.0.1:{web}", "--mqtt",
                                   f"mqtt://127.0.0.1:{port}/{PREFIX}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/status", timeout=2) as resp:
                    status = json.loads(resp.read())
                if status["frames"] > 10:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert status is not None and status["outputs"]["mqtt"]["connected"] is False
    assert status["outputs"]["mqtt"]["broker"] == f"127.0.0.1:{port}"
    assert err.count(f"MQTT broker 127.0.0.1:{port} not reachable; not connected, retrying") == 1, err
    assert f"MQTT: never connected to 127.0.0.1:{port}; no event was delivered" in err
