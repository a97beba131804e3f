"""Options of the device-side stages: the camera loop, collect, bench, verify and deploy, one dataclass per stage.

Declared like the host stages' (:mod:`edgecls.core.config`): each field carries its default, bounds, help
and CLI spelling (:func:`edgecls.core.options.opt`); the CLI, the Python API and saved reports share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from edgecls.core.config import DEFAULT_SEED, EXPORT_MODES, MAX_IMAGES, MAX_SEED, MAX_THREADS, Options
from edgecls.core.options import opt

LOG_MODES = ("frame", "change")


@dataclass
class CameraConfig(Options):
    """How to run the live classifier loop on a device."""

    model: str = opt("", short="-m")
    """The .tflite model."""
    source: str = opt("0", short="-s")
    """Camera index, /dev/videoN, video file, image folder, 'picamera', or a GStreamer pipeline."""
    labels: Optional[str] = opt(None, metavar="FILE")
    """labels.txt (default: beside the model, else the model's metadata)."""
    threads: int = opt(4, low=1, high=MAX_THREADS)
    """Interpreter threads."""
    xnnpack: bool = True
    """Use the XNNPACK delegate (off only to compare)."""
    top_k: int = opt(3, low=1, high=1000)
    """Labels shown and logged per frame."""
    threshold: float = opt(0.0, low=0.0, high=1.0)
    """Scores under this are not listed in the top-k."""
    unknown_threshold: Optional[float] = opt(None, low=0.0, high=1.0, metavar="P")
    """A frame whose top-1 score is under this answers --unknown-label (default: the model's own threshold,
    chosen by training; 0: no threshold). A model trained with negatives also answers it when its top-1 is
    its 'unknown' class."""
    unknown_label: str = "unknown"
    """The answer when the unknown rule rejects a frame (JSONL, /status, MQTT, the overlay)."""
    smoothing: float = opt(0.0, low=0.0, high=1.0, high_open=True)
    """Exponential smoothing of scores over frames (0 = off, 0.9 = heavy)."""
    width: int = opt(640, low=16, high=8192, unit="pixels")
    """Requested capture width (cameras only)."""
    height: int = opt(480, low=16, high=8192, unit="pixels")
    """Requested capture height (cameras only)."""
    headless: Optional[bool] = opt(None, flag="--headless/--window")
    """No window (default: automatic, headless when there is no display)."""
    save: Optional[str] = opt(None, metavar="FILE", path="file")
    """Write the annotated video here (.mp4)."""
    jsonl: Optional[str] = opt(None, metavar="FILE", path="file")
    """Write one JSON row per frame here."""
    stats_json: Optional[str] = opt(None, metavar="FILE", path="file")
    """Write loop statistics (fps, stage times) here at the end."""
    max_frames: Optional[int] = opt(None, low=1, high=10**12)
    """Stop after this many frames."""
    realtime: bool = False
    """Pace files and folders at their frame rate instead of as fast as possible."""
    pipeline: bool = True
    """Capture and preprocess on a background thread while the model runs (off: all on one thread)."""
    force: bool = False
    """Overwrite existing --save/--jsonl/--stats-json files."""
    serve: Optional[str] = opt(None, metavar="[HOST:]PORT")
    """Serve a live web view (MJPEG stream, top-k, FPS, timings, /status JSON) on [HOST:]PORT; HOST defaults to 127.0.0.1."""
    serve_token: Optional[str] = None
    """Token the web view requires (?token= or 'Authorization: Bearer'); needed for a non-loopback HOST."""
    serve_fps: float = opt(10.0, low=0.1, high=60.0)
    """Highest frame rate encoded for web viewers (JPEG from the latest frame, never queued)."""
    mqtt: Optional[str] = opt(None, metavar="URL")
    """Publish events to mqtt://[USER[:PASSWORD]@]HOST[:PORT][/TOPIC/PREFIX] (password also from EDGECLS_MQTT_PASSWORD)."""
    mqtt_home_assistant: bool = False
    """Also publish Home Assistant MQTT discovery (retained) for a label and a score sensor."""
    mqtt_stats_interval: float = opt(60.0, low=1.0, high=86_400.0, unit="seconds")
    """Seconds between retained stats messages (FPS, latency) on <prefix>/stats."""
    save_uncertain: Optional[str] = opt(None, metavar="DIR", path="dir")
    """Save full frames whose top-1 score is below --below into DIR/<predicted label>/ (with a .scores/ sidecar)."""
    below: float = opt(0.5, low=0.0, high=1.0, low_open=True)
    """Top-1 score under which a frame counts as uncertain (for --save-uncertain)."""
    max_per_hour: int = opt(60, low=1, high=1_000_000)
    """At most this many uncertain frames saved in any hour."""
    log_on: str = opt("frame", choices=LOG_MODES)
    """JSONL rows: 'frame' (every frame) or 'change' (when the top-1 changes, plus a heartbeat every --log-interval)."""
    log_interval: float = opt(0.0, low=0.0, high=86_400.0, unit="seconds")
    """Seconds: with --log-on frame at most one row per interval, with change a heartbeat row at least this often (0 = off)."""
    jsonl_max_mb: float = opt(0.0, low=0.0, high=1_000_000.0, unit="MB")
    """Rotate the JSONL when it passes this size in MB (0 = never); an existing file is rotated, not refused."""
    jsonl_keep: int = opt(5, low=0, high=1000)
    """Rotated JSONL files kept (log.jsonl.1 ... .N)."""
    stall_timeout: float = opt(10.0, low=0.0, high=3600.0, unit="seconds")
    """Watchdog: seconds without a frame from a live source before it is reopened (0 = off)."""
    stall_retries: int = opt(3, low=0, high=100)
    """Watchdog: reopen attempts before exiting non-zero (so systemd restarts the service)."""

    RENAMED = {"mqtt_stats_interval_s": "mqtt_stats_interval", "log_interval_s": "log_interval",
               "stall_timeout_s": "stall_timeout"}


@dataclass
class CollectConfig(Options):
    """How to record training images of one class from the camera."""

    out: str = opt("", flag="")
    """Data folder; images go to OUT/<label>/ (the layout edgecls train reads)."""
    label: str = opt("", short="-l")
    """Class name (the sub-folder)."""
    negatives: bool = False
    """Record photos that are none of the classes into OUT itself (what 'edgecls train --negatives OUT' reads)."""
    source: str = opt("0", short="-s")
    """Camera index, /dev/videoN, video file, image folder, 'picamera', or a GStreamer pipeline."""
    count: int = opt(50, low=1, high=MAX_IMAGES, short="-n")
    """Images to record."""
    interval: float = opt(0.5, low=0.0, high=3600.0, unit="seconds")
    """Seconds between images (vary the pose/light meanwhile)."""
    width: int = opt(640, low=16, high=8192, unit="pixels")
    """Requested capture width (cameras only)."""
    height: int = opt(480, low=16, high=8192, unit="pixels")
    """Requested capture height (cameras only)."""
    quality: int = opt(95, low=1, high=100)
    """JPEG quality of the saved images."""

    RENAMED = {"interval_s": "interval"}


@dataclass
class BenchConfig(Options):
    """How to measure a model's latency on this machine."""

    models: Tuple[str, ...] = opt((), flag="")
    """One or more .tflite files; with two, their latency ratio is reported."""
    threads: Tuple[int, ...] = opt((1,), low=1, high=MAX_THREADS, metavar="N[,N...]")
    """Thread counts to measure, comma-separated (e.g. 1,2,4)."""
    runs: int = opt(100, low=1, high=MAX_IMAGES)
    """Timed invokes per model and thread count."""
    warmup: int = opt(10, low=0, high=MAX_IMAGES)
    """Untimed invokes first (XNNPACK packs weights on the first ones)."""
    images: Optional[str] = opt(None, metavar="DIR", path="dir")
    """Folder of real images to feed; seeded random input otherwise."""
    json: Optional[str] = opt(None, metavar="FILE", path="file")
    """Where to write the JSON results."""
    compare_delegates: bool = False
    """Also measure with XNNPACK off."""
    seed: int = opt(DEFAULT_SEED, low=0, high=MAX_SEED)
    """Seed of the random input."""
    force: bool = False
    """Overwrite an existing --json file."""


@dataclass
class VerifyConfig(Options):
    """How to check that this device's runtime reproduces the host's outputs on a model's golden set."""

    model: str = opt("", flag="")
    """The .tflite model."""
    golden: Optional[str] = opt(None, metavar="FILE", path="file")
    """Golden set (default: MODEL's .golden.npz beside it, written by 'edgecls export')."""
    threads: int = opt(1, low=1, high=MAX_THREADS)
    """Interpreter threads."""
    labels: Optional[str] = opt(None, metavar="FILE", path="file")
    """labels.txt to use (default: beside the model, which must agree with the model's embedded labels)."""
    json: Optional[str] = opt(None, metavar="FILE", path="file")
    """Also write the report here."""


@dataclass(frozen=True)
class SshConfig(Options):
    """How to reach a device over SSH (the system OpenSSH client; the user's config, agent and
    known_hosts apply unless overridden here)."""

    ssh_config: Optional[str] = opt(None, short="-F", metavar="FILE", path="file")
    """An ssh_config file to use instead of ~/.ssh/config (ssh -F)."""
    identity: Optional[str] = opt(None, short="-i", metavar="FILE", path="file")
    """A private key file (ssh -i); by default the agent and ~/.ssh keys are tried."""
    port: Optional[int] = opt(None, low=1, high=65535, short="-p")
    """SSH port on the device (default: from the ssh config, else 22)."""
    ssh_options: Tuple[str, ...] = opt((), flag="--ssh-option", short="-o", metavar="KEY=VALUE")
    """Extra ssh -o options, e.g. UserKnownHostsFile=/path (repeatable)."""
    connect_timeout: int = opt(10, low=1, high=600, unit="seconds")
    """Seconds to wait for the device to answer before giving up."""


@dataclass(frozen=True)
class DeployConfig(Options):
    """Copy a model bundle to a device, check it there, benchmark it, bring the results back."""

    source: str = opt("", flag="")
    """A .tflite model, or a run folder (its export/model_<mode>.tflite)."""
    target: str = opt("", flag="")
    """USER@HOST[:DIR] (DIR default: edgecls/model in the user's home)."""
    mode: str = opt("int8", choices=EXPORT_MODES[:4])
    """Which export of a run folder to deploy (model_<mode>.tflite)."""
    imx500: bool = False
    """Deploy the AI Camera export instead: copy model_imx500.packerOut.zip, run imx500-package on the Pi, place
    network.rpk (no verify or bench: the network runs on the sensor)."""
    install: bool = False
    """Create or upgrade the device's venv with edgecls[device] (from a wheel of this host's edgecls)."""
    wheel: Optional[str] = opt(None, metavar="FILE", path="existing-file")
    """An edgecls wheel to install instead of building one from this host's source."""
    venv: Optional[str] = opt(None, metavar="DIR")
    """The venv on the device (default: /opt/edgecls/venv if present, else ~/edgecls-venv)."""
    python: str = "python3"
    """The device's Python, used to create the venv."""
    service: bool = False
    """Deploy to the model the systemd unit reads (EDGECLS_MODEL in /etc/edgecls/camera.env) and restart it."""
    unit: str = "edgecls-camera"
    """The systemd unit --service restarts."""
    service_env: str = "/etc/edgecls/camera.env"
    """The unit's settings file on the device (where EDGECLS_MODEL is read)."""
    verify: bool = True
    """Run 'edgecls verify' on the device before the new model goes live (--no-verify: no golden set needed)."""
    threads: Tuple[int, ...] = opt((1,), low=1, high=MAX_THREADS, metavar="N[,N...]")
    """Thread counts to benchmark, on the device and on this host, comma-separated."""
    runs: int = opt(50, low=1, high=MAX_IMAGES)
    """Timed invokes per thread count."""
    warmup: int = opt(5, low=0, high=MAX_IMAGES)
    """Untimed invokes first."""
    ssh: SshConfig = opt(factory=SshConfig, flag="")
    """How to reach the device."""
