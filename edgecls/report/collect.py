"""Make what the report needs from the models and the photos (host side: TensorFlow).

:func:`collect` brings RUN/report/ (:mod:`edgecls.report.store`) up to date: for each model file
whose record is missing or stale it computes, once,

- the float model's probabilities on the held-out images (test, then val: the images parity
  uses, decoded and resized by :func:`edgecls.data.load_images`, scored at parity's batch size, so
  the numbers are the gate's own);
- Grad-CAM heatmaps (:mod:`edgecls.report.gradcam`) over a sample of right and wrong images of
  the split the run's metrics are measured on;
- for every exported ``.tflite``: its probabilities through the device runtime on the same images,
  and which top-1s changed against its float model (:func:`edgecls.optimize.gate.compare`);
- thumbnails of every image the page shows, and a few training images per class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.core.io import read_json
from edgecls.core.rundir import RunDir
from edgecls.report.heatmap import overlay, peak, to_jpeg
from edgecls.report.store import (
    CamImage, CamSet, ChangedImage, ExportChanges, HeldOut, Store, file_sha256, thumb_name,
)

THUMB_SIDE_PX = 112
CAM_SIDE_PX = 160
"""Heatmap overlays are stored at the model's input size, at most this (a 224 px model's 7x7 map needs no more)."""
CAM_RIGHT = 10
CAM_WRONG = 8
"""Heatmaps per run: right answers spread over the classes, and the worst mistakes."""
SAMPLES_PER_CLASS = 8
MAX_SAMPLES = 160
"""Sample strips hold at most this many pictures in all (a 100-class run gets 2 per class), ~0.5 MB of page."""
MAX_MISTAKES_SHOWN = 120
"""Mistakes with a thumbnail (worst first); the page counts the rest."""
MAX_CHANGED_SHOWN = 120

Log = Callable[[str], None]


def worst_first(held: HeldOut) -> list[int]:
    """Indices of the misclassified images, the one with the least probability on its true class first
    (ties: the most confident wrong answer first)."""
    y, p = held.y, held.probs
    if not len(y):
        return []
    pred = p.argmax(1)
    wrong = np.flatnonzero(pred != y)
    true_p = p[wrong, y[wrong]]
    pred_p = p[wrong, pred[wrong]]
    return [int(i) for i in wrong[np.lexsort((-pred_p, true_p))]]


def evaluated_split(held: HeldOut) -> str:
    """The split the run's metrics are measured on: test when the run has one, else val."""
    return "test" if any(it[2] == "test" for it in held.items) else "val"


class _Photos:
    """The run's held-out images at the model's size, decoded once per collection (the slow part)."""

    def __init__(self, run: RunDir, size: int) -> None:
        from edgecls import data
        from edgecls.optimize.parity import HELD_OUT_SPLITS

        self.run, self.size = run, size
        self.root, split = data.load_split(run)
        self.split = split
        self.items = [(rel, lab, name) for name in HELD_OUT_SPLITS for rel, lab in split.get(name, [])]
        self._x: Optional[np.ndarray] = None

    def held_out(self) -> np.ndarray:
        if self._x is None:
            from edgecls import data

            if not self.items:
                raise EdgeclsError(f"{self.run.split_json} has no test or validation images: nothing to report on")
            self._x, _ = data.load_images(self.root, [(r, lab) for r, lab, _ in self.items], self.size)
        return self._x

    def load(self, rels: list[tuple[str, int]]) -> np.ndarray:
        from edgecls import data

        return data.load_images(self.root, rels, self.size)[0]


class _Collector:
    """One collection: the run, its store, the photos and the models loaded so far."""

    def __init__(self, run: RunDir, log: Log) -> None:
        self.run, self.log, self.store = run, log, Store(run)
        self.size = run.train_config().size
        self.labels = run.read_labels()
        self.photos = _Photos(run, self.size)
        self._models: dict[str, Any] = {}
        self.made: list[str] = []

    def model(self, name: str) -> Any:
        if name not in self._models:
            from edgecls.train.model_io import load_model

            self._models[name] = load_model(self.run.path / name)
        return self._models[name]

    def thumbs(self, indices: list[int]) -> None:
        """Thumbnails of held-out images (by index) that have none yet."""
        x = None
        for i in indices:
            rel = thumb_name(self.photos.items[i][0])
            if not self.store.has_picture(rel):
                x = self.photos.held_out() if x is None else x
                self.store.write_picture(rel, to_jpeg(x[i], THUMB_SIDE_PX))

    # -- the float model ------------------------------------------------------------------------
    def predictions(self, model_file: str) -> HeldOut:
        """The float model's held-out probabilities: the stored ones while the model file is the same."""
        sha = file_sha256(self.run.path / model_file)
        held = self.store.predictions(model_file)
        if held is not None and held.model_sha256 == sha and held.size == self.size and \
                [it[:2] for it in held.items] == [it[:2] for it in self.photos.items]:
            return held
        from edgecls.optimize.parity import FLOAT_BATCH

        x = self.photos.held_out()
        probs = np.asarray(self.model(model_file).predict(x.astype(np.float32), batch_size=FLOAT_BATCH, verbose=0),
                           dtype=np.float32)
        held = HeldOut(model_file, sha, self.labels, list(self.photos.items), probs, self.size)
        self.store.write_predictions(held)
        self.made.append(f"predictions of {model_file} on {len(held.items)} held-out images")
        return held

    def mistakes(self, held: HeldOut) -> None:
        split = evaluated_split(held)
        index = [i for i, it in enumerate(held.items) if it[2] == split]
        order = worst_first(held.split(split))
        self.thumbs([index[j] for j in order[:MAX_MISTAKES_SHOWN]])

    def gradcam(self, held: HeldOut) -> None:
        """Heatmaps over the worst mistakes and a spread of right answers of the evaluated split."""
        cams = self.store.gradcam()
        if cams is not None and cams.model_sha256 == held.model_sha256 and all(
                self.store.has_picture(c.file) for c in cams.images):
            return
        from edgecls import data
        from edgecls.report.gradcam import GradCam

        split = evaluated_split(held)
        index = [i for i, it in enumerate(held.items) if it[2] == split]
        part = held.split(split)
        wrong = [index[j] for j in worst_first(part)[:CAM_WRONG]]
        right_local = [j for j in range(len(part.items)) if part.probs[j].argmax() == part.items[j][1]]
        seed = self.run.train_config().seed
        picked = data.stratified_sample([(str(j), part.items[j][1]) for j in right_local], CAM_RIGHT, seed)
        chosen = [index[int(j)] for j, _ in picked] + wrong
        cam = GradCam(self.model(held.model))
        x = self.photos.held_out()[chosen] if chosen else np.zeros((0, self.size, self.size, 3), np.uint8)
        heats, _ = cam.maps(x)
        out = CamSet(held.model_sha256, cam.layer_path, split)
        for k, i in enumerate(chosen):
            name, label, _ = held.items[i]
            rel = f"cam/{thumb_name(name)[len('thumbs/'):]}"
            self.store.write_picture(rel, to_jpeg(overlay(x[k], heats[k]), CAM_SIDE_PX))
            r, c = peak(heats[k], self.size, self.size)
            pred = int(held.probs[i].argmax())
            out.images.append(CamImage(name, int(label), pred, round(float(held.probs[i, pred]), 4), rel,
                                       (round(r / self.size, 3), round(c / self.size, 3))))
        self.store.write_gradcam(out)
        self.made.append(f"{len(chosen)} Grad-CAM heatmaps at {cam.layer_path}")

    def samples(self) -> None:
        """A few training images per class (the data section's strips), once per run."""
        have = self.store.samples()
        if have and all(self.store.has_picture(thumb_name(r)) for rels in have.values() for r in rels):
            return
        from edgecls import data

        seed = self.run.train_config().seed
        train = self.photos.split.get("train") or []
        per_class: dict[str, list[str]] = {}
        each = max(1, min(SAMPLES_PER_CLASS, MAX_SAMPLES // max(1, len(self.labels))))
        for i, name in enumerate(self.labels):
            own = [it for it in train if it[1] == i]
            per_class[name] = [rel for rel, _ in data.stratified_sample(own, each, seed)]
        todo = [(rel, 0) for rels in per_class.values() for rel in rels if not self.store.has_picture(thumb_name(rel))]
        if todo:
            for (rel, _), img in zip(todo, self.photos.load(todo)):
                self.store.write_picture(thumb_name(rel), to_jpeg(img, THUMB_SIDE_PX))
        self.store.write_samples(per_class)

    # -- exported files -------------------------------------------------------------------------
    def export_changes(self, card_path: Path) -> None:
        """Which held-out top-1s an exported .tflite changed against the float model named in its card."""
        card = read_json(card_path)
        model = self.run.export_dir / str(card.get("model", ""))
        float_name = str(card.get("float_model") or self.run.model_path.name)
        if model.suffix != ".tflite" or not model.is_file() or not (self.run.path / float_name).is_file():
            return  # the AI Camera's package, or a file set without its model: nothing the runtime here can run
        sha = file_sha256(model)
        held = self.predictions(float_name)
        old = self.store.changes(model.name)
        if old is not None and old.model_sha256 == sha and old.float_sha256 == held.model_sha256:
            self.thumbs(self._indices(held, old.changed[:MAX_CHANGED_SHOWN]))
            return
        from edgecls.optimize.gate import Gates, compare
        from edgecls.optimize.parity import tflite_scores

        parity = _parity_of(card, self.run.export_dir)
        gates = Gates(**parity["gates"]) if parity and parity.get("gates") else Gates()
        threads = int(parity.get("threads") or 2) if parity else 2  # the gate's own thread count
        p_lite = tflite_scores(model, self.photos.held_out(), threads=threads)
        y = held.y
        report = compare(held.probs, p_lite, y, self.labels, gates)
        top_f, top_l = held.probs.argmax(1), p_lite.argmax(1)
        srt = np.sort(held.probs, axis=1)
        margin = srt[:, -1] - srt[:, -2] if held.probs.shape[1] > 1 else srt[:, -1]
        changed = [ChangedImage(held.items[i][0], int(y[i]), held.items[i][2], int(top_f[i]), int(top_l[i]),
                                round(float(held.probs[i, top_f[i]]), 4), round(float(p_lite[i, top_l[i]]), 4),
                                round(float(margin[i]), 4), bool(margin[i] >= gates.clear_margin))
                   for i in np.flatnonzero(top_f != top_l)]
        changed.sort(key=lambda c: (not c.clear, -c.float_margin))  # clear decisions first, the clearest on top
        from edgecls.optimize.card import measure_latency_ms

        result = ExportChanges(model.name, sha, float_name, held.model_sha256, len(y), gates.clear_margin, changed,
                               {k: int(v["changed_top1"]) for k, v in report.per_class.items()},
                               report.tflite_accuracy, report.float_accuracy, measure_latency_ms(model, self.size))
        self.store.write_changes(result)
        self.thumbs(self._indices(held, changed[:MAX_CHANGED_SHOWN]))
        self.made.append(f"{model.name}: {len(changed)} changed top-1s on {len(y)} held-out images")

    @staticmethod
    def _indices(held: HeldOut, images: list[ChangedImage]) -> list[int]:
        where = {name: i for i, name in enumerate(held.names)}
        return [where[c.name] for c in images if c.name in where]


def _parity_of(card: dict[str, Any], export_dir: Path) -> Optional[dict[str, Any]]:
    name = (card.get("parity") or {}).get("report")
    path = export_dir / name if name else None
    return read_json(path) if path is not None and path.is_file() else None


def collect(run: RunDir, *, log: Log = lambda s: None) -> list[str]:
    """Bring RUN/report/ up to date with the run's models and exports; returns a line per thing made.

    Raises :class:`EdgeclsError` when the photos cannot be read (the data folder moved) or a model
    cannot be loaded; what was made before that is kept.
    """
    c = _Collector(run, log)
    if run.model_path.is_file():
        held = c.predictions(run.model_path.name)
        c.mistakes(held)
        c.gradcam(held)
        c.samples()
    if run.export_dir.is_dir():
        for card in sorted(run.export_dir.glob("*.card.json")):
            c.export_changes(card)
    for line in c.made:
        log(line)
    return c.made
