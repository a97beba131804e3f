"""Frame sources behind one interface: cameras, video files, image folders, Picamera2, GStreamer.

Every source yields RGB uint8 frames from ``read() -> (ok, frame)``; ``ok`` is False at the end
of a file/folder or when a camera stops delivering. Live sources also have ``reopen()``, used by
the grabber to recover from a camera that drops out mid-run.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.core.orientation import apply_orientation, exif_orientation
from edgecls.core.quiet import quiet_native_stderr

log = logging.getLogger("edgecls.camera")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_FPS = 30.0  # when a camera or file does not report its frame rate
PICAMERA_SPECS = ("picamera", "picamera2", "csi")
PICAMERA_HINT = (
    "picamera2 not found: on Raspberry Pi OS run 'sudo apt install python3-picamera2' "
    "and create the venv with --system-site-packages"
)
SOURCE_HINT = "give a camera index, /dev/videoN, a video file, an image folder, 'picamera' or a GStreamer pipeline"


class FrameSource:
    """Base class: subclasses fill ``read``/``close`` and set ``name``, ``fps``, ``is_live``."""

    name: str = "source"
    fps: float = DEFAULT_FPS
    is_live: bool = False
    skipped: list[str] = []
    """Files the source could not decode and passed over (an image folder's), in order."""

    def read(self) -> tuple[bool, Optional[np.ndarray]]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        pass

    def reopen(self) -> bool:
        """Try to open a live source again after it failed; True when it works again."""
        return False

    def expected_frames(self) -> Optional[int]:
        """Frames a file declares it holds (None: unknown or live), to notice a truncated file."""
        return None

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bgrx_to_rgb(frame: np.ndarray) -> np.ndarray:
    """Picamera2's XRGB8888 arrives as B,G,R,X bytes per pixel: reverse the first three channels."""
    return np.ascontiguousarray(frame[:, :, 2::-1])


def _cv2():
    import cv2

    return cv2


class _QuietOpenCV:
    """Silence OpenCV's own warnings while probing (we print one clear error instead)."""

    def __enter__(self) -> None:
        cv2 = _cv2()
        self._logging = getattr(getattr(cv2, "utils", None), "logging", None)
        if self._logging is not None:
            self._level = self._logging.getLogLevel()
            self._logging.setLogLevel(self._logging.LOG_LEVEL_ERROR)

    def __exit__(self, *exc: Any) -> None:
        if self._logging is not None:
            self._logging.setLogLevel(self._level)


class CvCaptureSource(FrameSource):
    """cv2.VideoCapture: USB webcams (V4L2), video files and GStreamer pipelines."""

    def __init__(self, kind: str, target: Any, *, width: int, height: int, name: str) -> None:
        self.kind, self.target, self.width, self.height, self.name = kind, target, width, height, name
        self.is_live = kind in ("camera", "gstreamer")
        self.cap = None
        self.tried: list[str] = []
        if not self._open():
            raise EdgeclsError(self._open_error())
        fps = float(self.cap.get(_cv2().CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 < fps < 1000 else DEFAULT_FPS

    def _attempts(self) -> list[tuple[str, Any, Optional[int]]]:
        cv2 = _cv2()
        if self.kind == "camera":
            out = []
            if sys.platform.startswith("linux") and hasattr(cv2, "CAP_V4L2"):
                dev = self.target if isinstance(self.target, str) else f"/dev/video{self.target}"
                out.append((f"V4L2 {dev}", self.target, cv2.CAP_V4L2))
            out.append(("CAP_ANY", self.target, cv2.CAP_ANY))
            return out
        if self.kind == "gstreamer":
            return [("GStreamer", self.target, cv2.CAP_GSTREAMER)]
        return [("FFmpeg/CAP_ANY", self.target, None)]

    def _open(self) -> bool:
        cv2 = _cv2()
        self.tried = []
        for label, target, api in self._attempts():
            self.tried.append(label)
            with _QuietOpenCV():
                cap = cv2.VideoCapture(target) if api is None else cv2.VideoCapture(target, api)
            if cap is not None and cap.isOpened():
                if self.kind == "camera":
                    # Keep the driver queue short: we want the newest frame, not a backlog.
                    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
                self.cap = cap
                return True
            if cap is not None:
                cap.release()
        return False

    def _open_error(self) -> str:
        tried = ", then ".join(self.tried)
        if self.kind == "camera":
            return (
                f"could not open camera {self.target} (tried {tried}); check 'ls /dev/video*', that no other "
                "program uses it, and for a CSI camera use --source picamera"
            )
        if self.kind == "gstreamer":
            gst = "" if cv2_has("GStreamer") else " (this OpenCV build has no GStreamer support)"
            return f"could not open GStreamer pipeline {self.target!r}{gst}"
        return f"could not open video file {self.target} (tried {tried}); is it a video FFmpeg can read?"

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        if self.cap is None:
            return False, None
        ok, frame = self.cap.read()
        if not ok or frame is None:
            return False, None
        return True, _cv2().cvtColor(frame, _cv2().COLOR_BGR2RGB)

    def reopen(self) -> bool:
        if not self.is_live:
            return False
        self.close()
        return self._open()

    def expected_frames(self) -> Optional[int]:
        """The frame count a video file's header declares (None for live sources or when unknown)."""
        if self.is_live or self.cap is None:
            return None
        n = int(self.cap.get(_cv2().CAP_PROP_FRAME_COUNT) or 0)
        return n if n > 0 else None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class ImageFolderSource(FrameSource):
    """Sorted image files, one frame each (unreadable files are skipped with a warning)."""

    def __init__(self, files: list[Path], *, name: str, fps: float = DEFAULT_FPS) -> None:
        self.files, self.name, self.fps = files, name, fps
        self._i = 0
        self.skipped: list[str] = []

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        cv2 = _cv2()
        while self._i < len(self.files):
            path = self.files[self._i]
            self._i += 1
            bgr, problem = _decode_image_file(path)
            if bgr is None:
                log.warning("skipping %s image %s", problem, path)
                self.skipped.append(str(path))
                continue
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            return True, np.ascontiguousarray(apply_orientation(rgb, exif_orientation(path)))
        return False, None

    def close(self) -> None:
        self._i = len(self.files)


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def _decode_image_file(path: Path) -> tuple[Optional[np.ndarray], str]:
    """BGR pixels of one image file, or (None, why): the same files training skips are skipped here.

    libjpeg decodes a truncated JPEG into a grey lower half and says so only on stderr
    ("Premature end of JPEG file"); training's decoder refuses the file, so the device does too,
    with one log line of its own instead of libjpeg's.
    """
    cv2 = _cv2()
    try:
        raw = path.read_bytes()
    except OSError:
        return None, "unreadable"
    if not raw:
        return None, "empty (0 bytes)"
    if raw.startswith(JPEG_START) and not raw.rstrip(b"\x00\r\n ").endswith(JPEG_END):
        return None, "truncated"
    try:
        with quiet_native_stderr(replay_on_error=False):
            # OpenCV's own EXIF handling differs by version (4.x ignores it for WebP), so it is
            # turned off and the project's one rule (core.orientation, as in training) applied.
            bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:  # an absurd header makes OpenCV assert rather than return None
        return None, "undecodable"
    if bgr is None or bgr.size == 0:
        return None, "undecodable"
    return bgr, ""


class PicameraSource(FrameSource):
    """A CSI camera through Picamera2 (Raspberry Pi OS Bookworm), XRGB8888 main stream."""

    is_live = True

    def __init__(self, *, width: int, height: int) -> None:
        try:
            from picamera2 import Picamera2  # noqa: F401 - lazy: only on a Pi
        except ImportError:
            raise EdgeclsError(PICAMERA_HINT) from None
        self.width, self.height = width, height
        self.name = f"picamera {width}x{height}"
        self.cam = None
        if not self._open():
            raise EdgeclsError(
                "could not start the CSI camera with Picamera2; check it with 'rpicam-hello' "
                "and that no other program uses it"
            )

    def _open(self) -> bool:
        from picamera2 import Picamera2

        try:
            cam = Picamera2()
            config = cam.create_video_configuration(main={"size": (self.width, self.height), "format": "XRGB8888"})
            cam.configure(config)
            cam.start()
        except Exception as e:  # noqa: BLE001 - libcamera raises RuntimeError/IndexError/...
            log.warning("Picamera2 failed to start: %s", e)
            return False
        self.cam = cam
        return True

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        if self.cam is None:
            return False, None
        try:
            frame = self.cam.capture_array("main")
        except Exception as e:  # noqa: BLE001
            log.warning("Picamera2 capture failed: %s", e)
            return False, None
        return True, bgrx_to_rgb(frame)

    def reopen(self) -> bool:
        self.close()
        return self._open()

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop()
                self.cam.close()
            except Exception:  # noqa: BLE001 - closing a dead camera must not mask the real error
                pass
            self.cam = None


def cv2_has(feature: str) -> bool:
    """Whether this OpenCV build lists ``feature`` as YES (GStreamer, v4l/v4l2, GUI...)."""
    info = _cv2().getBuildInformation()
    m = re.search(rf"^\s*{re.escape(feature)}:\s*(\S+)", info, re.MULTILINE | re.IGNORECASE)
    return bool(m) and m.group(1).upper() not in ("NO", "NONE")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def open_source(spec: str, *, width: int = 640, height: int = 480) -> FrameSource:
    """Open what ``spec`` names; one clear EdgeclsError when it cannot be opened."""
    spec = str(spec).strip()
    if not spec:
        raise EdgeclsError(f"empty --source; {SOURCE_HINT}")
    if spec.lower() in PICAMERA_SPECS:
        return PicameraSource(width=width, height=height)
    if "!" in spec:
        return CvCaptureSource("gstreamer", spec, width=width, height=height, name=f"gstreamer {spec}")
    if spec.isdigit():
        return CvCaptureSource("camera", int(spec), width=width, height=height, name=f"camera {spec}")
    if re.fullmatch(r"/dev/video\d+", spec):
        if not Path(spec).exists():
            raise EdgeclsError(f"could not open camera {spec} (no such device); check 'ls /dev/video*'")
        return CvCaptureSource("camera", spec, width=width, height=height, name=f"camera {spec}")
    path = Path(spec)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise EdgeclsError(f"no images in folder {path} (looked for {', '.join(IMAGE_SUFFIXES)})")
        return ImageFolderSource(files, name=f"folder {path}")
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFolderSource([path], name=f"image {path}")
        return CvCaptureSource("file", str(path), width=width, height=height, name=f"video {path}")
    raise EdgeclsError(f"source not found: {spec} ({SOURCE_HINT})")
