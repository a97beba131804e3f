"""MQTT events for home automation: a message when the answer changes, not one per frame.

``--mqtt mqtt://[USER[:PASSWORD]@]HOST[:PORT][/TOPIC/PREFIX]`` (``mqtts://`` for TLS). Topics
under the prefix (default ``edgecls/<hostname>``):

* ``<prefix>/event`` — QoS 1, when the smoothed top-1 changes or crosses ``--threshold``
  (``{"type": "change"|"above"|"below", "label", "score", "previous", ...}``);
* ``<prefix>/state`` — retained, the current top-1 (what Home Assistant's sensor shows);
* ``<prefix>/stats`` — retained, FPS and latency every ``stats_interval_s``;
* ``<prefix>/status`` — retained ``online``/``offline`` (the broker sends ``offline`` as our
  last will when the Pi drops off the network).

paho's network thread (``loop_start``) does all socket work and reconnects with backoff
(1 s doubling to 60 s); ``publish`` only appends to paho's queue, so the camera loop never
waits for the broker. While disconnected, QoS 1 messages queue up to ``MAX_QUEUED`` and are
delivered after the reconnect.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import unquote, urlsplit

from edgecls import __version__
from edgecls.core.errors import EdgeclsError
from edgecls.runtime.sinks import FrameResult

log = logging.getLogger("edgecls.camera")

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 60
KEEPALIVE_S = 30
MAX_QUEUED = 200  # messages kept while the broker is away (oldest beyond this are refused)
STATS_INTERVAL_S = 60.0
CLOSE_FLUSH_S = 2.0  # how long close() waits for the last messages to leave
HA_PREFIX = "homeassistant"

StatusFn = Callable[[], dict[str, Any]]


@dataclass
class MqttTarget:
    host: str
    port: int
    prefix: str
    username: Optional[str] = None
    password: Optional[str] = None
    tls: bool = False


def default_prefix() -> str:
    return f"edgecls/{re.sub(r'[^A-Za-z0-9_-]', '_', socket.gethostname()) or 'device'}"


_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
"""A host name, an IPv4 address, or an IPv6 address in brackets."""


def _written_host(netloc: str) -> str:
    """The host as written in a URL's netloc: no user:password@, no :port."""
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def parse_mqtt_url(url: str) -> MqttTarget:
    """mqtt://user:pass@host:1883/prefix -> MqttTarget; EdgeclsError with the expected form otherwise."""
    form = "mqtt://[USER[:PASSWORD]@]HOST[:PORT][/TOPIC/PREFIX]"
    u = urlsplit(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "mqtts"):
        raise EdgeclsError(f"--mqtt must look like {form} (or mqtts://), got {url!r}")
    try:
        port = u.port
    except ValueError:
        raise EdgeclsError(f"--mqtt port is not a number in {url!r}; expected {form}") from None
    if not u.hostname or not _HOST.fullmatch(_written_host(u.netloc)):
        raise EdgeclsError(f"--mqtt has no usable broker host in {url!r}; expected {form}")
    prefix = u.path.strip("/") or default_prefix()
    # urlsplit reads '#' as a fragment: look at the text after the host as written.
    if "+" in prefix or "#" in url.rpartition("@")[2]:
        written = url.rpartition("@")[2].split("/", 3)[-1] if "://" in url else url.partition("/")[2]
        raise EdgeclsError(f"--mqtt topic prefix {written!r} must not contain MQTT wildcards + or #")
    if "//" in u.path or (u.path.endswith("/") and len(u.path) > 1):
        raise EdgeclsError(f"--mqtt topic prefix in {url!r} has an empty level ('//' or a trailing '/'); expected {form}")
    tls = u.scheme == "mqtts"
    return MqttTarget(
        host=u.hostname, port=port or (8883 if tls else 1883), prefix=prefix,
        username=unquote(u.username) if u.username else None,
        password=unquote(u.password) if u.password else os.environ.get("EDGECLS_MQTT_PASSWORD") or None,
        tls=tls,
    )


def _node_id(prefix: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", prefix)


class MqttPublisher:
    """A loop sink publishing change events, a retained state and stats."""

    def __init__(self, url: str, *, status: StatusFn, home_assistant: bool = False,
                 stats_interval_s: float = STATS_INTERVAL_S) -> None:
        try:
            import paho.mqtt.client as paho
        except ImportError:
            raise EdgeclsError('--mqtt needs paho-mqtt: pip install "edgecls[device]"') from None
        self.target = parse_mqtt_url(url)
        self.status_fn, self.home_assistant, self.stats_interval_s = status, home_assistant, stats_interval_s
        p = self.target.prefix
        self.topics = {k: f"{p}/{k}" for k in ("event", "state", "stats", "status")}
        self._last: Optional[str] = None
        self._first = True
        self._state: Optional[dict[str, Any]] = None
        self._next_stats = time.monotonic()
        self.events = 0
        self.connected = threading.Event()
        self.connects = 0
        self._closing = False

        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"edgecls-{_node_id(p)}-{os.getpid()}",
                                  protocol=paho.MQTTv311)
        if self.target.username:
            self.client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            self.client.tls_set()
        self.client.will_set(self.topics["status"], "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.max_queued_messages_set(MAX_QUEUED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.failures = 0
        # connect_async: no network I/O here, so a broker that is down at boot does not stop the camera.
        self.client.connect_async(self.target.host, self.target.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()

    # -- paho's thread ----------------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker %s:%d refused the connection: %s", self.target.host, self.target.port, reason)
            return
        self.connects += 1
        self.failures = 0
        self.connected.set()
        log.warning("MQTT connected to %s:%d (topics %s/...)", self.target.host, self.target.port, self.target.prefix)
        client.publish(self.topics["status"], "online", qos=1, retain=True)
        if self.home_assistant:
            for topic, payload in self.discovery().items():
                client.publish(topic, json.dumps(payload), qos=1, retain=True)
        if self._state is not None:
            client.publish(self.topics["state"], json.dumps(self._state), qos=1, retain=True)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        # A closed port or an unknown host: said once per outage, then paho keeps retrying with backoff.
        self.failures += 1
        if self.failures == 1:
            log.warning("MQTT broker %s:%d not reachable; not connected, retrying with backoff (events queue meanwhile)",
                        self.target.host, self.target.port)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        if self._closing:
            return
        if self.connects == 0:
            # Mosquitto closes the socket right after a "not authorized" CONNACK; paho may see the
            # close first, so a drop before any accepted connection is reported as a refusal.
            log.warning("MQTT broker %s:%d refused the connection before accepting it (%s): check the URL, "
                        "user and password; retrying with backoff", self.target.host, self.target.port, reason)
            return
        log.warning("MQTT disconnected from %s:%d (%s); reconnecting with backoff", self.target.host,
                    self.target.port, reason)

    def discovery(self) -> dict[str, dict[str, Any]]:
        """Home Assistant MQTT discovery: a 'label' and a 'score' sensor on one device."""
        node = _node_id(self.target.prefix)
        device = {"identifiers": [node], "name": f"edgecls {self.target.prefix}", "manufacturer": "edgecls",
                  "sw_version": __version__}
        common = {"state_topic": self.topics["state"], "availability_topic": self.topics["status"],
                  "json_attributes_topic": self.topics["state"], "device": device}
        return {
            f"{HA_PREFIX}/sensor/{node}/label/config": {
                **common, "name": "label", "unique_id": f"{node}_label", "value_template": "{{ value_json.label }}",
                "icon": "mdi:eye"},
            f"{HA_PREFIX}/sensor/{node}/score/config": {
                **common, "name": "score", "unique_id": f"{node}_score", "value_template": "{{ value_json.score }}",
                "state_class": "measurement"},
        }

    # -- loop side: appends to paho's queue only ----------------------------------------------------
    def handle(self, r: FrameResult) -> None:
        top = r.top1
        label = top.label if top else None
        if self._first or label != self._last:
            kind = "change" if (label and self._last) else ("above" if label else "below")
            if self._first:
                kind = "start"
            self._state = {"label": label, "score": round(float(top.score), 4) if top else None,
                           "unknown": r.unknown is not None, "time": round(r.wall_time, 3), "frame": r.frame}
            event = {"type": kind, **self._state, "previous": self._last,
                     "top_k": [c.as_dict() for c in r.categories]}
            self.client.publish(self.topics["event"], json.dumps(event), qos=1)
            self.client.publish(self.topics["state"], json.dumps(self._state), qos=1, retain=True)
            self.events += 1
            self._last, self._first = label, False
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self.stats_interval_s
            self.client.publish(self.topics["stats"], json.dumps(self.status_fn()), qos=0, retain=True)

    def report(self) -> dict[str, Any]:
        return {"mqtt": {"events": self.events, "connects": self.connects, "prefix": self.target.prefix,
                         "connected": self.connected.is_set(), "broker": f"{self.target.host}:{self.target.port}"}}

    def close(self) -> None:
        self._closing = True
        if self.connected.is_set():
            # The run's final figures stay retained beside "offline": what a late subscriber sees last.
            self.client.publish(self.topics["stats"], json.dumps(self.status_fn()), qos=1, retain=True)
            info = self.client.publish(self.topics["status"], "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=CLOSE_FLUSH_S)
            except (RuntimeError, ValueError):
                pass  # not sent (the broker went away meanwhile): the last will says offline anyway
        self.client.disconnect()
        self.client.loop_stop()
