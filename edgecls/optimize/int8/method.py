"""The interface every int8 method implements, and the context they share.

A method turns the float model into one full-integer TFLite file (or says it has nothing to try);
export stages the file, gates it (:mod:`edgecls.optimize.gate`) and ships the first that passes and meets the aim.
Methods never see the gate's held-out images: what they measure on is the calibration sample.
What several methods need (the debugger's view of the plain PTQ file, the bias-corrected model) is
made once, on first use, and kept by the :class:`Context` (:meth:`Context.shared`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np


@dataclass
class Built:
    """One int8 file a method made, and how."""

    data: bytes
    float_tensors: list[str] = field(default_factory=list)
    """Tensors left in float on purpose (a selective file); the card names them."""
    record: dict[str, Any] = field(default_factory=dict)
    """What the card records of how the file was made (method-specific: shifts, the float selection, QAT's fit)."""
    quant_error: Optional[dict[str, Any]] = None
    """The debugger's worst tensors of this file, when the method measured them."""


class Context:
    """What an int8 method works from: the float model, the calibration images, the file's I/O types, and the
    shared intermediate results, each made on first use."""

    def __init__(self, model: Any, representative: np.ndarray, *, io: str = "uint8", allow_float_fallback: bool = False,
                 seed: int = 0, workdir: Path, log: Callable[[str], None] = lambda message: None) -> None:
        self.model = model
        self.representative = representative
        self.io = io
        self.allow_float_fallback = allow_float_fallback
        self.seed = seed
        self.workdir = workdir
        self.log = log
        self._shared: dict[str, Any] = {}

    def convert(self, model: Any) -> bytes:
        """``model`` as a full-int8 file calibrated on the shared images, with this context's I/O."""
        from edgecls.optimize.convert import convert_model

        return convert_model(model, "int8", representative=self.representative, io=self.io,
                             allow_float_fallback=self.allow_float_fallback)

    def shared(self, key: str, make: Callable[[], Any]) -> Any:
        """What ``make()`` returns, made on the first call for ``key`` and kept for the other methods."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]


class Method(ABC):
    """One way to make a full-integer file. ``name`` is what the card and the report call the path."""

    name: str = ""
    summary: str = ""
    """A few words for the export's closing line ('post-training quantization after bias correction')."""
    cheap: bool = False
    """Seconds and no size or latency to speak of: worth trying after a file that passed the gate but fell
    short of the aim (:data:`edgecls.optimize.gate.AIM`)."""

    @abstractmethod
    def build(self, ctx: Context) -> Optional[Built]:
        """The file, or None when this method has nothing to try on this model (said through ``ctx.log``)."""

    def __repr__(self) -> str:
        return f"<int8 method {self.name}>"
