"""Options of each stage, one dataclass per stage.

The click command builds it, the Python API takes it, and ``dataclasses.asdict()`` is saved
in the run folder (``config.json``), so a run can be read and repeated. Pure standard
library: the TF-free runtime imports it too.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

DEFAULT_SEED = 42
CACHE_MODES = ("auto", "memory", "disk", "none")
"""Decoded-image cache modes, shared by the CLI choice, the config check and the pipeline."""
BALANCE_MODES = ("weights", "oversample", "none")
"""Class-imbalance remedies of training (TrainConfig.balance)."""
HEAD_CACHE_MODES = ("features", "none")
"""How the head phase of training meets the frozen backbone (TrainConfig.head_cache)."""


@dataclass
class TrainConfig:
    """How to turn an image folder into a trained run."""

    data: str = ""
    """Image folder: DATA/<class>/* or DATA/train|val[|test]/<class>/*."""
    out: str = "runs/run"
    """Run folder to create (never overwritten without force)."""
    backbone: str = "mobilenet_v2"
    """Registered backbone name (see ``edgecls.train.backbones.available()``)."""
    alpha: float = 1.0
    """Width multiplier for MobileNet backbones."""
    minimalistic: bool = False
    """MobileNetV3 minimalistic variant (no hard-swish, no SE; quantizes well)."""
    size: int = 224
    """Square input size in pixels; the model takes raw RGB uint8 of this size."""
    weights: str = "imagenet"
    """'imagenet', 'none', or a path to a Keras no-top weights file for the backbone."""
    batch_size: int = 32
    """Global batch size (split over replicas)."""
    epochs: int = 20
    """Epochs of head training on the frozen backbone. Cheap on cached features (measured in docs/train.md)."""
    fine_tune_epochs: int = 4
    """Epochs of fine-tuning with the top of the backbone unfrozen (0 skips it; on features cached at the cut
    with the head cache; 4 by measurement, docs/train.md)."""
    fine_tune_fraction: float = 0.08
    """Share of the backbone's layers (from the top) unfrozen for fine-tuning (0.08: MobileNetV2's last block
    and its final 1x1 conv)."""
    learning_rate: float = 1e-3
    """Adam learning rate for the head phase."""
    fine_tune_learning_rate: float = 1e-4
    """Adam learning rate for the fine-tune phase (10x lower than the head's, to keep pretrained features)."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy loss."""
    dropout: float = 0.2
    """Dropout rate before the classifier layer."""
    augment: bool = True
    """Random flip/rotation/zoom/contrast on training batches (never exported)."""
    early_stopping_patience: int = 5
    """Epochs without val_loss improvement before stopping (best weights restored)."""
    val_fraction: float = 0.15
    """Share of each class held out for validation (class-folder layout only)."""
    test_fraction: float = 0.15
    """Share of each class held out for testing (class-folder layout only)."""
    seed: int = DEFAULT_SEED
    """Seed of the split, shuffling and initialisation."""
    cache: str = "auto"
    """Decoded-image cache: auto (memory if it fits cache_budget_mb, else a file), memory, disk, none."""
    cache_budget_mb: int = 2048
    """Largest decoded set kept in memory when cache is auto."""
    class_weights: str = "auto"
    """auto: balanced weights when classes are imbalanced; none: never."""
    mixed_precision: str = "auto"
    """auto (on with a GPU), on, off."""
    strategy: str = "auto"
    """auto (multi-worker with TF_CONFIG, mirrored with >1 GPU), default, mirrored, multiworker."""
    prune: Optional[float] = None
    """If set, prune to this sparsity after training (same as ``edgecls prune``)."""
    prune_epochs: int = 4
    """Fine-tune epochs while pruning, when prune is set."""
    labels_csv: Optional[str] = None
    """CSV of path,label[,split] rows labelling the images in data (instead of class folders)."""
    balance: str = "weights"
    """Class imbalance: weights (balanced class weights when imbalanced), oversample (every class drawn
    equally often each epoch), none."""
    # -- issue 10: training time ----------------------------------------------------------------
    head_cache: str = "features"
    """Head phase: features (run the frozen backbone once per augmented view and train the head on the cached
    features), none (run the backbone on every batch of every epoch, as edgecls did before)."""
    head_cache_views: int = 3
    """Augmented views per training image in the head-phase feature cache (1 view, unaugmented, with --no-augment)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, d)


@dataclass
class PruneConfig:
    """How to prune a trained run with tensorflow-model-optimization."""

    run: str = ""
    """Run folder made by ``edgecls train``."""
    sparsity: float = 0.5
    """Target share of zero weights in Conv2D/Dense kernels."""
    epochs: int = 4
    """Fine-tune epochs over which sparsity ramps up (PolynomialDecay)."""
    learning_rate: float = 1e-4
    """Adam learning rate while pruning."""
    batch_size: int = 32
    """Batch size while pruning."""
    force: bool = False
    """Overwrite an existing pruned model."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruneConfig":
        return _from_dict(cls, d)


@dataclass
class ExportConfig:
    """How to convert a run's model to a TFLite file."""

    run: str = ""
    """Run folder made by ``edgecls train``."""
    mode: str = "int8"
    """int8 (full integer), float16, dynamic (int8 weights), float32."""
    pruned: bool = False
    """Export the pruned model (``edgecls prune``) instead of the trained one."""
    out: Optional[str] = None
    """Output folder (default RUN/export)."""
    representative_samples: int = 300
    """Calibration images for int8, drawn from the training split over all classes."""
    io: str = "uint8"
    """Input/output tensor type of int8 models: uint8 or int8."""
    allow_float_fallback: bool = False
    """Allow float ops where an op cannot be quantized (a mixed model)."""
    force: bool = False
    """Overwrite an existing export of the same mode."""
    parity: bool = True
    """Run the parity check after an int8 export."""
    max_drop: float = 1.0
    """Parity gate: largest accepted accuracy drop, in points."""
    min_agreement: float = 0.98
    """Parity gate: smallest accepted top-1 agreement rate."""
    parity_data: Optional[str] = None
    """Class-folder image set the int8 gate uses instead of the run's held-out images (test + val): photos the run has not seen, as many as you have; a few dozen cannot tell the repairs apart."""
    float_layers: str = "auto"
    """int8 tensors kept in float: auto (as a repair, chosen by their effect on calibration images), none, or NAME,... (always)."""
    qat: bool = False
    """Quantization-aware training (short tfmot fine-tune) instead of post-training quantization."""
    repair: bool = True
    """When the int8 gate fails, try bias correction, selective float layers, then QAT, and ship the first that passes."""
    qat_epochs: int = 2
    """Epochs of the QAT fine-tune (on the training split, distilled from the float model)."""
    qat_learning_rate: float = 1e-5
    """Adam learning rate of the QAT fine-tune."""
    bias_correction: bool = True
    """As the first int8 repair, correct each layer's bias for the mean shift int8 weight rounding causes (no size or latency cost)."""
    golden_images: int = 32
    """Held-out images in the golden set written beside the model (test split, else val; stratified)."""
    gptq: bool = False
    """As the first int8 repair, round each layer's weights to int8 with GPTQ (errors compensated on the calibration images, on the converter's grid) before bias correction; no size or latency cost, ~3-4 min for MobileNetV2 1.0 @ 160."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExportConfig":
        return _from_dict(cls, d)


@dataclass
class ParityConfig:
    """How to compare a .tflite model against the run's float Keras model."""

    run: str = ""
    """Run folder made by ``edgecls train``."""
    model: str = ""
    """The .tflite file to check."""
    data: Optional[str] = None
    """Class-folder image set to use instead of the run's held-out images (test + val splits)."""
    max_drop: float = 1.0
    """Fail when float accuracy minus tflite accuracy exceeds this, in points."""
    min_agreement: float = 0.98
    """Fail when top-1 agreement is under this rate."""
    json: Optional[str] = None
    """Where to write the JSON report."""
    threads: int = 2
    """Interpreter threads."""
    float_model: Optional[str] = None
    """Float Keras reference (default: the one named in the model's card, else RUN/model.keras)."""
    labels_csv: Optional[str] = None
    """CSV of path,label[,split] rows labelling the images in data (instead of class folders)."""
    diagnose: bool = True
    """Measure per-tensor int8 error with TF's QuantizationDebugger (int8 models made by PTQ)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ParityConfig":
        return _from_dict(cls, d)


@dataclass
class CameraConfig:
    """How to run the live classifier loop on a device."""

    model: str = ""
    """The .tflite model."""
    source: str = "0"
    """Camera index, /dev/videoN, video file, image folder, 'picamera', or a GStreamer pipeline."""
    labels: Optional[str] = None
    """labels.txt (default: beside the model, else the model's metadata)."""
    threads: int = 4
    """Interpreter threads."""
    xnnpack: bool = True
    """Use the XNNPACK delegate (off only to compare)."""
    top_k: int = 3
    """Labels shown and logged per frame."""
    threshold: float = 0.0
    """Scores under this are not reported."""
    smoothing: float = 0.0
    """Exponential smoothing of scores over frames (0 = off, 0.9 = heavy)."""
    width: int = 640
    """Requested capture width (cameras only)."""
    height: int = 480
    """Requested capture height (cameras only)."""
    headless: Optional[bool] = None
    """No window; None = automatic (headless when there is no display)."""
    save: Optional[str] = None
    """Write the annotated video here (.mp4)."""
    jsonl: Optional[str] = None
    """Write one JSON row per frame here."""
    stats_json: Optional[str] = None
    """Write loop statistics (fps, stage times) here at the end."""
    max_frames: Optional[int] = None
    """Stop after this many frames."""
    realtime: bool = False
    """Pace files and folders at their frame rate instead of as fast as possible."""
    pipeline: bool = True
    """Capture and preprocess on a background thread while the model runs (off: all on one thread)."""
    force: bool = False
    """Overwrite existing --save/--jsonl/--stats-json files."""
    # -- issue 11: the Pi in the field --------------------------------------------------------
    serve: Optional[str] = None
    """Serve a live web view (MJPEG stream, top-k, FPS, timings, /status JSON) on [HOST:]PORT; HOST defaults to 127.0.0.1."""
    serve_token: Optional[str] = None
    """Token the web view requires (?token= or 'Authorization: Bearer'); needed for a non-loopback HOST."""
    serve_fps: float = 10.0
    """Highest frame rate encoded for web viewers (JPEG from the latest frame, never queued)."""
    mqtt: Optional[str] = None
    """Publish events to mqtt://[USER[:PASSWORD]@]HOST[:PORT][/TOPIC/PREFIX] (password also from EDGECLS_MQTT_PASSWORD)."""
    mqtt_home_assistant: bool = False
    """Also publish Home Assistant MQTT discovery (retained) for a label and a score sensor."""
    mqtt_stats_interval_s: float = 60.0
    """Seconds between retained stats messages (FPS, latency) on <prefix>/stats."""
    save_uncertain: Optional[str] = None
    """Save full frames whose top-1 score is below --below into DIR/<predicted label>/ (with a .scores/ sidecar)."""
    below: float = 0.5
    """Top-1 score under which a frame counts as uncertain (for --save-uncertain)."""
    max_per_hour: int = 60
    """At most this many uncertain frames saved in any hour."""
    log_on: str = "frame"
    """JSONL rows: 'frame' (every frame) or 'change' (when the top-1 changes, plus a heartbeat every --log-interval)."""
    log_interval_s: float = 0.0
    """Seconds: with --log-on frame at most one row per interval, with change a heartbeat row at least this often (0 = off)."""
    jsonl_max_mb: float = 0.0
    """Rotate the JSONL when it passes this size in MB (0 = never); an existing file is rotated, not refused."""
    jsonl_keep: int = 5
    """Rotated JSONL files kept (log.jsonl.1 ... .N)."""
    stall_timeout_s: float = 10.0
    """Watchdog: seconds without a frame from a live source before it is reopened (0 = off)."""
    stall_retries: int = 3
    """Watchdog: reopen attempts before exiting non-zero (so systemd restarts the service)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CameraConfig":
        return _from_dict(cls, d)


@dataclass
class CollectConfig:
    """How to record training images of one class from the camera."""

    out: str = ""
    """Data folder; images go to OUT/<label>/ (the layout edgecls train reads)."""
    label: str = ""
    """Class name (the sub-folder)."""
    source: str = "0"
    """Camera index, /dev/videoN, video file, image folder, 'picamera', or a GStreamer pipeline."""
    count: int = 50
    """Images to record."""
    interval_s: float = 0.5
    """Seconds between images (vary the pose/light meanwhile)."""
    width: int = 640
    """Requested capture width (cameras only)."""
    height: int = 480
    """Requested capture height (cameras only)."""
    quality: int = 95
    """JPEG quality of the saved images."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CollectConfig":
        return _from_dict(cls, d)


@dataclass
class BenchConfig:
    """How to measure a model's latency on this machine."""

    models: Tuple[str, ...] = ()
    """One or more .tflite files; with two, their latency ratio is reported."""
    threads: Tuple[int, ...] = (1,)
    """Thread counts to measure."""
    runs: int = 100
    """Timed invokes per model and thread count."""
    warmup: int = 10
    """Untimed invokes first (XNNPACK packs weights on the first ones)."""
    images: Optional[str] = None
    """Folder of real images to feed; seeded random input otherwise."""
    json: Optional[str] = None
    """Where to write the JSON results."""
    compare_delegates: bool = False
    """Also measure with XNNPACK off."""
    seed: int = DEFAULT_SEED
    """Seed of the random input."""
    force: bool = False
    """Overwrite an existing --json file."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchConfig":
        return _from_dict(cls, d)


def _from_dict(cls, d: dict[str, Any]):
    """Build a config from a saved dict, ignoring keys a newer/older version did not have."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    for f in dataclasses.fields(cls):
        if f.name in kwargs and isinstance(kwargs[f.name], list) and "Tuple" in str(f.type):
            kwargs[f.name] = tuple(kwargs[f.name])
    return cls(**kwargs)


def field_help(cls: type, name: str) -> str:
    """The docstring under a dataclass field, for click help texts (one source of truth)."""
    return _field_docs(cls).get(name, "")


@functools.lru_cache(maxsize=None)
def _field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} of one class, parsed once per process (not once per option)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
        ):
            docs[node.target.id] = str(nxt.value.value)
    return docs


_ = field  # re-exported for stage modules that add defaults with factories


@dataclass(frozen=True)
class SshConfig:
    """How to reach a device over SSH (the system OpenSSH client; the user's config, agent and
    known_hosts apply unless overridden here)."""

    ssh_config: Optional[str] = None
    """An ssh_config file to use instead of ~/.ssh/config (ssh -F)."""
    identity: Optional[str] = None
    """A private key file (ssh -i); by default the agent and ~/.ssh keys are tried."""
    port: Optional[int] = None
    """SSH port on the device (default: from the ssh config, else 22)."""
    ssh_options: Tuple[str, ...] = ()
    """Extra ssh -o options, e.g. UserKnownHostsFile=/path (repeatable)."""
    connect_timeout: int = 10
    """Seconds to wait for the device to answer before giving up."""


@dataclass(frozen=True)
class DeployConfig:
    """Copy a model bundle to a device, check it there, benchmark it, bring the results back."""

    source: str = ""
    """A .tflite model, or a run folder (its export/model_<mode>.tflite)."""
    target: str = ""
    """USER@HOST[:DIR] (DIR default: edgecls/model in the user's home)."""
    mode: str = "int8"
    """Which export of a run folder to deploy (model_<mode>.tflite)."""
    install: bool = False
    """Create or upgrade the device's venv with edgecls[device] (from a wheel of this host's edgecls)."""
    wheel: Optional[str] = None
    """An edgecls wheel to install instead of building one from this host's source."""
    venv: Optional[str] = None
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
    """Run 'edgecls verify' on the device before the new model goes live."""
    threads: Tuple[int, ...] = (1,)
    """Thread counts to benchmark, on the device and on this host."""
    runs: int = 50
    """Timed invokes per thread count."""
    warmup: int = 5
    """Untimed invokes first."""
    ssh: SshConfig = field(default_factory=SshConfig)
    """How to reach the device."""
