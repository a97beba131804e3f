"""The report's options, declared once like every stage's (:mod:`edgecls.core.options`): the click
commands are made from these fields, and the Python API takes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from edgecls.core.config import Options
from edgecls.core.options import opt


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
