"""Read (and preprocess) frames on a background thread while the main thread runs the model.

Two policies:

* live sources (cameras): keep only the newest frame. A camera produces frames whether we
  are ready or not; queueing them shows the user the past (stale-frame lag). Older frames are
  dropped and counted.
* files and folders: a short bounded queue, nothing dropped; the reader simply runs ahead.

Decoding and resizing run in OpenCV/numpy code that releases the GIL, and so does the TFLite
invoke, so the two threads really overlap on a multi-core board.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.runtime.sources import FrameSource

log = logging.getLogger("edgecls.camera")

FILE_QUEUE_FRAMES = 4  # read-ahead for files/folders: enough to absorb jitter, little memory
REOPEN_ATTEMPTS = 5
REOPEN_BACKOFF_S = 0.5  # doubled on each failed attempt: 0.5, 1, 2, 4, 8 s
STOP_TIMEOUT_S = 5.0  # how long shutdown() waits for a read in progress before handing the close to the thread


@dataclass
class Frame:
    """One captured frame and, when a transform is given, its model input tensor."""

    index: int
    rgb: np.ndarray
    tensor: Optional[np.ndarray]
    capture_ms: float
    preprocess_ms: float


Transform = Callable[[np.ndarray], np.ndarray]


# A file that ends this many frames short of its declared count is reported as truncated
# (containers round their counts; a frame or two of slack avoids false alarms).
TRUNCATION_SLACK_FRAMES = 2


def warn_if_truncated(source: FrameSource, produced: int) -> Optional[str]:
    """Log (and return) a warning when a video file ended well before the frame count it declares."""
    expected = source.expected_frames()
    if expected is None or produced + TRUNCATION_SLACK_FRAMES >= expected:
        return None
    msg = (f"{source.name} ended after {produced} of the {expected} frames its header declares: "
           "the file looks truncated or damaged")
    log.warning(msg)
    return msg


def _read_one(source: FrameSource, transform: Optional[Transform], index: int) -> Optional[Frame]:
    t0 = time.perf_counter()
    ok, rgb = source.read()
    t1 = time.perf_counter()
    if not ok or rgb is None:
        return None
    tensor = transform(rgb) if transform is not None else None
    t2 = time.perf_counter()
    return Frame(index, rgb, tensor, (t1 - t0) * 1e3, (t2 - t1) * 1e3)


class InlineReader:
    """The same interface as :class:`FrameGrabber`, all on the caller's thread (no overlap)."""

    def __init__(self, source: FrameSource, *, transform: Optional[Transform] = None, pace_fps: Optional[float] = None):
        self.source, self.transform, self.pace_fps = source, transform, pace_fps
        self.dropped = 0
        self.reopens = 0
        self.produced = 0
        self.truncated: Optional[str] = None
        self._t0: Optional[float] = None

    def start(self) -> "InlineReader":
        return self

    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        if self.pace_fps:
            self._t0 = self._t0 or time.perf_counter()
            delay = self._t0 + self.produced / self.pace_fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        frame = _read_one(self.source, self.transform, self.produced)
        if frame is not None:
            self.produced += 1
        elif not self.source.is_live:
            self.truncated = warn_if_truncated(self.source, self.produced)
        return frame

    def stop(self) -> None:
        pass

    def shutdown(self) -> None:
        """Stop, then close the source (same order as :meth:`FrameGrabber.shutdown`)."""
        self.stop()
        self.source.close()


class FrameGrabber:
    """A background reader; ``get()`` returns the next frame to process, or None at the end."""

    def __init__(
        self,
        source: FrameSource,
        *,
        transform: Optional[Transform] = None,
        latest_only: Optional[bool] = None,
        queue_frames: int = FILE_QUEUE_FRAMES,
        pace_fps: Optional[float] = None,
        reopen_attempts: int = REOPEN_ATTEMPTS,
        reopen_backoff_s: float = REOPEN_BACKOFF_S,
    ) -> None:
        self.source = source
        self.transform = transform
        self.latest_only = source.is_live if latest_only is None else latest_only
        self.capacity = 1 if self.latest_only else max(1, queue_frames)
        self.pace_fps = pace_fps
        self.reopen_attempts = reopen_attempts
        self.reopen_backoff_s = reopen_backoff_s
        self.dropped = 0
        self.reopens = 0
        self.produced = 0
        self._items: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._done = False
        self._error: Optional[BaseException] = None
        self.stop_timeout_s = STOP_TIMEOUT_S
        self.truncated: Optional[str] = None
        # Set by shutdown() when the thread outlives its timeout: the thread closes the source
        # itself after its last read, so close() never runs while read() is in progress.
        self._close_on_exit = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="edgecls-grabber", daemon=True)

    def start(self) -> "FrameGrabber":
        self._thread.start()
        return self

    # -- producer ---------------------------------------------------------------------------
    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            while not self._stop.is_set():
                if self.pace_fps:
                    delay = t0 + self.produced / self.pace_fps - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        break
                frame = _read_one(self.source, self.transform, self.produced)
                if frame is None:
                    if self.source.is_live and self._recover():
                        continue
                    if not self.source.is_live and not self._stop.is_set():
                        self.truncated = warn_if_truncated(self.source, self.produced)
                    break
                self.produced += 1
                self._put(frame)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._error = e
        finally:
            with self._cond:
                self._done = True
                close_now = self._close_on_exit and not self._closed
                self._closed = self._closed or close_now
                self._cond.notify_all()
            if close_now:
                self._close_source()

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self.latest_only:
                if self._items:
                    self._items.clear()
                    self.dropped += 1  # the consumer never saw it: newer beats older
                self._items.append(frame)
            else:
                while len(self._items) >= self.capacity and not self._stop.is_set():
                    self._cond.wait(0.1)
                self._items.append(frame)
            self._cond.notify_all()

    def _recover(self) -> bool:
        """A live source stopped delivering: reopen it, with bounded retries and backoff."""
        for attempt in range(1, self.reopen_attempts + 1):
            wait_s = self.reopen_backoff_s * 2 ** (attempt - 1)
            log.warning(
                "%s stopped delivering frames; reopening in %.1fs (attempt %d/%d)",
                self.source.name, wait_s, attempt, self.reopen_attempts,
            )
            if self._stop.wait(wait_s):
                return False
            if self.source.reopen():
                self.reopens += 1
                log.warning("%s reopened", self.source.name)
                return True
        raise EdgeclsError(
            f"{self.source.name} stopped delivering frames and could not be reopened "
            f"after {self.reopen_attempts} attempts; check the cable/connection and restart"
        )

    # -- consumer ---------------------------------------------------------------------------
    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame (the newest for live sources); None when the stream ended or stop() was called."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._done or self._stop.is_set():
                    if self._error is not None:
                        raise self._error
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                # Wake up regularly so Ctrl-C reaches the main thread promptly.
                self._cond.wait(0.1 if remaining is None else min(0.1, remaining))
            frame = self._items.popleft()
            self._cond.notify_all()
            return frame

    def stop(self) -> bool:
        """Ask the thread to stop and wait for it; True when it has ended."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.stop_timeout_s)
        return not self._thread.is_alive()

    def shutdown(self) -> None:
        """Stop the thread, then close the source: never close a source the thread may still be reading.

        A read that blocks past the timeout (a hung camera) keeps the source open until it
        returns; the thread then closes it itself, and this returns without waiting for it.
        """
        ended = self.stop()
        with self._cond:
            if self._closed:
                return
            if not ended and not self._done:
                self._close_on_exit = True
                log.warning("%s did not return from a read within %.0fs; it is closed when the read returns",
                            self.source.name, self.stop_timeout_s)
                return
            self._closed = True
        self._close_source()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as e:  # noqa: BLE001 - closing must not hide the reason the loop ended
            log.warning("closing %s failed: %s", self.source.name, e)
