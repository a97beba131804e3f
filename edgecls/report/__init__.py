"""The run's report page: one self-contained RUN/report.html, and ``edgecls explain``.

A layer above ``optimize``: it reads everything a run holds (data, training, exports, devices).
``collect`` (host side, TensorFlow) keeps RUN/report/ up to date: predictions, Grad-CAM heatmaps
(``gradcam``), the images each export changed; ``assemble`` (no TensorFlow) turns the run's files
into the page's content and ``page`` draws it. ``refresh.write_report`` is the one call a stage
makes. Importing this package imports nothing heavy.
"""
