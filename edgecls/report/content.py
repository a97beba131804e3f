"""What the report page shows, as plain data: :mod:`edgecls.report.assemble` fills it from a run,
:func:`edgecls.report.page.render` draws it. Nothing here reads files or needs TensorFlow, so the page
can be tested on made-up content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from edgecls.report.calibration import RecordedCalibration, Reliability


@dataclass
class Shot:
    """One picture on the page with what the model said about it. ``jpeg`` None: no picture kept."""

    name: str
    jpeg: Optional[bytes]
    true: str
    pred: str
    score: float
    """Probability of ``pred``."""
    detail: str = ""
    """One more line (the true class's probability, the float model's answer, ...)."""


@dataclass
class DataPart:
    """The images the run was made from."""

    root: str
    layout: str
    classes: list[str]
    counts: dict[str, dict[str, int]]
    """split -> class -> images."""
    skipped: list[tuple[str, str]]
    """(path, why) of every file the data check left out."""
    samples: dict[str, list[Shot]] = field(default_factory=dict)
    exif_oriented: int = 0


@dataclass
class ClassFigures:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class TrainingPart:
    """How training went, and what the float model gets wrong on the held-out split."""

    history: list[dict[str, Any]]
    split: str
    """The split the figures are measured on (test, else val)."""
    accuracy: Optional[float]
    per_class: dict[str, ClassFigures]
    confusion: list[list[int]]
    mistakes: list[Shot]
    n_mistakes: int
    n_images: int
    recorded_accuracy: Optional[float] = None
    """metrics.json's figure on the same split (training may score from cached features)."""
    pruning: Optional[dict[str, Any]] = None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttentionPart:
    """Grad-CAM heatmaps over right and wrong answers."""

    layer: str
    split: str
    right: list[Shot]
    wrong: list[Shot]


@dataclass
class ExportPart:
    """One exported file: its card's figures, its parity report, the images it changed."""

    name: str
    mode: str
    file_bytes: Optional[int]
    gzip_bytes: Optional[int]
    latency_ms: Optional[float]
    latency_source: str
    parity: Optional[Any] = None
    """:class:`edgecls.optimize.gate.ParityReport`, when the file was gated."""
    passed: Optional[bool] = None
    rejected: bool = False
    quantization_path: Optional[str] = None
    changed: list[Shot] = field(default_factory=list)
    n_changed: Optional[int] = None
    """None: not computed yet (the page says how to)."""
    n_changed_clear: int = 0
    changed_per_class: dict[str, int] = field(default_factory=dict)
    n_images: int = 0
    agrees_with_parity: Optional[bool] = None
    """Whether the recomputed changes match parity's counts (None: no parity report on the same images)."""


@dataclass
class DevicePart:
    """What came back from one device: the latest verify and bench per model."""

    host: str
    verify: list[dict[str, Any]]
    bench: list[dict[str, Any]]
    machine: str = ""


@dataclass
class ConfidencePart:
    """Reliability of the float model's scores on the held-out split, and what the run recorded."""

    split: str
    reliability: Reliability
    right_hist: list[int]
    wrong_hist: list[int]
    recorded: Optional[RecordedCalibration] = None
    scaled: Optional[Reliability] = None
    """The same images before the temperature training put inside the model, when it recorded one."""


@dataclass
class Report:
    """Everything the page shows; every part is optional (the page says what is missing and why)."""

    title: str
    run: str
    created: str
    labels: list[str]
    data: Optional[DataPart] = None
    training: Optional[TrainingPart] = None
    attention: Optional[AttentionPart] = None
    exports: list[ExportPart] = field(default_factory=list)
    devices: list[DevicePart] = field(default_factory=list)
    confidence: Optional[ConfidencePart] = None
    notes: list[str] = field(default_factory=list)
