"""The frame reader of the loop, and the watchdog that replaces it when a live source goes silent."""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from edgecls.core.device_config import CameraConfig
from edgecls.core.errors import EdgeclsError
from edgecls.runtime.classifier import Classifier
from edgecls.runtime.grabber import FrameGrabber, InlineReader
from edgecls.runtime.latency import StampedSource

log = logging.getLogger("edgecls.camera")

WATCHDOG_BACKOFF_S = 0.5  # doubled per watchdog reopen attempt: 0.5, 1, 2 s


class Readers:
    """Makes the frame reader for a source, and the watchdog that replaces it when frames stop.

    The grabber reopens a camera whose reads *fail*; a camera that goes *silent* (a read that
    never returns: USB hub brown-out, a wedged driver) is caught here by the timeout on ``get``.
    """

    def __init__(self, cfg: CameraConfig, clf: Classifier, source: StampedSource, pace: Optional[float]) -> None:
        self.cfg, self.clf, self.source, self.pace = cfg, clf, source, pace
        self.past_dropped = 0
        self.past_reopens = 0
        self.stalls = 0
        self.current: Any = None

    def make(self) -> Any:
        src, clf = self.source, self.clf
        if self.cfg.pipeline:
            self.current = FrameGrabber(src, transform=clf.preprocess, pace_fps=self.pace)
        elif src.is_live:
            self.current = FrameGrabber(src, transform=None)  # still newest-frame only; preprocess inline
        else:
            self.current = InlineReader(src, transform=clf.preprocess, pace_fps=self.pace)
        return self.current

    @property
    def dropped(self) -> int:
        """Frames dropped by every reader of this run."""
        return self.past_dropped + (self.current.dropped if self.current is not None else 0)

    @property
    def reopens(self) -> int:
        """Reopens by the grabbers (failed reads) and by the watchdog (silence)."""
        return self.past_reopens + (self.current.reopens if self.current is not None else 0)

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()

    def shutdown(self) -> None:
        """At the end of the run: stop the reader, then close the source (never during a read)."""
        if self.current is not None:
            self.current.shutdown()
        else:
            self.source.close()

    @property
    def timeout_s(self) -> Optional[float]:
        return self.cfg.stall_timeout if (self.source.is_live and self.cfg.stall_timeout > 0) else None

    def recover(self, reader: Any) -> Any:
        """The source delivered nothing for the timeout: reopen it (bounded, with backoff) or give up."""
        self.stalls += 1
        name, timeout = self.source.name, self.cfg.stall_timeout
        reader.stop()
        self.past_dropped += reader.dropped
        self.past_reopens += reader.reopens
        self.current = None  # counted: a failure below must not count it twice
        for attempt in range(1, self.cfg.stall_retries + 1):
            wait_s = WATCHDOG_BACKOFF_S * 2 ** (attempt - 1)
            log.warning("watchdog: no frame from %s for %gs; reopening in %.1fs (attempt %d/%d)",
                        name, timeout, wait_s, attempt, self.cfg.stall_retries)
            time.sleep(wait_s)
            if self.source.reopen():
                self.past_reopens += 1
                log.warning("watchdog: %s reopened", name)
                return self.make().start()
        raise EdgeclsError(
            f"no frame from {name} for {timeout:g}s and reopening it failed {self.cfg.stall_retries} time(s); "
            "exiting so that systemd restarts the service (check the camera and its cable)"
        )
