"""Options of the host-side stages (train, prune, export, parity, report), one dataclass per stage; the device side's
are in :mod:`edgecls.core.device_config`.

The click command is made from it (:func:`edgecls.cli.options.config_options`), the Python API
takes it, and ``dataclasses.asdict()`` is saved in the run folder (``config.json``), so a run can be
read and repeated. Each field is declared once with :func:`~edgecls.core.options.opt`: its default,
its bounds or choices, its CLI spelling when that is not ``--field-name``; the docstring under it is
its help text. Every config checks its values when it is made (:func:`~edgecls.core.options.validate`).
Pure standard library: the TF-free runtime imports it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from edgecls.core.errors import EdgeclsError
from edgecls.core.options import field_help, from_dict, opt, validate

__all__ = ["TrainConfig", "PruneConfig", "ExportConfig", "ParityConfig", "ReportConfig", "ExplainConfig", "Options",
           "field_help", "DEFAULT_SEED"]

DEFAULT_SEED = 42
MAX_SEED = 2**32 - 1  # numpy's and Python's generators take 32-bit seeds
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_THREADS = 64
MAX_IMAGES = 1_000_000
CACHE_MODES = ("auto", "memory", "disk", "none")
"""Decoded-image cache modes, shared by the CLI choice, the config check and the pipeline."""
BALANCE_MODES = ("weights", "oversample", "none")
"""Class-imbalance remedies of training (TrainConfig.balance)."""
HEAD_CACHE_MODES = ("features", "none")
"""How the head phase of training meets the frozen backbone (TrainConfig.head_cache)."""
PRECISIONS = ("auto", "on", "off")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
EXPORT_MODES = ("int8", "float16", "dynamic", "float32", "imx500")
IO_TYPES = ("uint8", "int8", "uint8-float32")
"""In/out tensor types of a full-int8 file: uint8 or int8 in and out (fully integer), or uint8 in and float32 out
(the classifier head, logits and softmax, computed in float from the dequantized features)."""


class Options:
    """What every stage's options share: checked when made, rebuilt from a saved dict."""

    RENAMED: dict[str, str] = {}
    """Older field names still found in saved configs -> today's."""

    def __post_init__(self) -> None:
        validate(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """A config from a saved dict, ignoring keys a newer or older version did not have."""
        return from_dict(cls, d, cls.RENAMED)


@dataclass
class TrainConfig(Options):
    """How to turn an image folder into a trained run."""

    data: str = opt("", flag="")
    """Image folder: DATA/<class>/* or DATA/train|val[|test]/<class>/*."""
    out: str = opt("runs/run", short="-o")
    """Run folder to create (never overwritten without --force)."""
    backbone: str = "mobilenet_v2"
    """Registered backbone name (see ``edgecls.train.backbones.available()``)."""
    alpha: float = opt(1.0, low=0.0, high=2.0, low_open=True)
    """Width multiplier for MobileNet backbones."""
    minimalistic: bool = False
    """MobileNetV3 minimalistic variant (no hard-swish, no SE; quantizes well)."""
    size: int = opt(224, low=32, high=1024, unit="pixels")
    """Square input size in pixels; the model takes raw RGB uint8 of this size."""
    weights: str = "imagenet"
    """'imagenet', 'none', or a path to a Keras no-top weights file for the backbone."""
    batch_size: int = opt(32, low=1, high=MAX_BATCH)
    """Global batch size (split over replicas)."""
    epochs: int = opt(20, low=1, high=MAX_EPOCHS)
    """Epochs of head training on the frozen backbone (the new head needs at least one). Cheap on cached features."""
    fine_tune_epochs: int = opt(15, low=0, high=MAX_EPOCHS)
    """Epochs of fine-tuning with the top of the backbone unfrozen (0 skips it; on features cached at the cut
    with the head cache)."""
    fine_tune_fraction: float = opt(0.08, low=0.0, high=1.0, low_open=True)
    """Share of the backbone's layers (from the top) unfrozen for fine-tuning (0.08: MobileNetV2's last block
    and its final 1x1 conv)."""
    learning_rate: float = opt(1e-3, low=0.0, high=1.0, low_open=True)
    """Adam learning rate for the head phase."""
    fine_tune_learning_rate: float = opt(1e-4, low=0.0, high=1.0, low_open=True)
    """Adam learning rate for the fine-tune phase (10x lower than the head's, to keep pretrained features)."""
    label_smoothing: float = opt(0.1, low=0.0, high=1.0, high_open=True)
    """Label smoothing of the cross-entropy loss."""
    dropout: float = opt(0.2, low=0.0, high=1.0, high_open=True)
    """Dropout rate before the classifier layer."""
    augment: bool = True
    """Random flip/rotation/zoom/contrast on training batches (never exported)."""
    patience: int = opt(5, low=1, high=MAX_EPOCHS)
    """Epochs without val_loss improvement before a phase stops early (best weights restored)."""
    val_fraction: float = opt(0.15, low=0.0, high=1.0, low_open=True, high_open=True)
    """Share of each class held out for validation (class-folder layout only)."""
    test_fraction: float = opt(0.15, low=0.0, high=1.0, high_open=True)
    """Share of each class held out for testing (class-folder layout only)."""
    seed: int = opt(DEFAULT_SEED, low=0, high=MAX_SEED)
    """Seed of the split, shuffling and initialisation."""
    cache: str = opt("auto", choices=CACHE_MODES)
    """Decoded-image cache: auto (memory if it fits --cache-budget-mb, else a file), memory, disk, none."""
    cache_budget_mb: int = opt(2048, low=0, high=10_000_000, unit="MB")
    """Largest decoded set kept in memory when --cache is auto."""
    mixed_precision: str = opt("auto", choices=PRECISIONS)
    """auto (on with a GPU), on, off."""
    strategy: str = opt("auto", choices=STRATEGIES)
    """auto (multi-worker with TF_CONFIG, mirrored with >1 GPU), default, mirrored, multiworker."""
    prune: Optional[float] = opt(None, low=0.0, high=1.0, low_open=True, high_open=True, metavar="SPARSITY")
    """If set, prune to this sparsity after training (same as ``edgecls prune``)."""
    prune_epochs: int = opt(4, low=1, high=MAX_EPOCHS)
    """Fine-tune epochs while pruning, when --prune is set."""
    labels_csv: Optional[str] = opt(None, metavar="FILE")
    """CSV of path,label[,split] rows labelling the images in DATA (instead of class folders)."""
    balance: str = opt("weights", choices=BALANCE_MODES)
    """Class imbalance: weights (balanced class weights when imbalanced), oversample (every class drawn
    equally often each epoch), none. Training and pruning both follow it."""
    head_cache: str = opt("features", choices=HEAD_CACHE_MODES)
    """Head phase: features (run the frozen backbone once per augmented view and train the head on the cached
    features), none (run the backbone on every batch of every epoch)."""
    head_cache_views: int = opt(3, low=1, high=64)
    """Augmented views per training image in the head-phase feature cache (1 view, unaugmented, with --no-augment)."""
    calibrate: bool = True
    """Fit a temperature on the validation split and put it inside the model, so its scores mean what they say."""
    keep: float = opt(0.95, low=0.0, high=1.0, low_open=True)
    """The unknown rule keeps this share of the correct answers on the validation split: frames scoring under the
    threshold that does so are "unknown"."""
    unknown_threshold: Optional[float] = opt(None, low=0.0, high=1.0, metavar="P")
    """Top-1 probability under which a frame is "unknown", instead of the one --keep chooses (0: no threshold)."""
    negatives: Optional[str] = opt(None, metavar="DIR", path="dir")
    """Photos that are none of the classes (empty scenes, other objects): trained as one more class, 'unknown', whose
    frames answer "unknown"; the run reports how many held-out negatives it still accepts."""

    RENAMED = {"early_stopping_patience": "patience"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        # A run saved with the older --class-weights none meant no imbalance remedy.
        if d.pop("class_weights", "auto") == "none" and d.get("balance", "weights") == "weights":
            d["balance"] = "none"
        return from_dict(cls, d, cls.RENAMED)


@dataclass
class PruneConfig(Options):
    """How to prune a trained run with tensorflow-model-optimization."""

    run: str = opt("", flag="")
    """Run folder made by ``edgecls train``."""
    sparsity: float = opt(0.5, low=0.0, high=1.0, low_open=True, high_open=True)
    """Target share of zero weights in Conv2D/Dense kernels."""
    epochs: int = opt(4, low=1, high=MAX_EPOCHS)
    """Fine-tune epochs over which sparsity ramps up (PolynomialDecay)."""
    learning_rate: float = opt(1e-4, low=0.0, high=1.0, low_open=True)
    """Adam learning rate while pruning."""
    batch_size: int = opt(32, low=1, high=MAX_BATCH)
    """Batch size while pruning."""
    force: bool = False
    """Overwrite an existing pruned model."""


@dataclass
class ExportConfig(Options):
    """How to convert a run's model to a TFLite file."""

    run: str = opt("", flag="")
    """Run folder made by ``edgecls train``."""
    mode: str = opt("int8", choices=EXPORT_MODES, flag="")
    """int8 (full integer), float16, dynamic (int8 weights), float32, or imx500 (the Raspberry Pi AI Camera's
    sensor): one flag each (--int8 ...)."""
    pruned: bool = False
    """Export the pruned model (``edgecls prune``) instead of the trained one."""
    out: Optional[str] = None
    """Output folder (default RUN/export), or a .tflite file path."""
    representative_samples: int = opt(300, low=1, high=MAX_IMAGES)
    """Calibration images for int8, drawn from the training split over all classes."""
    io: str = opt("uint8", choices=IO_TYPES)
    """Input/output tensor types of int8 files: uint8 or int8 in and out (fully integer), or uint8 in and float32
    out (the classifier head in float)."""
    allow_float_fallback: bool = False
    """Allow float ops where an op cannot be quantized (a mixed model)."""
    force: bool = False
    """Overwrite an existing export of the same mode."""
    parity: bool = True
    """Run the parity gate after an int8 export (--no-parity skips it, and with it every repair)."""
    max_drop: float = opt(1.0, low=0.0, high=100.0, unit="points")
    """Parity gate: largest accepted accuracy drop, in points."""
    min_clear_agreement: float = opt(0.99, low=0.0, high=1.0)
    """Parity gate: smallest accepted top-1 agreement on the clearly decided images (float top-1 beats its
    top-2 by at least 0.10)."""
    min_agreement: Optional[float] = opt(None, low=0.0, high=1.0)
    """Stricter, off by default: also gate top-1 agreement over all images, near-ties included."""
    parity_data: Optional[str] = opt(None, metavar="DIR")
    """Class-folder image set the int8 gate uses instead of the run's held-out images (test + val): photos the
    run has not seen, as many as you have; a few dozen cannot tell the repairs apart."""
    float_layers: str = opt("auto", metavar="auto|none|NAME,...")
    """int8 tensors kept in float: auto (as a repair), none, or NAME,... (always)."""

    def float_layer_names(self) -> Optional[list[str]]:
        """``--float-layers`` read: None for auto (the plan decides), [] for none, else the names."""
        v = (self.float_layers or "").strip()
        if v.lower() == "auto":
            return None
        if v.lower() == "none":
            return []
        names = [n.strip() for n in v.split(",") if n.strip()]
        if not names:
            raise EdgeclsError(f"--float-layers takes auto, none or NAME,...; got {self.float_layers!r}")
        return names

    def check(self) -> None:
        """The rules between options (each option's own bounds are checked when the config is made)."""
        validate(self)
        names = self.float_layer_names()
        if self.mode != "int8" and (self.qat or names):
            raise EdgeclsError(f"--qat and --float-layers apply to --int8 exports, not {self.mode}")
        if self.qat and names:
            raise EdgeclsError("--qat and --float-layers NAME,... are two different repairs; pass one of them")
        if self.parity_data and (self.mode != "int8" or not self.parity):
            raise EdgeclsError("--parity-data sets the images of the int8 parity gate; it needs --int8 and no --no-parity")
    qat: bool = False
    """Quantization-aware training (short tfmot fine-tune) instead of post-training quantization."""
    repair: bool = True
    """When the int8 gate fails, try the repairs in order (see docs/export.md) and ship the first that passes."""
    qat_epochs: int = opt(2, low=1, high=MAX_EPOCHS)
    """Epochs of the QAT fine-tune (on the training split, distilled from the float model)."""
    qat_learning_rate: float = opt(1e-5, low=0.0, high=1.0, low_open=True)
    """Adam learning rate of the QAT fine-tune."""
    bias_correction: bool = True
    """Correct each layer's bias for the mean shift int8 weight rounding causes (no size or latency cost)."""
    golden_images: int = opt(32, low=0, high=MAX_IMAGES)
    """Held-out images in the golden set written beside the model (test split, else val; stratified)."""


@dataclass
class ParityConfig(Options):
    """How to compare a .tflite model against the run's float Keras model."""

    run: str = opt("", flag="")
    """Run folder made by ``edgecls train``."""
    model: str = opt("", flag="")
    """The .tflite file to check."""
    data: Optional[str] = opt(None, metavar="DIR")
    """Class-folder image set to use instead of the run's held-out images (test + val splits)."""
    max_drop: float = opt(1.0, low=0.0, high=100.0, unit="points")
    """Fail when float accuracy minus tflite accuracy exceeds this, in points."""
    min_clear_agreement: float = opt(0.99, low=0.0, high=1.0)
    """Fail when top-1 agreement on the clearly decided images (float top-1 beats its top-2 by at least 0.10)
    is under this rate."""
    min_agreement: Optional[float] = opt(None, low=0.0, high=1.0)
    """Stricter, off by default: also fail when top-1 agreement over all images, near-ties included, is under this."""
    json: Optional[str] = opt(None, metavar="FILE", path="file")
    """Where to write the JSON report."""
    threads: int = opt(2, low=1, high=MAX_THREADS)
    """Interpreter threads."""
    float_model: Optional[str] = opt(None, metavar="FILE")
    """Float Keras reference (default: the one named in the model's card, else RUN/model.keras)."""
    labels_csv: Optional[str] = opt(None, metavar="FILE")
    """CSV of path,label[,split] rows labelling the images in --data (instead of class folders)."""
    diagnose: bool = True
    """Measure per-tensor int8 error with TF's QuantizationDebugger (int8 models made by PTQ)."""


@dataclass
class ReportConfig(Options):
    """How to (re)write a run's report page."""

    run: str = opt("", flag="")
    """Run folder made by ``edgecls train``."""
    collect: bool = True
    """Recompute what is missing or stale (predictions, heatmaps, changed top-1s: needs TensorFlow and the run's
    photos); --no-collect redraws the page from what RUN/report/ holds."""


@dataclass
class ExplainConfig(Options):
    """Which photos to explain with which run's model, and where the overlays go."""

    run: str = opt("", flag="")
    """Run folder made by ``edgecls train`` (its float model.keras is explained)."""
    images: str = opt("", flag="")
    """A photo, or a folder of photos (searched recursively)."""
    out: Optional[str] = opt(None, metavar="DIR", path="dir")
    """Where the overlays go (default: RUN/explain/): one <photo>.cam.jpg each, and explain.json."""
    layer: Optional[str] = opt(None, metavar="NAME")
    """The convolutional layer to explain (default: the last one with a spatial map, e.g. backbone/out_relu)."""
