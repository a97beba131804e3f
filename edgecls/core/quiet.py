"""Hold back what native libraries print on stderr, unless something goes wrong.

TensorFlow, its converter and the TFLite runtime log from C++ straight to file descriptor 2
(absl before ``InitializeLog()``, which ignores TF_CPP_MIN_LOG_LEVEL): every command would
start with oneDNN / "no CUDA drivers" / "Created TensorFlow Lite XNNPACK delegate" lines. Pure
standard library, so the TF-free runtime uses it too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator


def verbose() -> bool:
    """Whether the user asked to see libraries' own logs (``EDGECLS_DEBUG=1``; the older ``EDGECLS_TF_VERBOSE=1``)."""
    return os.environ.get("EDGECLS_DEBUG") == "1" or os.environ.get("EDGECLS_TF_VERBOSE") == "1"


@contextlib.contextmanager
def quiet_native_stderr(*, replay_on_error: bool = True) -> Iterator[None]:
    """Send fd 2 to a temp file for the block; replay it if the block raises.

    A failure keeps its native log (unless the caller turns its error into one clear line
    itself: ``replay_on_error=False``); a success stays quiet. ``EDGECLS_DEBUG=1`` turns this off
    (for bug reports and debugging an install).
    """
    if verbose():
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
            if replay_on_error:
                held.seek(0)
                os.write(saved, held.read())
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


# FFmpeg (inside OpenCV) prints "[mjpeg @ 0x...] dht: invalid len" and the like straight to
# stderr for every damaged frame. AV_LOG_QUIET (-8): edgecls reports what matters itself
# (a truncated video, an unreadable image) in one line.
VIDEO_LOG_ENV = {"OPENCV_FFMPEG_LOGLEVEL": "-8", "OPENCV_LOG_LEVEL": "ERROR"}


def quiet_video_logs() -> None:
    """Hold back OpenCV/FFmpeg's native log lines (read when the first capture opens); EDGECLS_DEBUG=1 keeps them."""
    if verbose():
        return
    for key, value in VIDEO_LOG_ENV.items():
        os.environ.setdefault(key, value)
