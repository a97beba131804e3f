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
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def quiet_native_stderr():
    """Hold back what TensorFlow's C++ side prints, unless something goes wrong.

    TF 2.21 logs through absl before ``absl::InitializeLog()`` runs, which ignores
    TF_CPP_MIN_LOG_LEVEL: every command would start with oneDNN and "no CUDA drivers" lines,
    and the converter prints its internal flags. The stderr file descriptor goes to a temp
    file for the block; if the block raises, what was held back is replayed so a failure
    keeps its log. ``EDGECLS_TF_VERBOSE=1`` turns this off.
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
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            held.seek(0)
            os.write(saved, held.read())
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


with quiet_native_stderr():
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    # Device discovery logs the CUDA probe too; do it now, while quiet.
    tf.config.list_physical_devices()

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":  # pragma: no cover - a user overrode it
    raise ImportError("edgecls needs TF_USE_LEGACY_KERAS=1 (Keras 2 via tf_keras) for tfmot")

__all__ = ["tf", "keras", "quiet_native_stderr"]
