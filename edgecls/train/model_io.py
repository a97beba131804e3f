"""Keras model files: the one loader and the one atomic saver of ``.keras`` files.

Training, pruning, export and parity all read and write models through here, so a model a
stage writes is either complete under its final name or not there at all.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from edgecls.core.errors import EdgeclsError
from edgecls.core.io import atomic_path
from edgecls.core.keras import keras


def load_model(path: str | os.PathLike) -> Any:
    """A saved ``.keras`` model (tf_keras format), uncompiled, ready for inference/export."""
    path = Path(path)
    if not path.is_file():
        raise EdgeclsError(f"model not found: {path} (train one with 'edgecls train')")
    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
        # A .keras file is a zip holding config.json: anything else (a .tflite, a truncated copy) lands here.
        raise EdgeclsError(f"cannot load Keras model {path}: not a .keras model saved by edgecls "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'})") from None


def save_model(model: Any, path: str | os.PathLike) -> Path:
    """Save atomically: Keras writes a temp ``.keras`` beside the target, which is then renamed."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return Path(path)
