"""The grabber's shutdown is ordered — the source is never closed during a read."""

from __future__ import annotations

import threading
import time

import numpy as np

from edgecls.runtime.grabber import FrameGrabber
from edgecls.runtime.sources import FrameSource

STUCK_READ_S = 0.6  # a read that outlives the stop timeout below
STOP_TIMEOUT_S = 0.1


class HangingSource(FrameSource):
    """A live source whose second read blocks (a camera that stopped answering); records overlaps."""

    name = "hanging camera"
    is_live = True

    def __init__(self) -> None:
        self.reads = 0
        self.reading = threading.Event()
        self.closed_during_read = False
        self.closed = threading.Event()

    def read(self):
        self.reads += 1
        self.reading.set()
        try:
            if self.reads > 1:
                time.sleep(STUCK_READ_S)
            if self.closed.is_set():
                raise RuntimeError("read from a closed device")  # what a real driver does
            return True, np.zeros((4, 4, 3), np.uint8)
        finally:
            self.reading.clear()

    def close(self) -> None:
        if self.reading.is_set():
            self.closed_during_read = True
        self.closed.set()

    def reopen(self) -> bool:
        return True


def test_shutdown_never_closes_the_source_while_the_thread_reads_it():
    src = HangingSource()
    grabber = FrameGrabber(src).start()
    grabber.stop_timeout_s = STOP_TIMEOUT_S
    assert grabber.get(timeout=2.0) is not None
    while src.reads < 2:  # the thread is now inside the hanging read
        time.sleep(0.01)
    t0 = time.monotonic()
    grabber.shutdown()
    assert time.monotonic() - t0 < STUCK_READ_S  # shutdown does not hang with the camera
    assert not src.closed.is_set()  # not closed under the reader's feet...
    grabber._thread.join(5.0)
    assert src.closed.is_set() and not src.closed_during_read  # ...but closed once the read returned
    grabber.shutdown()  # idempotent: closed once


def test_shutdown_of_an_idle_grabber_stops_then_closes():
    src = HangingSource()
    src.reads = -10**9  # never hangs
    grabber = FrameGrabber(src, latest_only=True).start()
    assert grabber.get(timeout=2.0) is not None
    grabber.shutdown()
    assert not grabber._thread.is_alive() and src.closed.is_set() and not src.closed_during_read
