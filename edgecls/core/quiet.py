"""Hold back what native libraries print on stderr, unless something goes wrong.

TensorFlow, its converter and the TFLite runtime log from C++ straight to file descriptor 2
(absl before ``InitializeLog()``, which ignores TF_CPP_MIN_LOG_LEVEL): every command would
start with oneDNN / "no CUDA drivers" / "Created TensorFlow Lite XNNPACK delegate" lines. Pure
standard library, so the TF-free runtime uses it too.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from typing import Iterator, Sequence


def verbose() -> bool:
    """Whether the user asked to see libraries' own logs (``EDGECLS_DEBUG=1``; the older ``EDGECLS_TF_VERBOSE=1``)."""
    return os.environ.get("EDGECLS_DEBUG") == "1" or os.environ.get("EDGECLS_TF_VERBOSE") == "1"


def _redirectable_stderr() -> "int | None":
    """fd 2, flushed, when its output may be held back; None when the user asked for libraries' logs or
    stderr is not a real file descriptor (captured or replaced: pytest, IDEs)."""
    if verbose():
        return None
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    sys.stderr.flush()
    return fd


@contextlib.contextmanager
def quiet_native_stderr(*, replay_on_error: bool = True) -> Iterator[None]:
    """Send fd 2 to a temp file for the block; replay it if the block raises.

    A failure keeps its native log (unless the caller turns its error into one clear line
    itself: ``replay_on_error=False``); a success stays quiet. ``EDGECLS_DEBUG=1`` turns this off
    (for bug reports and debugging an install).
    """
    fd = _redirectable_stderr()
    if fd is None:
        yield
        return
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


# Lines native code logs while a command runs that no user can act on: oneDNN says it "supports
# DT_UINT8 only on platforms with AVX-512" (on AVX-512 machines too) the first time a uint8 image is
# transposed; the CUDA probe reports the absent GPU.
NATIVE_NOISE = (
    re.compile(rb"oneDNN supports DT_UINT8 only on platforms with AVX-512"),
    re.compile(rb"failed call to cuInit"),
    re.compile(rb"Unable to register cu(DNN|FFT|BLAS) factory"),
)


@contextlib.contextmanager
def filter_native_stderr(noise: Sequence["re.Pattern[bytes]"] = NATIVE_NOISE) -> Iterator[None]:
    """For the block, pass every line written to file descriptor 2 through, except lines matching ``noise``.

    Native libraries write to the descriptor, not to ``sys.stderr``, and at any moment (TensorFlow
    logs the oneDNN line when a tf.data graph first runs), so the filter stays in place for the whole
    command: a thread reads the lines from a pipe and writes the others on. ``EDGECLS_DEBUG=1`` keeps
    everything.
    """
    fd = _redirectable_stderr()
    if fd is None:
        yield
        return
    saved = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)

    def relay() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            for line in iter(pipe.readline, b""):
                if not any(p.search(line) for p in noise):
                    try:
                        os.write(saved, line)
                    except OSError:  # the command has ended and closed its side
                        return

    thread = threading.Thread(target=relay, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)  # the pipe's last writer here is gone: the relay reads to the end and stops
        thread.join(timeout=1)  # a child still holding the pipe keeps it open: do not wait for it
        os.close(saved)
