"""The two outputs that show the annotated frame: the video file (``--save``) and the window.

Both are sinks (:mod:`edgecls.runtime.sinks`) and both read :meth:`FrameResult.annotated`, which draws
the overlay once per frame whichever of them asks first. The video is written to a ``.partial``
file and renamed when complete, so a killed run never leaves a truncated file under the user's name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from edgecls.core.errors import EdgeclsError
from edgecls.runtime.sinks import FrameResult

WINDOW_NAME = "edgecls"
QUIT_KEYS = (ord("q"), 27)  # q, Esc


class VideoSink:
    """The annotated frames as an mp4 (mp4v) at the source's frame rate."""

    def __init__(self, path: str, fps: float) -> None:
        from edgecls.core.io import ensure_writable

        self.path, self.fps = Path(path), fps
        ensure_writable(self.path, "video (--save)")  # before the first frame, not after the model loaded
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix or '.mp4'}")
        self.writer: Any = None
        self.frames = 0

    def handle(self, result: FrameResult) -> None:
        import cv2

        bgr = result.annotated()
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = bgr.shape[:2]
            self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                self.writer = None
                raise EdgeclsError(self._why_not_opened())
        self.writer.write(bgr)
        self.frames += 1

    def _why_not_opened(self) -> str:
        """OpenCV says only "not opened": the file itself is tried, so a folder the user cannot write
        is not blamed on the codec."""
        from edgecls.core.io import describe_os_error

        try:
            with open(self.partial, "wb"):
                pass
        except OSError as e:
            return f"cannot write video {self.path}: {describe_os_error(e).replace(str(self.partial), str(self.path))}"
        finally:
            self.partial.unlink(missing_ok=True)
        return f"could not write video {self.path}: this OpenCV build cannot encode mp4v; save as .avi or install opencv-python"

    def report(self) -> dict[str, Any]:
        return {"video": {"path": str(self.path), "frames": self.frames}}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.partial, self.path)


class WindowSink:
    """The annotated frame in a window; q or Esc asks the loop to stop (:attr:`quit_requested`)."""

    def __init__(self) -> None:
        self.quit_requested = False

    def handle(self, result: FrameResult) -> None:
        import cv2

        cv2.imshow(WINDOW_NAME, result.annotated())
        if (cv2.waitKey(1) & 0xFF) in QUIT_KEYS:
            self.quit_requested = True

    def report(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()


def video_and_window(save: Optional[str], fps: float, window: bool) -> list[Any]:
    """The display sinks a run asks for (the window last: its key press ends the frame)."""
    return ([VideoSink(save, fps)] if save else []) + ([WindowSink()] if window else [])
