"""Full-integer export: one interface for a method (:mod:`.method`), one module per method, one plan.

``plan(cfg)`` (:mod:`.plan`) lists the methods an export tries, in order; each builds a file from a
shared :class:`~.method.Context`; export gates each and ships the first that passes and meets the aim. The methods:
:mod:`.ptq`, :mod:`.bias_correction`, :mod:`.stem`, :mod:`.float_search`, :mod:`.qat`.
Their tools: :mod:`.debugger` (per-tensor error, graph facts), :mod:`.float_biases`, :mod:`.flat`.
"""
