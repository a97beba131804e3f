"""The run folder: what ``edgecls train`` writes and every later stage reads.

One class owns the file names so train, prune, export, parity and the report agree::

    RUN/
      config.json        {"train": asdict(TrainConfig), "edgecls_version": ...}
      labels.txt         one class name per line, in the model's output order
      split.json         {"root": DATA, "layout": ..., "seed": ..., "train"|"val"|"test": [[relpath, label_index], ...]}
      scan.json          files skipped by the data check, and why
      model.keras        best float model (takes raw RGB uint8-valued input of the run's size)
      model_pruned.keras pruned + stripped model (edgecls prune)
      pruning.json
      checkpoints/       for --resume
      history.json  metrics.json  plots/*.png  logs/ (TensorBoard)
      export/            model_<mode>.tflite, model_<mode>.card.json, parity_<mode>.json, labels.txt
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecls.core.config import TrainConfig
from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_write_json, atomic_write_text, read_json


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder, and the small files every stage reads."""

    path: Path

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """An existing run; a clear error if it is not one."""
        run = cls(Path(path))
        if not run.path.is_dir():
            raise EdgeclsError(f"run folder not found: {run.path} (create one with 'edgecls train DATA --out RUN')")
        if not run.config_json.is_file() or not run.labels_txt.is_file():
            raise EdgeclsError(
                f"{run.path} is not an edgecls run (no config.json/labels.txt); "
                "point at a folder made by 'edgecls train'"
            )
        return run

    # -- file names -------------------------------------------------------------------------
    @property
    def config_json(self) -> Path:
        return self.path / "config.json"

    @property
    def labels_txt(self) -> Path:
        return self.path / "labels.txt"

    @property
    def split_json(self) -> Path:
        return self.path / "split.json"

    @property
    def scan_json(self) -> Path:
        return self.path / "scan.json"

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def pruned_model_path(self) -> Path:
        return self.path / "model_pruned.keras"

    @property
    def pruning_json(self) -> Path:
        return self.path / "pruning.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def history_json(self) -> Path:
        return self.path / "history.json"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    def export_files(self, mode: str, pruned: bool = False, out: str | os.PathLike | None = None) -> "ExportFiles":
        """The file set of one export mode; ``out`` is a folder, or a .tflite path (the rest beside it)."""
        tag = f"{'pruned_' if pruned else ''}{mode}"
        if out and str(out).endswith(".tflite"):
            model = Path(out)
            folder = model.parent
        else:
            folder = Path(out) if out else self.export_dir
            model = folder / f"model_{tag}.tflite"
        return ExportFiles(model=model, card=card_path_for(model), parity=folder / f"parity_{tag}.json",
                           labels=folder / "labels.txt",
                           golden=model.with_name(model.name[: -len(".tflite")] + ".golden.npz"))

    # -- small files ------------------------------------------------------------------------
    def read_labels(self) -> list[str]:
        return read_labels(self.labels_txt)

    def write_labels(self, labels: list[str]) -> None:
        write_labels(self.labels_txt, labels)

    def read_config(self) -> dict[str, Any]:
        return read_json(self.config_json)

    def train_config(self) -> TrainConfig:
        """The TrainConfig the run was made with (size, backbone, seed ...)."""
        return TrainConfig.from_dict(self.read_config().get("train", {}))

    def read_split(self) -> dict[str, Any]:
        if not self.split_json.is_file():
            raise EdgeclsError(f"{self.split_json} is missing; the run is incomplete (re-run 'edgecls train')")
        return read_json(self.split_json)

    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write_json(path, obj)


@dataclass(frozen=True)
class ExportFiles:
    """One exported model's file set: it is written, checked and replaced as a whole."""

    model: Path
    card: Path
    parity: Path
    labels: Path
    golden: Path


def card_path_for(model_path: str | os.PathLike) -> Path:
    """``model_int8.tflite`` -> ``model_int8.card.json`` (beside any .tflite, in a run or not)."""
    p = Path(model_path)
    return p.with_name((p.name[: -len(".tflite")] if p.name.endswith(".tflite") else p.stem) + ".card.json")


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names, one per line, blank lines ignored."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def write_labels(path: str | os.PathLike, labels: list[str]) -> None:
    atomic_write_text(path, "".join(f"{name}\n" for name in labels))
