"""What goes to the device: the model, its labels, its card and its golden set, found on the host."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgecls.core.errors import EdgeclsError
from edgecls.core.rundir import RunDir, card_path_for
from edgecls.runtime.golden import golden_path_for, sha256_of

DEVICE_DIR = "device"  # RUN/device/<host>/: what came back from each device


@dataclass(frozen=True)
class Bundle:
    """The files of one deployable model; ``results_dir`` is where the device's results go."""

    model: Path
    labels: Optional[Path]
    card: Optional[Path]
    golden: Optional[Path]
    results_root: Path

    @property
    def files(self) -> list[Path]:
        """Every file to copy; the model last, so it is the last to go live."""
        return [p for p in (self.labels, self.card, self.golden) if p is not None] + [self.model]

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    def sha256(self) -> dict[str, str]:
        return {p.name: sha256_of(p) for p in self.files}

    def results_dir(self, host: str) -> Path:
        return self.results_root / DEVICE_DIR / host


def _run_of(model: Path) -> Optional[RunDir]:
    """The run folder a model was exported into (RUN/export/model.tflite), if it is one."""
    for folder in (model.parent.parent, model.parent):
        if (folder / "config.json").is_file() and (folder / "labels.txt").is_file():
            return RunDir(folder)
    return None


def find_bundle(source: str | os.PathLike, mode: str = "int8", *, need_golden: bool = True) -> Bundle:
    """The bundle of a .tflite file, or of a run folder's ``export/model_<mode>.tflite``."""
    src = Path(source)
    if src.is_dir():
        run = RunDir.open(src)
        model = run.export_files(mode).model
        if not model.is_file():
            found = sorted(p.name for p in run.export_dir.glob("*.tflite")) if run.export_dir.is_dir() else []
            hint = f"; it has {', '.join(found)} (choose with --mode)" if found else \
                f"; export it first: edgecls export {src} --{mode}" if mode == "int8" else "; export it first"
            raise EdgeclsError(f"{src} has no {model.relative_to(src)}{hint}")
    elif src.is_file():
        if src.suffix != ".tflite":
            raise EdgeclsError(f"{src} is not a .tflite model or a run folder")
        model, run = src, _run_of(src)
    else:
        raise EdgeclsError(f"model or run folder not found: {src}")

    labels = model.with_name("labels.txt")
    if not labels.is_file():
        labels = run.labels_txt if run is not None else None
    card = card_path_for(model)
    golden = golden_path_for(model)
    if need_golden and not golden.is_file():
        raise EdgeclsError(
            f"no golden set beside the model ({golden.name}); 'edgecls export' writes it and the device's "
            "'edgecls verify' needs it: export again, or deploy with --no-verify"
        )
    return Bundle(model=model, labels=labels if labels and labels.is_file() else None,
                  card=card if card.is_file() else None, golden=golden if golden.is_file() else None,
                  results_root=run.path if run is not None else model.parent)
