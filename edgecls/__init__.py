"""edgecls: train, prune, quantize and run image classifiers on small computers.

Importing the package imports nothing heavy: TensorFlow is only loaded by the host-side
modules (through :mod:`edgecls.core.keras`), never by :mod:`edgecls.runtime`.
"""

__version__ = "0.1.0"
