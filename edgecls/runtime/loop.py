"""The camera loop: capture -> preprocess -> invoke -> postprocess -> smooth -> overlay -> outputs.

``run(cfg)`` does the work and returns :class:`LoopStats`; ``edgecls camera`` only builds the
config. Capture and preprocessing run on a grabber thread (``cfg.pipeline``) so the model
is never kept waiting for the camera or the video decoder. Every output (the annotated video and
window, JSONL, web view, MQTT, uncertain-frame capture) is a sink (``runtime/sinks.py``) that gets
each frame's result; the watchdog lives in ``runtime/watchdog.py``.
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


from edgecls.core.device_config import CameraConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.options import validate
from edgecls.core.io import atomic_write_json, ensure_writable
from edgecls.runtime.classifier import Classifier, read_labels_file
from edgecls.runtime.jsonlog import BYTES_PER_MB, JsonlSink, RotatingJsonl
from edgecls.runtime.latency import StampedSource, percentiles
from edgecls.runtime.scores import ScoreSmoother, top_k
from edgecls.runtime.display import WindowSink, video_and_window
from edgecls.runtime.sinks import FrameResult, Sink, close_all
from edgecls.runtime.sources import FrameSource, cv2_has, open_source
from edgecls.core.unknown import UnknownRule
from edgecls.runtime.watchdog import Readers

log = logging.getLogger("edgecls.camera")

STAGES = ("capture", "preprocess", "invoke", "postprocess", "draw", "output")
FPS_SMOOTHING = 0.9  # on-screen FPS is an exponential average, so the number is readable
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
    skipped_files: int = 0
    """Image files of a folder source that could not be decoded (passed over, like data check does)."""
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
    validate(cfg)  # each option's bounds (a config changed after it was made)
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
        # With rotation an existing log is kept as .1, never lost; --jsonl-keep 0 keeps no rotated file.
        rotated = flag == "--jsonl" and cfg.jsonl_max_mb > 0 and cfg.jsonl_keep > 0
        if p and Path(p).exists() and not cfg.force and not rotated:
            raise EdgeclsError(f"{p} already exists; choose another {flag} path or pass --force to overwrite it")
        if p and Path(p).is_dir():
            raise EdgeclsError(f"{flag} {p} is a folder; give a file path")
        if p:
            ensure_writable(p, flag)  # a read-only folder fails now, not after the whole run


def _build_sinks(cfg: CameraConfig, labels: list[str], status: Callable[[], dict[str, Any]], live: bool) -> list[Sink]:
    """The loop's outputs besides the display (:mod:`edgecls.runtime.display`): each a module of its own behind the
    Sink interface."""
    sinks: list[Sink] = []
    try:
        if cfg.jsonl:
            log_file = RotatingJsonl(cfg.jsonl, max_bytes=int(cfg.jsonl_max_mb * BYTES_PER_MB), keep=cfg.jsonl_keep,
                                     force=cfg.force)
            sinks.append(JsonlSink(log_file, mode=cfg.log_on, interval_s=cfg.log_interval))
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
                                       stats_interval_s=cfg.mqtt_stats_interval))
    except BaseException:
        close_all(sinks)
        raise
    return sinks


def _sink_report(sinks: list[Sink]) -> dict[str, Any]:
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
    _validate(cfg)
    if cfg.labels and not Path(cfg.labels).is_file():
        raise EdgeclsError(f"labels file not found: {cfg.labels}")
    labels = read_labels_file(cfg.labels) if cfg.labels else None
    from edgecls.runtime.imx500 import check_model_for_source, is_imx500_source, open_imx500

    check_model_for_source(cfg.model, cfg.source)
    if is_imx500_source(cfg.source):  # the network runs on the AI Camera's sensor; frames carry its scores
        clf, source = open_imx500(cfg.model, labels, width=cfg.width, height=cfg.height, source=source)
    else:
        clf = Classifier(cfg.model, labels=labels, num_threads=cfg.threads, xnnpack=cfg.xnnpack,
                         labels_option="--labels")
    show, why = display_status()
    if cfg.headless is False and not show:
        raise EdgeclsError(f"cannot show a window: {why}; run with --headless (and --save/--jsonl)")
    src = StampedSource(source if source is not None else open_source(cfg.source, width=cfg.width, height=cfg.height))
    stats = _Loop(cfg, clf, src, headless=True if cfg.headless else not show, on_frame=on_frame).run()
    if stats.frames == 0 and stats.skipped_files and not stats.interrupted:
        raise EdgeclsError(f"no usable image in {stats.source}: all {stats.skipped_files} file(s) could not be "
                           f"decoded (e.g. {src.skipped[0]}); check the files or the path")
    return stats


class _Loop:
    """One run of the loop: the reader, the sinks, and the running figures the stats and /status show."""

    def __init__(self, cfg: CameraConfig, clf: Classifier, src: StampedSource, *, headless: bool,
                 on_frame: Optional[Callable[[int, list], None]]) -> None:
        self.cfg, self.clf, self.src, self.on_frame = cfg, clf, src, on_frame
        pace = src.fps if (cfg.realtime and not src.is_live) else None
        self.readers = Readers(cfg, clf, src, pace)
        self.stats = LoopStats(source=src.name, model=str(cfg.model), threads=cfg.threads, runtime=clf.runtime,
                               runtime_version=clf.runtime_version, xnnpack=cfg.xnnpack, pipeline=cfg.pipeline,
                               headless=headless)
        self.sums = dict.fromkeys(STAGES, 0.0)
        self.ages: collections.deque[float] = collections.deque(maxlen=AGE_WINDOW_FRAMES)
        self.smoother = ScoreSmoother(cfg.smoothing)
        threshold = cfg.unknown_threshold if cfg.unknown_threshold is not None else (clf.unknown_threshold or 0.0)
        self.rule = UnknownRule(threshold, cfg.unknown_label, clf.unknown_class)
        self.sinks: list[Sink] = []
        self.window: Optional[WindowSink] = None
        self.shown_fps = 0.0
        self.mean_dt = 0.0
        self.t_start = self.t_prev = time.perf_counter()

    def live_status(self) -> dict[str, Any]:
        """What the web view's /status and MQTT's stats show (read from other threads)."""
        n = max(self.stats.frames, 1)
        return {"frames": self.stats.frames, "fps": round(self.shown_fps, 2), "source": self.stats.source,
                "model": self.stats.model, "runtime": self.stats.runtime, "threads": self.stats.threads,
                "labels": list(self.clf.labels), "uptime_s": round(time.perf_counter() - self.t_start, 1),
                "stalls": self.readers.stalls, "stage_ms": {k: round(v / n, 3) for k, v in self.sums.items()},
                "frame_age_ms": percentiles(self.ages), "outputs": _sink_report(self.sinks)}

    def run(self) -> LoopStats:
        import cv2

        cfg, stats = self.cfg, self.stats
        cv2_threads = cv2.getNumThreads()
        if cfg.pipeline:
            # The grabber thread already runs beside the interpreter's threads; OpenCV's own
            # worker pool (resize, colour conversion) would only fight them for the same cores.
            cv2.setNumThreads(1)
        reader = self.readers.make()
        try:
            display = video_and_window(cfg.save, self.src.fps, window=not stats.headless)
            self.window = next((d for d in display if isinstance(d, WindowSink)), None)
            self.sinks = display + _build_sinks(cfg, list(self.clf.labels), self.live_status, self.src.is_live)
            with _SigtermAsInterrupt():
                reader.start()
                while self._step():
                    pass
        except KeyboardInterrupt:
            stats.interrupted, stats.stop_reason = True, "interrupted"
        finally:
            self._close(cv2_threads)
        return stats

    def _step(self) -> bool:
        """One frame through the model and to every output; False when the loop should stop."""
        stats = self.stats
        frame = self.readers.current.get(timeout=self.readers.timeout_s)
        if frame is None:
            if self.readers.timeout_s is not None:
                stats.stop_reason = "source stalled"
                self.readers.recover(self.readers.current)
                stats.stop_reason = ""
                return True
            stats.stop_reason = "end of source"
            return False
        result = self._process(frame)
        t3 = time.perf_counter()
        for sink in self.sinks:
            sink.handle(result)
        self._account(result, (time.perf_counter() - t3) * 1e3)
        if self.on_frame is not None:
            self.on_frame(stats.frames, list(result.categories))
        if self.window is not None and self.window.quit_requested:
            stats.stop_reason = "q pressed"
            return False
        if self.cfg.max_frames is not None and stats.frames >= self.cfg.max_frames:
            stats.stop_reason = "max frames"
            return False
        return True

    def _process(self, frame: Any) -> FrameResult:
        """Preprocess (unless the grabber did), invoke, score; the frame's result with its timings."""
        clf, cfg = self.clf, self.cfg
        tensor, pre_ms = frame.tensor, frame.preprocess_ms
        if tensor is None:
            t0 = time.perf_counter()
            tensor = clf.preprocess(frame.rgb)
            pre_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        raw = clf.invoke(tensor)
        t1 = time.perf_counter()
        probs = self.smoother(clf.postprocess(raw))
        cats = top_k(probs, cfg.top_k, cfg.threshold, clf.labels)
        t2 = time.perf_counter()
        captured = self.src.captured_at(frame.rgb)
        age_ms = (t2 - captured) * 1e3 if captured is not None else float("nan")
        if captured is not None:
            self.ages.append(age_ms)
        # Average the interval, not the rate: a burst after a hiccup (1 ms apart) would
        # otherwise show hundreds of FPS on a 15 FPS stream.
        dt = max(t2 - self.t_prev, 1e-9)
        self.mean_dt = dt if self.stats.frames == 0 else FPS_SMOOTHING * self.mean_dt + (1 - FPS_SMOOTHING) * dt
        self.shown_fps, self.t_prev = 1.0 / self.mean_dt, t2
        return FrameResult(frame=self.stats.frames, source_frame=frame.index, rgb=frame.rgb, categories=cats,
                           probs=probs, labels=clf.labels, fps=self.shown_fps, frame_age_ms=age_ms,
                           unknown=self.rule.label if self.rule.rejects(probs) else None,
                           stage_ms={"capture": frame.capture_ms, "preprocess": pre_ms, "invoke": (t1 - t0) * 1e3,
                                     "postprocess": (t2 - t1) * 1e3})

    def _account(self, result: FrameResult, outputs_ms: float) -> None:
        sums = self.sums
        for name, ms in result.stage_ms.items():
            sums[name] += ms
        sums["draw"] += result.draw_ms
        sums["output"] += outputs_ms - result.draw_ms
        self.stats.frames += 1

    def _close(self, cv2_threads: int) -> None:
        import cv2

        stats, t_end = self.stats, time.perf_counter()
        self.readers.shutdown()  # stops the reader thread before the source is closed
        cv2.setNumThreads(cv2_threads)
        for err in close_all(self.sinks):
            log.warning("closing an output failed: %s", err)
        stats.elapsed_s = t_end - self.t_start
        n = max(stats.frames, 1)
        stats.stage_ms = {k: v / n for k, v in self.sums.items()}
        stats.loop_fps = stats.frames / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
        stats.invoke_fps = 1e3 / stats.stage_ms["invoke"] if stats.stage_ms["invoke"] > 0 else 0.0
        stats.dropped_frames, stats.reopens, stats.stalls = self.readers.dropped, self.readers.reopens, self.readers.stalls
        stats.frame_age_ms = percentiles(self.ages)
        stats.skipped_files = len(self.src.skipped)
        stats.outputs = _sink_report(self.sinks)
        stats.outputs.update(self.clf.report() if hasattr(self.clf, "report") else {})  # the IMX500's own timing
        if self.cfg.stats_json:
            atomic_write_json(self.cfg.stats_json, stats.as_dict())
