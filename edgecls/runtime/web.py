"""Live web view: the annotated stream (MJPEG), top-k, FPS and stage timings, and /status JSON.

Standard library only (``http.server``), so it costs a Pi nothing to install. The loop hands
each result over by reference (:meth:`WebView.handle` stores it and returns); an encoder thread
draws the overlay and encodes JPEG from the *latest* result at most ``fps`` times a second and
only while someone watches, so a slow browser or network can never slow inference: there is
no queue, a viewer simply gets the newest picture when it is ready for one.

Endpoints: ``/`` (page), ``/stream.mjpg``, ``/frame.jpg``, ``/status`` (JSON). With a token,
every request needs ``?token=...`` or ``Authorization: Bearer ...``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from edgecls.core.errors import EdgeclsError
from edgecls.runtime.report_link import report_beside
from edgecls.runtime.sinks import FrameResult

log = logging.getLogger("edgecls.camera")

DEFAULT_HOST = "127.0.0.1"
STREAM_FPS = 10.0  # frames per second encoded for viewers: enough to watch, cheap for a Pi
JPEG_QUALITY = 80
VIEWER_IDLE_S = 2.0  # keep encoding this long after the last /frame.jpg request
BOUNDARY = "edgeclsframe"

StatusFn = Callable[[], dict[str, Any]]


def parse_serve(spec: str) -> tuple[str, int]:
    """'8080' -> ('127.0.0.1', 8080); 'HOST:PORT'; '[::1]:8080'."""
    spec = spec.strip()
    host, _, port_s = spec.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_s)
    except ValueError:
        raise EdgeclsError(f"--serve expects [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080; got {spec!r}") from None
    if not 0 <= port <= 65535:
        raise EdgeclsError(f"--serve port must be 0-65535, got {port}")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, port: int, token: Optional[str]) -> None:
    """Beyond loopback the stream shows the camera to the network: only with a token."""
    if not is_loopback(host) and not token:
        raise EdgeclsError(
            f"--serve {host}:{port} would be reachable from other machines; set --serve-token "
            "(or EDGECLS_CAMERA_SERVE_TOKEN) so only people with the token can watch"
        )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>edgecls live</title>
<style>
 body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee;display:flex;flex-wrap:wrap;gap:16px;padding:16px}
 img{max-width:100%;background:#000;border-radius:6px} #side{min-width:240px;flex:1}
 #label{font-size:2em;font-weight:600;color:#7f7} table{border-collapse:collapse} td{padding:2px 10px 2px 0}
 .bar{background:#7f7;height:8px;border-radius:4px} .dim{color:#999}
</style></head><body>
<div><img id="stream" alt="live stream"></div>
<div id="side">
 <div id="label">…</div>
 <table id="topk"></table>
 <p><span id="fps">–</span> FPS · frame <span id="frames">0</span> · age p50 <span id="age">–</span> ms</p>
 <table id="stages" class="dim"></table>
 <p class="dim" id="meta"></p>
 <p><a id="report" href="report" target="_blank" hidden style="color:#9cf">model report</a></p>
</div>
<script>
const q = new URLSearchParams(location.search); const tok = q.get("token");
const withTok = p => tok ? p + (p.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(tok) : p;
document.getElementById("stream").src = withTok("stream.mjpg");
function row(t, cells){const tr=t.insertRow(); for(const c of cells){const td=tr.insertCell(); if(c instanceof Node) td.appendChild(c); else td.textContent=c;}}
async function tick(){
  try{
    const s = await (await fetch(withTok("status"), {cache:"no-store"})).json();
    const r = s.result || {}; const top = (r.top_k || []);
    document.getElementById("label").textContent = r.label ? r.label : "(nothing above threshold)";
    const t = document.getElementById("topk"); t.innerHTML = "";
    for(const c of top){const b=document.createElement("div"); b.className="bar"; b.style.width=(c.score*160)+"px"; row(t,[c.label, c.score.toFixed(2), b]);}
    document.getElementById("fps").textContent = (r.fps||0).toFixed(1);
    document.getElementById("frames").textContent = s.frames;
    const age = (s.frame_age_ms||{}).p50; document.getElementById("age").textContent = age==null ? "–" : age.toFixed(1);
    const st = document.getElementById("stages"); st.innerHTML = "";
    for(const [k,v] of Object.entries(s.stage_ms||{})) row(st,[k, v.toFixed(2)+" ms"]);
    document.getElementById("meta").textContent = (s.model||"") + " · " + (s.source||"") + " · " + (s.runtime||"");
    const rep = document.getElementById("report"); rep.hidden = !s.report; rep.href = withTok("report");
  }catch(e){document.getElementById("label").textContent="(disconnected)";}
}
setInterval(tick, 500); tick();
</script></body></html>
"""


class WebView:
    """A loop sink serving the annotated stream and the loop's status over HTTP."""

    def __init__(self, host: str, port: int, *, status: StatusFn, token: Optional[str] = None,
                 fps: float = STREAM_FPS) -> None:
        check_exposure(host, port, token)
        if fps <= 0:
            raise EdgeclsError(f"--serve-fps must be > 0, got {fps}")
        self.token, self.fps, self.status_fn = token, fps, status
        self._latest: Optional[FrameResult] = None
        self._new = threading.Event()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._jpeg: Optional[bytes] = None
        self._seq = 0
        self._viewers = 0
        self._last_snapshot = 0.0
        self.encoded = 0
        self.encode_cpu_s = 0.0  # the encoder thread's own CPU time: what the view costs the device
        try:
            self.server = ThreadingHTTPServer((host, port), self._handler_class())
        except OSError as e:
            raise EdgeclsError(f"--serve {host}:{port}: cannot listen there ({e.strerror or e})") from None
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        self._threads = [
            threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="edgecls-web", daemon=True),
            threading.Thread(target=self._encoder, name="edgecls-web-encode", daemon=True),
        ]
        for t in self._threads:
            t.start()
        log.warning("web view on http://%s:%d/%s", host if ":" not in host else f"[{host}]", self.port,
                    "?token=..." if token else "")

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}/"

    # -- loop side: O(1), never blocks ----------------------------------------------------------
    def handle(self, result: FrameResult) -> None:
        self._latest = result
        self._new.set()

    def report(self) -> dict[str, Any]:
        per_frame = self.encode_cpu_s * 1e3 / self.encoded if self.encoded else 0.0
        return {"web": {"url": self.url, "encoded": self.encoded, "encode_cpu_ms_per_frame": round(per_frame, 3)}}

    def status(self) -> dict[str, Any]:
        s = dict(self.status_fn())
        r = self._latest
        s["result"] = r.summary() if r is not None else None
        s["stream"] = {"fps_cap": self.fps, "encoded": self.encoded, "viewers": self._viewers,
                       "encode_cpu_s": round(self.encode_cpu_s, 3)}
        s["report"] = report_beside(s.get("model")) is not None
        return s

    # -- encoder thread -------------------------------------------------------------------------
    def _wanted(self) -> bool:
        return self._viewers > 0 or time.monotonic() - self._last_snapshot < VIEWER_IDLE_S

    def _encoder(self) -> None:
        import cv2

        from edgecls.runtime.overlay import draw_overlay

        period = 1.0 / self.fps
        while not self._stopping.is_set():
            if not self._new.wait(0.2):
                continue
            self._new.clear()  # cleared even when nobody watches: otherwise this loop would spin
            if not self._wanted():
                continue
            t0, cpu0 = time.monotonic(), time.thread_time()
            r = self._latest
            if r is None:
                continue
            bgr = cv2.cvtColor(r.rgb, cv2.COLOR_RGB2BGR)  # a copy: the camera's frame is never drawn on
            draw_overlay(bgr, r.categories, fps=r.fps, inference_ms=r.stage_ms.get("invoke", 0.0))
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if ok:
                with self._cond:
                    self._jpeg, self._seq = buf.tobytes(), self._seq + 1
                    self.encoded += 1
                    self._cond.notify_all()
            self.encode_cpu_s += time.thread_time() - cpu0
            # The cap: sleep out the rest of the period (new results meanwhile just replace _latest).
            self._stopping.wait(max(0.0, period - (time.monotonic() - t0)))

    def _next_jpeg(self, after: int, timeout: float) -> tuple[Optional[bytes], int]:
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self._stopping.is_set(), timeout)
            return self._jpeg, self._seq

    # -- HTTP -----------------------------------------------------------------------------------
    def _authorized(self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> bool:
        if not self.token:
            return True
        given = (query.get("token") or [""])[0]
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer "):]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _handler_class(self) -> type:
        view = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edgecls"

            def log_message(self, fmt: str, *args: Any) -> None:  # the journal is not an access log
                pass

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                if not view._authorized(self, parse_qs(url.query)):
                    self._send(HTTPStatus.UNAUTHORIZED, b"token required\n", "text/plain")
                    return
                try:
                    if url.path in ("/", "/index.html"):
                        self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
                    elif url.path == "/status":
                        self._send(HTTPStatus.OK, json.dumps(view.status()).encode(), "application/json")
                    elif url.path == "/frame.jpg":
                        self._snapshot()
                    elif url.path == "/stream.mjpg":
                        self._stream()
                    elif url.path == "/report":
                        self._report()
                    else:
                        self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the viewer went away

            def _report(self) -> None:
                page = report_beside(view.status_fn().get("model"))
                if page is None:
                    self._send(HTTPStatus.NOT_FOUND, b"no report.html beside the model\n", "text/plain")
                else:
                    self._send(HTTPStatus.OK, page.read_bytes(), "text/html; charset=utf-8")

            def _snapshot(self) -> None:
                view._last_snapshot = time.monotonic()
                view._new.set()
                jpeg, _ = view._next_jpeg(view._seq, timeout=2.0)  # a fresh one, or the last after 2 s
                if jpeg is None:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no frame yet\n", "text/plain")
                else:
                    self._send(HTTPStatus.OK, jpeg, "image/jpeg")

            def _stream(self) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                with view._cond:
                    view._viewers += 1
                view._new.set()
                try:
                    seq = 0
                    while not view._stopping.is_set():
                        jpeg, new_seq = view._next_jpeg(seq, timeout=1.0)
                        if jpeg is None or new_seq == seq:
                            continue
                        seq = new_seq
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode())
                        self.wfile.write(jpeg)
                        self.wfile.write(b"\r\n")
                        self.wfile.flush()
                finally:
                    with view._cond:
                        view._viewers -= 1

        return Handler

    def close(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        for t in self._threads:
            t.join(timeout=5)
