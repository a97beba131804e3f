"""The Raspberry Pi AI Camera (Sony IMX500): ``edgecls export RUN --imx500``.

The network runs on the sensor itself. Sony's chain makes it: the Model Compression Toolkit
(MCT) quantizes a Keras model, ``imxconv-tf`` compiles it to ``packerOut.zip``, and
``imx500-package`` (Raspberry Pi's apt package, on the Pi) turns that into ``network.rpk``.
Sony's Python side pins TensorFlow 2.15 and numpy<2, so it cannot share the host's venv: it
lives in a venv of its own (:mod:`.toolchain`) and runs as a subprocess (:mod:`.worker`).

Modules: ``toolchain`` (the Sony venv, Python 3.11 and Java 17), ``graph`` (the classifier as the
sensor runs it, built in that venv), ``worker`` (runs inside it: rebuild, quantize, predict),
``package`` (what the converter wrote), ``export`` (the stage, one transaction).
"""
