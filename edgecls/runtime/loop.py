"""The camera loop: capture -> preprocess -> invoke -> postprocess -> smooth -> overlay -> outputs.

``run(cfg)`` does the work and returns :class:`LoopStats`; ``edgecls camera`` only builds the
config. Capture and preprocessing run on a grabber thread (``cfg.pipeline``) so the model
is never kept waiting for the camera or the video decoder. Every output besides the window and
the video (JSONL, web view, MQTT, uncertain-frame capture) is a sink (``runtime/sinks.py``)
that gets each frame's result; the watchdog lives in ``runtime/watchdog.py``.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgecls.core.config import CameraConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json, ensure_writable
from edgecls.runtime.classifier import Classifier, read_labels_file
from edgecls.runtime.jsonlog import BYTES_PER_MB, LOG_MODES, JsonlSink, RotatingJsonl
from edgecls.runtime.latency import StampedSource, percentiles
from edgecls.runtime.scores import ScoreSmoother, top_k
from edgecls.runtime.sinks import FrameResult, close_all
from edgecls.runtime.sources import FrameSource, cv2_has, open_source
from edgecls.runtime.watchdog import Readers

log = logging.getLogger("edgecls.camera")

STAGES = ("capture", "preprocess", "invoke", "postprocess", "draw", "output")
FPS_SMOOTHING = 0.9  # on-screen FPS is an exponential average, so the number is readable
WINDOW_NAME = "edgecls"
AGE_WINDOW_FRAMES = 10_000  # frame ages kept for percentiles: bounded for weeks-long runs


@dataclass
class LoopStats:
    """What one run of the loop did; written as --stats-json."""

    frames: int = 0
    loop_fps: float = 0.0
    invoke_fps: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    """Mean milliseconds per frame of each stage (capture/preprocess run on the grabber thread when pipelined)."""
    dropped_frames: int = 0
    source: str = ""
    model: str = ""
    threads: int = 0
    runtime: str = ""
    runtime_version: Optional[str] = None
    xnnpack: bool = True
    pipeline: bool = True
    headless: bool = True
    elapsed_s: float = 0.0
    reopens: int = 0
    stalls: int = 0
    """Times the watchdog found no frame for --stall-timeout seconds."""
    frame_age_ms: dict[str, float] = field(default_factory=dict)
    """Capture-to-result latency percentiles (p50/p90/p99/max) over the last frames."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """What the web view, MQTT and uncertain-frame capture did."""
    interrupted: bool = False
    stop_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stage_ms"] = {k: round(v, 4) for k, v in self.stage_ms.items()}
        return d


def display_status() -> tuple[bool, str]:
    """Whether a window can be shown here, and why not."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no $DISPLAY or $WAYLAND_DISPLAY"
    if not cv2_has("GUI"):
        return False, "this OpenCV build has no GUI (opencv-python-headless)"
    return True, "display available"


def _validate(cfg: CameraConfig) -> None:
    if cfg.threads < 1:
        raise EdgeclsError(f"--threads must be >= 1, got {cfg.threads}")
    if cfg.top_k < 1:
        raise EdgeclsError(f"--top-k must be >= 1, got {cfg.top_k}")
    if not 0.0 <= cfg.threshold <= 1.0:
        raise EdgeclsError(f"--threshold must be between 0 and 1, got {cfg.threshold}")
    if not 0.0 <= cfg.smoothing < 1.0:
        raise EdgeclsError(f"--smoothing must be in [0, 1) (0 = off, 0.9 = heavy), got {cfg.smoothing}")
    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise EdgeclsError(f"--max-frames must be >= 1, got {cfg.max_frames}")
    if cfg.width < 1 or cfg.height < 1:
        raise EdgeclsError(f"--width/--height must be positive, got {cfg.width}x{cfg.height}")
    if cfg.log_on not in LOG_MODES:
        raise EdgeclsError(f"--log-on must be one of {', '.join(LOG_MODES)}, got {cfg.log_on!r}")
    if cfg.log_interval_s < 0 or cfg.jsonl_max_mb < 0 or cfg.jsonl_keep < 0:
        raise EdgeclsError("--log-interval, --jsonl-max-mb and --jsonl-keep must not be negative")
    if cfg.stall_timeout_s < 0 or cfg.stall_retries < 0:
        raise EdgeclsError("--stall-timeout and --stall-retries must not be negative")
    if cfg.serve:  # checked before the model and camera are opened: fail fast
        from edgecls.runtime.web import check_exposure, parse_serve

        check_exposure(*parse_serve(cfg.serve), cfg.serve_token)
    if cfg.mqtt:
        from edgecls.runtime.mqtt import parse_mqtt_url

        parse_mqtt_url(cfg.mqtt)
    outs = [p for p in (cfg.save, cfg.jsonl, cfg.stats_json) if p]
    if len({str(Path(p).resolve()) for p in outs}) != len(outs):
        raise EdgeclsError("--save, --jsonl and --stats-json must be different files")
    for flag, p in (("--save", cfg.save), ("--jsonl", cfg.jsonl), ("--stats-json", cfg.stats_json)):
        rotated = flag == "--jsonl" and cfg.jsonl_max_mb > 0  # kept as .1, never lost
        if p and Path(p).exists() and not cfg.force and not rotated:
            raise EdgeclsError(f"{p} already exists; choose another {flag} path or pass --force to overwrite it")
        if p and Path(p).is_dir():
            raise EdgeclsError(f"{flag} {p} is a folder; give a file path")
        if p:
            ensure_writable(p, flag)  # a read-only folder fails now, not after the whole run


class _Outputs:
    """The annotated video, written to a .partial file and renamed when complete."""

    def __init__(self, cfg: CameraConfig, fps: float) -> None:
        self.cfg, self.fps = cfg, fps
        self.writer = None
        self.video_tmp: Optional[Path] = None

    def write_video(self, bgr: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            out = Path(self.cfg.save)  # type: ignore[arg-type]
            out.parent.mkdir(parents=True, exist_ok=True)
            self.video_tmp = out.with_name(f".{out.stem}.partial{out.suffix or '.mp4'}")
            h, w = bgr.shape[:2]
            self.writer = cv2.VideoWriter(str(self.video_tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                self.writer = None
                raise EdgeclsError(f"could not write video {out} (this OpenCV build cannot encode mp4v)")
        self.writer.write(bgr)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.video_tmp, self.cfg.save)  # type: ignore[arg-type]


def _build_sinks(cfg: CameraConfig, labels: list[str], status: Callable[[], dict[str, Any]], live: bool) -> list[Any]:
    """The loop's outputs besides the video: each a module of its own behind the Sink interface."""
    sinks: list[Any] = []
    try:
        if cfg.jsonl:
            log_file = RotatingJsonl(cfg.jsonl, max_bytes=int(cfg.jsonl_max_mb * BYTES_PER_MB), keep=cfg.jsonl_keep,
                                     force=cfg.force)
            sinks.append(JsonlSink(log_file, mode=cfg.log_on, interval_s=cfg.log_interval_s))
        if cfg.save_uncertain:
            from edgecls.runtime.capture import UncertainSaver

            sinks.append(UncertainSaver(cfg.save_uncertain, below=cfg.below, max_per_hour=cfg.max_per_hour,
                                        lossless=not live))
        if cfg.serve:
            from edgecls.runtime.web import WebView, parse_serve

            host, port = parse_serve(cfg.serve)
            sinks.append(WebView(host, port, status=status, token=cfg.serve_token, fps=cfg.serve_fps))
        if cfg.mqtt:
            from edgecls.runtime.mqtt import MqttPublisher

            sinks.append(MqttPublisher(cfg.mqtt, status=status, home_assistant=cfg.mqtt_home_assistant,
                                       stats_interval_s=cfg.mqtt_stats_interval_s))
    except BaseException:
        close_all(sinks)
        raise
    return sinks


def _sink_report(sinks: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in sinks:
        out.update(s.report())
    return out


class _SigtermAsInterrupt:
    """systemd stops a service with SIGTERM: treat it like Ctrl-C so outputs are flushed and closed."""

    def __enter__(self) -> None:
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def run(cfg: CameraConfig, *, on_frame: Optional[Callable[[int, list], None]] = None,
        source: Optional[FrameSource] = None) -> LoopStats:
    """Run the loop until the source ends, ``max_frames``, Ctrl-C/SIGTERM or ``q`` in the window.

    ``source`` replaces ``cfg.source`` with an already open :class:`FrameSource` (for embedding).
    """
    import cv2

    _validate(cfg)
    if cfg.labels and not Path(cfg.labels).is_file():
        raise EdgeclsError(f"labels file not found: {cfg.labels}")
    labels = read_labels_file(cfg.labels) if cfg.labels else None
    from edgecls.runtime.imx500 import check_model_for_source, is_imx500_source, open_imx500

    check_model_for_source(cfg.model, cfg.source)
    if is_imx500_source(cfg.source):  # the network runs on the AI Camera's sensor; frames carry its scores
        clf, source = open_imx500(cfg.model, labels, width=cfg.width, height=cfg.height, source=source)
    else:
        clf = Classifier(cfg.model, labels=labels, num_threads=cfg.threads, xnnpack=cfg.xnnpack)
    show, why = display_status()
    if cfg.headless is False and not show:
        raise EdgeclsError(f"cannot show a window: {why}; run with --headless (and --save/--jsonl)")
    headless = True if cfg.headless else not show

    src = StampedSource(source if source is not None else open_source(cfg.source, width=cfg.width, height=cfg.height))
    cv2_threads = cv2.getNumThreads()
    if cfg.pipeline:
        # The grabber thread already runs beside the interpreter's threads; OpenCV's own
        # worker pool (resize, colour conversion) would only fight them for the same cores.
        cv2.setNumThreads(1)
    pace = src.fps if (cfg.realtime and not src.is_live) else None
    readers = Readers(cfg, clf, src, pace)
    reader = readers.make()

    stats = LoopStats(
        source=src.name, model=str(cfg.model), threads=cfg.threads, runtime=clf.runtime,
        runtime_version=clf.runtime_version, xnnpack=cfg.xnnpack, pipeline=cfg.pipeline, headless=headless,
    )
    sums = dict.fromkeys(STAGES, 0.0)
    ages: collections.deque[float] = collections.deque(maxlen=AGE_WINDOW_FRAMES)
    smoother = ScoreSmoother(cfg.smoothing)
    draw = bool(cfg.save) or not headless
    outputs: Optional[_Outputs] = None
    sinks: list[Any] = []
    shown_fps = 0.0
    mean_dt = 0.0
    t_start = time.perf_counter()
    t_prev = t_start

    def live_status() -> dict[str, Any]:
        """What the web view's /status and MQTT's stats show (read from other threads)."""
        n = max(stats.frames, 1)
        return {"frames": stats.frames, "fps": round(shown_fps, 2), "source": stats.source, "model": stats.model,
                "runtime": stats.runtime, "threads": stats.threads, "labels": list(clf.labels),
                "uptime_s": round(time.perf_counter() - t_start, 1), "stalls": readers.stalls,
                "stage_ms": {k: round(v / n, 3) for k, v in sums.items()}, "frame_age_ms": percentiles(ages)}

    try:
        outputs = _Outputs(cfg, src.fps)
        sinks = _build_sinks(cfg, list(clf.labels), live_status, src.is_live)
        with _SigtermAsInterrupt():
            reader.start()
            while True:
                frame = reader.get(timeout=readers.timeout_s)
                if frame is None:
                    if readers.timeout_s is not None:
                        stats.stop_reason = "source stalled"
                        reader = readers.recover(reader)
                        stats.stop_reason = ""
                        continue
                    stats.stop_reason = "end of source"
                    break
                tensor = frame.tensor
                pre_ms = frame.preprocess_ms
                if tensor is None:
                    t0 = time.perf_counter()
                    tensor = clf.preprocess(frame.rgb)
                    pre_ms = (time.perf_counter() - t0) * 1e3
                t0 = time.perf_counter()
                raw = clf.invoke(tensor)
                t1 = time.perf_counter()
                probs = smoother(clf.postprocess(raw))
                cats = top_k(probs, cfg.top_k, cfg.threshold, clf.labels)
                t2 = time.perf_counter()
                captured = src.captured_at(frame.rgb)
                age_ms = (t2 - captured) * 1e3 if captured is not None else float("nan")
                if captured is not None:
                    ages.append(age_ms)
                invoke_ms = (t1 - t0) * 1e3
                now = time.perf_counter()
                # Average the interval, not the rate: a burst after a hiccup (1 ms apart) would
                # otherwise show hundreds of FPS on a 15 FPS stream.
                dt = max(now - t_prev, 1e-9)
                mean_dt = dt if stats.frames == 0 else FPS_SMOOTHING * mean_dt + (1 - FPS_SMOOTHING) * dt
                shown_fps = 1.0 / mean_dt
                t_prev = now
                quit_key = False
                if draw:
                    from edgecls.runtime.overlay import draw_overlay

                    bgr = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
                    draw_overlay(bgr, cats, fps=shown_fps, inference_ms=invoke_ms)
                    if cfg.save:
                        outputs.write_video(bgr)
                    if not headless:
                        cv2.imshow(WINDOW_NAME, bgr)
                        quit_key = (cv2.waitKey(1) & 0xFF) in (ord("q"), 27)
                t3 = time.perf_counter()
                result = FrameResult(
                    frame=stats.frames, source_frame=frame.index, rgb=frame.rgb, categories=cats, probs=probs,
                    labels=clf.labels, fps=shown_fps, frame_age_ms=age_ms,
                    stage_ms={"capture": frame.capture_ms, "preprocess": pre_ms, "invoke": invoke_ms,
                              "postprocess": (t2 - t1) * 1e3},
                )
                for sink in sinks:
                    sink.handle(result)
                t4 = time.perf_counter()
                for name, ms in (
                    ("capture", frame.capture_ms), ("preprocess", pre_ms), ("invoke", invoke_ms),
                    ("postprocess", (t2 - t1) * 1e3), ("draw", (t3 - t2) * 1e3), ("output", (t4 - t3) * 1e3),
                ):
                    sums[name] += ms
                stats.frames += 1
                if on_frame is not None:
                    on_frame(stats.frames, cats)
                if quit_key:
                    stats.stop_reason = "q pressed"
                    break
                if cfg.max_frames is not None and stats.frames >= cfg.max_frames:
                    stats.stop_reason = "max frames"
                    break
    except KeyboardInterrupt:
        stats.interrupted = True
        stats.stop_reason = "interrupted"
    finally:
        t_end = time.perf_counter()
        readers.shutdown()  # stops the reader thread before the source is closed
        cv2.setNumThreads(cv2_threads)
        for err in close_all(sinks):
            log.warning("closing an output failed: %s", err)
        if outputs is not None:
            outputs.close()
        if not headless:
            cv2.destroyAllWindows()
        stats.elapsed_s = t_end - t_start
        n = max(stats.frames, 1)
        stats.stage_ms = {k: v / n for k, v in sums.items()}
        stats.loop_fps = stats.frames / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
        stats.invoke_fps = 1e3 / stats.stage_ms["invoke"] if stats.stage_ms["invoke"] > 0 else 0.0
        stats.dropped_frames = readers.dropped
        stats.reopens = readers.reopens
        stats.stalls = readers.stalls
        stats.frame_age_ms = percentiles(ages)
        stats.outputs = _sink_report(sinks)
        stats.outputs.update(clf.report() if hasattr(clf, "report") else {})  # the IMX500's own timing
        if cfg.stats_json:
            atomic_write_json(cfg.stats_json, stats.as_dict())
    return stats
