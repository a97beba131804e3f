"""Which int8 methods export tries, in which order.

Export (:mod:`edgecls.optimize.export`) stages and gates each method's file in turn and ships the
first that passes the gate and meets the aim (clear-decision agreement >= 0.995, drop <= 0.5 point); a
file that passes short of the aim is followed by the next cheap methods only (ptq, bias-corrected,
stem-float), and the best that passed ships. When none passes it keeps the best as REJECTED. The order is cheapest and most
often sufficient first (BENCHMARKS.md, "int8 export", measured on every benchmark set):

1. ``ptq`` — plain post-training quantization;
2. ``bias-corrected`` — biases corrected for the mean shift int8 weight rounding causes (one
   forward pass; no size or latency cost);
3. ``stem-float`` — the first conv and the conv reading it kept float on the bias-corrected model
   (a few KB, a few percent of latency): what blurry or low-contrast photos need;
4. ``float-search`` — tensors kept float by their measured effect on calibration images: finds a
   layer that int8 breaks outright;
5. ``qat`` — quantization-aware training (minutes).

Options change the plan: ``--qat`` is QAT alone, ``--float-layers NAME,...`` keeps those tensors
float (then QAT), ``--float-layers none`` drops the float methods, ``--no-bias-correction`` builds
the stem on the original model, ``--no-repair`` stops after the first method.
"""

from __future__ import annotations

from edgecls.core.config import ExportConfig
from edgecls.optimize.int8.method import Method


def method_classes() -> list[type[Method]]:
    """Every int8 method there is."""
    from edgecls.optimize.int8.bias_correction import BiasCorrected
    from edgecls.optimize.int8.float_search import FloatByEffect, FloatNamed
    from edgecls.optimize.int8.ptq import PlainPTQ
    from edgecls.optimize.int8.qat import QAT
    from edgecls.optimize.int8.stem import StemFloat

    return [PlainPTQ, BiasCorrected, StemFloat, FloatByEffect, FloatNamed, QAT]


def summary_of(name: str) -> str:
    """A few words on the method called ``name`` (the card's ``quantization.path``)."""
    return next((m.summary for m in method_classes() if m.name == name), name)


def plan(cfg: ExportConfig) -> list[Method]:
    """The ordered methods of an int8 export made with ``cfg``."""
    from edgecls.optimize.int8.bias_correction import BiasCorrected
    from edgecls.optimize.int8.float_search import FloatByEffect, FloatNamed
    from edgecls.optimize.int8.ptq import PlainPTQ
    from edgecls.optimize.int8.qat import QAT
    from edgecls.optimize.int8.stem import StemFloat

    qat = QAT(cfg.qat_epochs, cfg.qat_learning_rate)
    names = cfg.float_layer_names()
    if cfg.qat:
        return [qat]
    if names:
        methods: list[Method] = [FloatNamed(names), qat]
    else:
        methods = [PlainPTQ()]
        if cfg.bias_correction:
            methods.append(BiasCorrected())
        if names is None:
            methods += [StemFloat(on_corrected=cfg.bias_correction), FloatByEffect()]
        methods.append(qat)
    return methods if cfg.repair and cfg.parity else methods[:1]
