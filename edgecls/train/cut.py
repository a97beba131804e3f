"""Where the fine-tune phase cuts the backbone: the one tensor between its frozen and trainable parts.

Fine-tuning unfreezes the top ``fine_tune_fraction`` of the backbone's layers. Everything below
stays frozen (and BatchNorm is always in inference mode), so its output for an image depends only
on the image and its augmentation, exactly as the whole backbone's does in the head phase: it can
be computed once per cached view and the fine-tune epochs run only the layers above it
(:mod:`edgecls.train.feature_cache`). That needs a *single* tensor to cross from the frozen part to
the rest; a cut inside a residual block has two (the block's input also feeds its ``add``), so the
cut moves down to the nearest layer boundary with one. The layers between the two points are in
the upper part but stay frozen: they are computed every epoch, not trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from edgecls.core.keras import keras
from edgecls.train.backbones import get_backbone


@dataclass
class Cut:
    """The backbone split at one tensor: ``upper(lower(x))`` is the backbone (the very same layers)."""

    layer: str
    """Name of the backbone layer whose output is the cut tensor."""
    lower: "keras.Model"
    upper: "keras.Model"


def first_trainable(n_layers: int, fraction: float) -> int:
    """Index of the first backbone layer the fine-tune phase unfreezes (see ``fit.set_phase``)."""
    return int(round(n_layers * (1.0 - fraction)))


def _crossing(layers: list, start: int) -> list:
    """Tensors made by ``layers[:start]`` that ``layers[start:]`` read."""
    below = {id(layer) for layer in layers[:start]}
    seen: dict[int, Any] = {}
    for layer in layers[start:]:
        for node in layer._inbound_nodes:
            for t in node.keras_inputs:
                if id(t._keras_history.layer) in below:
                    seen[id(t)] = t
    return list(seen.values())


def find_cut(classifier: "keras.Model", fraction: float) -> Optional[Cut]:
    """The backbone cut at or below its first trainable layer, or None when nothing below stays frozen."""
    base = get_backbone(classifier)
    layers = base.layers
    start = first_trainable(len(layers), fraction)
    if fraction <= 0 or start >= len(layers):
        return None
    while start > 1:  # layers[0] is the input
        crossing = _crossing(layers, start)
        if len(crossing) == 1:
            t = crossing[0]
            return Cut(t._keras_history.layer.name, keras.Model(base.input, t, name="below_cut"),
                       keras.Model(t, base.output, name="above_cut"))
        start -= 1
    return None
