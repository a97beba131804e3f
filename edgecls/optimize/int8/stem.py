"""The stem kept float: the first conv, its activation and the next conv that reads it.

The first conv's activated output holds the smooth feature maps the first depthwise conv takes
differences of; rounded to 8 bits, those differences lose most of their resolution on blurry or
low-contrast photos, while every later block rounds harmlessly (BENCHMARKS.md, "int8 export").
Kept float together, the tensor between them is never rounded. The cost is two float convs on
the largest feature maps of the network: a few KB and a few percent of the latency.

On the bias-corrected model (the default) the two float ops get their original biases back
(:mod:`edgecls.optimize.int8.float_biases`): their kernels are not rounded, so the correction
would be an error of its own. The file is then calibrated again from that restored model, so the
ranges match what its ops compute.
"""

from __future__ import annotations

from typing import Optional

from edgecls.optimize.int8.method import Built, Context, Method


class StemFloat(Method):
    """The stem in float, everything else int8; on the bias-corrected model unless ``on_corrected`` is False."""

    name = "stem-float"
    cheap = True
    summary = "the first conv and the conv reading it kept in float"

    def __init__(self, on_corrected: bool = True) -> None:
        self.on_corrected = on_corrected

    def build(self, ctx: Context) -> Optional[Built]:
        from edgecls.optimize.convert import calibrate
        from edgecls.optimize.int8.bias_correction import corrected
        from edgecls.optimize.int8.debugger import same_tensors, selective_int8, stem_tensors
        from edgecls.optimize.int8.float_biases import restore_layer_biases

        base = corrected(ctx) if self.on_corrected else None
        calibrated = calibrate(base.model if base else ctx.model, ctx.representative)
        stem = stem_tensors(calibrated)
        if not stem:
            ctx.log("the model has no stem of two convs to keep in float; nothing to try")
            return None
        record = {"selection": {"method": "stem", "base": "bias-corrected" if base else "original"}}
        tensors, final = stem, calibrated
        if base is not None:
            restored, layers = restore_layer_biases(base.model, stem, base.shifts)
            final = calibrate(restored, ctx.representative)
            # The converter names a folded conv partly after its constants, which a copy may rename.
            tensors = same_tensors(stem, calibrated, final)
            record["selection"]["biases_restored"] = layers
            record["bias_correction"] = base.summary
        record["selection"]["always_float"] = tensors
        return Built(selective_int8(final, tensors, io=ctx.io), tensors, record)
