"""RUN/report/: what the page is made from, kept between stages so every stage can redraw it.

Predictions, heatmaps and the changed top-1s of each export need TensorFlow and the photos
(:mod:`edgecls.report.collect` makes them on the host, once per model file); the page is drawn
from these files alone (:mod:`edgecls.report.assemble`), so ``deploy`` redraws it with no
TensorFlow, and a run copied without its photos keeps its pictures::

    report/
      predictions_<model stem>.json   the float model's scores on the held-out images (test, then val)
      gradcam.json + cam/*.jpg        heatmaps over a sample of right and wrong held-out images
      samples.json                    a few training images per class, for the data section
      int8/<tflite stem>.json         the images whose top-1 an exported file changed
      thumbs/*.jpg                    small pictures of every image shown, at the model's input

Each record names the sha256 of the model it describes: a record of a model file that has since
changed is stale and made again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls.core.io import atomic_write_bytes, atomic_write_json, read_json
from edgecls.core.rundir import RunDir

FORMAT = 1
"""Version of these files; a record of another version is made again."""
PROB_DIGITS = 6
"""Probabilities are kept to 1e-6: enough to sort by and to tell a near-tie, small on disk."""


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def thumb_name(relpath: str) -> str:
    """'thumbs/<16 hex>.jpg' for an image of the data set (by its path under the data root)."""
    return f"thumbs/{hashlib.sha1(relpath.encode('utf-8')).hexdigest()[:16]}.jpg"


@dataclass
class HeldOut:
    """A float model's probabilities on the run's held-out images, in parity's order (test, then val)."""

    model: str
    """File name in the run (model.keras, model_pruned.keras)."""
    model_sha256: str
    labels: list[str]
    items: list[tuple[str, int, str]]
    """(path under the data root, true label index, split) per image."""
    probs: np.ndarray
    """float32 [N, C]."""
    size: int

    def split(self, name: str) -> "HeldOut":
        """The images of one split only."""
        keep = [i for i, it in enumerate(self.items) if it[2] == name]
        return HeldOut(self.model, self.model_sha256, self.labels, [self.items[i] for i in keep],
                       self.probs[keep] if keep else np.zeros((0, len(self.labels)), np.float32), self.size)

    @property
    def y(self) -> np.ndarray:
        return np.asarray([it[1] for it in self.items], dtype=np.int64)

    @property
    def names(self) -> list[str]:
        return [it[0] for it in self.items]

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": self.model, "model_sha256": self.model_sha256, "labels": self.labels,
                "size": self.size, "items": [list(it) for it in self.items],
                "probs": np.round(self.probs.astype(np.float64), PROB_DIGITS).tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "HeldOut":
        n_classes = len(d["labels"])
        probs = np.asarray(d["probs"], dtype=np.float32).reshape(-1, n_classes)
        return cls(d["model"], d["model_sha256"], list(d["labels"]), [(str(a), int(b), str(c)) for a, b, c in d["items"]],
                   probs, int(d["size"]))


@dataclass
class CamImage:
    """One heatmap: which image, what the model said, and where the map peaks (fractions of height, width)."""

    name: str
    label: int
    pred: int
    score: float
    file: str
    """Its overlay, relative to RUN/report/."""
    peak: tuple[float, float]


@dataclass
class CamSet:
    """Heatmaps of one float model over a sample of its held-out images."""

    model_sha256: str
    layer: str
    split: str
    images: list[CamImage] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "CamSet":
        imgs = [CamImage(**{**c, "peak": tuple(c["peak"])}) for c in d.get("images", [])]
        return cls(d["model_sha256"], d["layer"], d["split"], imgs)


@dataclass
class ChangedImage:
    """A held-out image whose top-1 an exported file changed against its float model."""

    name: str
    label: int
    split: str
    float_top: int
    file_top: int
    float_score: float
    file_score: float
    """The file's probability of its own top-1."""
    float_margin: float
    """Float top-1 minus top-2: at the gate's clear margin or above, the float model decided clearly."""
    clear: bool


@dataclass
class ExportChanges:
    """What one exported file did to the float model's answers on the held-out images."""

    model: str
    """The .tflite's file name in RUN/export/."""
    model_sha256: str
    float_model: str
    float_sha256: str
    n_images: int
    clear_margin: float
    changed: list[ChangedImage]
    per_class: dict[str, int]
    """Changed top-1s per true class."""
    file_accuracy: float
    float_accuracy: float
    host_latency_ms: Optional[float] = None
    """Median invoke time on the host that made this record (1 thread, after warm-up): the card's figure
    when the card has none."""

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ExportChanges":
        kw = {k: v for k, v in d.items() if k != "format"}
        kw["changed"] = [ChangedImage(**c) for c in d.get("changed", [])]
        return cls(**kw)


@dataclass(frozen=True)
class Store:
    """The files of RUN/report/ (read and written here only)."""

    run: RunDir

    @property
    def root(self) -> Path:
        return self.run.report_dir

    def predictions_path(self, model_file: str) -> Path:
        return self.root / f"predictions_{Path(model_file).stem}.json"

    @property
    def gradcam_path(self) -> Path:
        return self.root / "gradcam.json"

    @property
    def samples_path(self) -> Path:
        return self.root / "samples.json"

    def changes_path(self, tflite_name: str) -> Path:
        return self.root / "int8" / f"{Path(tflite_name).stem}.json"

    # -- reading (None: not made yet, or of another format) --------------------------------------
    def _read(self, path: Path) -> Optional[dict[str, Any]]:
        if not path.is_file():
            return None
        try:
            d = read_json(path)
        except (OSError, ValueError):
            return None  # a damaged record is made again, never trusted
        return d if isinstance(d, dict) and d.get("format") == FORMAT else None

    def predictions(self, model_file: str) -> Optional[HeldOut]:
        d = self._read(self.predictions_path(model_file))
        return HeldOut.from_json(d) if d else None

    def gradcam(self) -> Optional[CamSet]:
        d = self._read(self.gradcam_path)
        return CamSet.from_json(d) if d else None

    def samples(self) -> dict[str, list[str]]:
        """class name -> paths (under the data root) of its sample training images."""
        d = self._read(self.samples_path)
        return {k: list(v) for k, v in (d or {}).get("per_class", {}).items()}

    def changes(self, tflite_name: str) -> Optional[ExportChanges]:
        d = self._read(self.changes_path(tflite_name))
        return ExportChanges.from_json(d) if d else None

    def picture(self, rel: str) -> Optional[bytes]:
        """A stored JPEG (thumbs/..., cam/...), or None."""
        p = self.root / rel
        return p.read_bytes() if p.is_file() else None

    def has_picture(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    # -- writing --------------------------------------------------------------------------------
    def write_predictions(self, held: HeldOut) -> None:
        atomic_write_json(self.predictions_path(held.model), held.as_json())

    def write_gradcam(self, cams: CamSet) -> None:
        atomic_write_json(self.gradcam_path, cams.as_json())

    def write_samples(self, per_class: dict[str, list[str]]) -> None:
        atomic_write_json(self.samples_path, {"format": FORMAT, "per_class": per_class})

    def write_changes(self, changes: ExportChanges) -> None:
        atomic_write_json(self.changes_path(changes.model), changes.as_json())

    def write_picture(self, rel: str, jpeg: bytes) -> None:
        atomic_write_bytes(self.root / rel, jpeg)
