"""Plain post-training quantization: the float model calibrated on the shared images, nothing changed."""

from __future__ import annotations

from typing import Optional

from edgecls.optimize.int8.method import Built, Context, Method


class PlainPTQ(Method):
    name = "ptq"
    cheap = True
    summary = "plain post-training quantization"

    def build(self, ctx: Context) -> Optional[Built]:
        from edgecls.optimize.convert import quantize_calibrated
        from edgecls.optimize.int8.debugger import ptq_diagnosis

        diagnosis = ptq_diagnosis(ctx)  # its calibration is this file's; its worst tensors go into the report
        return Built(quantize_calibrated(diagnosis.calibrated, io=ctx.io), quant_error=diagnosis.summary())
