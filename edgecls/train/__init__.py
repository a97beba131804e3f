"""Stage 2, training: backbone registry, the two-phase fit, checkpoints, strategy, report.

``fit.train(TrainConfig)`` is the stage. ``backbones`` and ``checks`` are TF-free so the CLI
can validate options before TensorFlow loads; importing this package imports nothing heavy.
"""
