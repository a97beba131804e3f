"""The one place the host side gets Keras from.

tensorflow-model-optimization only supports Keras 2 (``tf_keras``), and TensorFlow 2.16+
defaults to Keras 3. ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first
imported so that ``tf.keras`` and tfmot both resolve to ``tf_keras``; every host module
imports ``tf`` and ``keras`` from here, never ``import keras``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edgecls.core.quiet import quiet_native_stderr  # noqa: E402  (stdlib only)


with quiet_native_stderr():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    # Device discovery logs the CUDA probe too; do it now, while quiet.
    tf.config.list_physical_devices()

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":  # pragma: no cover - a user overrode it
    raise ImportError("edgecls needs TF_USE_LEGACY_KERAS=1 (Keras 2 via tf_keras) for tfmot")

__all__ = ["tf", "keras", "quiet_native_stderr"]
