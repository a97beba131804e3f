"""The one place the host side gets Keras from.

tensorflow-model-optimization only supports Keras 2 (``tf_keras``), and TensorFlow 2.16+
defaults to Keras 3. ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first
imported so that ``tf.keras`` and tfmot both resolve to ``tf_keras``; every host module
imports ``tf`` and ``keras`` from here, never ``import keras``.
"""

from __future__ import annotations

import contextlib
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what TensorFlow's C++ side prints while it loads.

    TF 2.21 logs through absl before ``absl::InitializeLog()`` runs, which ignores
    TF_CPP_MIN_LOG_LEVEL: every command would start with oneDNN and "no CUDA drivers" lines.
    Only the file descriptor is redirected for the import; Python exceptions still surface.
    ``EDGECLS_TF_VERBOSE=1`` keeps them (for debugging a broken install).
    """
    if os.environ.get("EDGECLS_TF_VERBOSE") == "1":
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured/replaced stderr (pytest, IDEs)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


with _quiet_native_stderr():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    # Device discovery logs the CUDA probe too; do it now, while quiet.
    tf.config.list_physical_devices()

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":  # pragma: no cover - a user overrode it
    raise ImportError("edgecls needs TF_USE_LEGACY_KERAS=1 (Keras 2 via tf_keras) for tfmot")

__all__ = ["tf", "keras"]
