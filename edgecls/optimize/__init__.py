"""Stage 3, from a trained run to a checked .tflite: prune, convert, check, metadata, parity.

``prune.prune_run`` (tfmot), ``export.export_run`` (convert + checks + metadata + parity gate),
``parity.run_parity`` (float Keras vs the device runtime on the same images).
"""
