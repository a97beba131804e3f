"""The Raspberry Pi AI Camera in the camera loop: the network runs on the sensor, the Pi reads scores.

``edgecls camera --source imx500 --model network.rpk`` uses Picamera2's IMX500 helper (Raspberry
Pi OS: ``sudo apt install imx500-all python3-picamera2``)::

    imx500 = IMX500(rpk)                      # uploads the network firmware (minutes the first time)
    picam2 = Picamera2(imx500.camera_num)
    request = picam2.capture_request()        # one frame and its inference result, together
    outputs = imx500.get_outputs(request.get_metadata())   # [scores of shape [C]] or None

Nothing runs on the Pi's CPU but reading: :class:`Imx500Source` yields :class:`SensorFrame`\\ s
(the RGB frame for overlay, web view, MQTT and capture, carrying the scores of the *same* request),
and :class:`SensorClassifier` stands where the TFLite ``Classifier`` stands in the loop: its
``preprocess`` takes the frame's scores, ``invoke`` passes them on, ``postprocess`` returns them.
The network's softmax is inside it (edgecls exports probabilities): no second softmax here.

Only hardware proves :class:`Imx500Source`; the rest is tested with recorded outputs and with
Picamera2's own parsing code (tests/test_imx500_runtime.py).
"""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.runtime.classifier import LABELS_FILENAME, NO_LABELS_SOURCE, read_labels_file
from edgecls.runtime.latency import percentiles
from edgecls.runtime.scores import Category, top_k
from edgecls.runtime.sources import FrameSource, bgrx_to_rgb

log = logging.getLogger("edgecls.camera")

SOURCE_NAME = "imx500"
RPK_SUFFIX = ".rpk"
RUNTIME = "imx500"
FIRMWARE_TIMEOUT_S = 600.0  # the first upload of a network over I2C takes minutes (Raspberry Pi's docs)
FIRMWARE_LOG_EVERY_S = 15.0
MISSING_OUTPUT_FRAMES = 30  # consecutive frames without an inference result before the source counts as failed
KPI_WINDOW = 10_000
HINT = ("the IMX500 needs Raspberry Pi OS with 'sudo apt install imx500-all python3-picamera2' "
        "(a venv made with --system-site-packages)")


def is_imx500_source(spec: Any) -> bool:
    return str(spec).strip().lower() == SOURCE_NAME


def check_model_for_source(model: str, source: Any) -> None:
    """An .rpk only runs on the sensor; a .tflite never does. One line for either mistake."""
    rpk = str(model).lower().endswith(RPK_SUFFIX)
    if rpk and not is_imx500_source(source):
        raise EdgeclsError(f"{model} is an IMX500 network: it runs on the AI Camera's sensor; use --source imx500")
    if is_imx500_source(source) and not rpk:
        raise EdgeclsError(f"--source imx500 runs a network.rpk on the sensor (made on the Pi by imx500-package from "
                           f"'edgecls export RUN --imx500'); {model} is not one")


class SensorFrame(np.ndarray):
    """An RGB frame carrying the sensor's output for the same capture (``scores``, float32 [C]) and
    its own timing (``kpi_ms``: (dnn, dsp) milliseconds from CnnKpiInfo, or None)."""

    scores: Optional[np.ndarray] = None
    kpi_ms: Optional[tuple[float, float]] = None

    @classmethod
    def wrap(cls, rgb: np.ndarray, scores: Optional[np.ndarray], kpi_ms: Optional[tuple[float, float]] = None) -> "SensorFrame":
        frame = np.asarray(rgb).view(cls)
        frame.scores = scores
        frame.kpi_ms = kpi_ms
        return frame

    def __array_finalize__(self, obj: Any) -> None:
        self.scores = getattr(obj, "scores", None)
        self.kpi_ms = getattr(obj, "kpi_ms", None)


def scores_from_outputs(outputs: Optional[Sequence[Any]]) -> Optional[np.ndarray]:
    """The class scores in what ``IMX500.get_outputs(metadata)`` returns: a list with one tensor of
    shape [C] (or [1, C] with ``add_batch``) for a classifier; None when the frame has no result yet."""
    if not outputs:
        return None
    if len(outputs) != 1:
        raise EdgeclsError(f"the network on the IMX500 has {len(outputs)} output tensors; an edgecls classifier has one")
    scores = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
    return scores if scores.size else None


class Imx500Source(FrameSource):
    """Frames and on-sensor scores from Picamera2's IMX500 helper (XRGB8888 main stream, B,G,R,X bytes)."""

    is_live = True

    def __init__(self, rpk: str | Path, *, width: int, height: int, firmware_timeout_s: float = FIRMWARE_TIMEOUT_S):
        try:
            from picamera2 import Picamera2
            from picamera2.devices import IMX500
        except ImportError as e:
            raise EdgeclsError(f"picamera2's IMX500 support does not import ({e}); {HINT}") from None
        self.rpk = Path(rpk)
        if not self.rpk.is_file():
            raise EdgeclsError(f"model not found: {self.rpk}")
        self.width, self.height = width, height
        self.name = f"imx500 {width}x{height}"
        try:
            self.imx500 = IMX500(str(self.rpk.resolve()))  # must come before Picamera2 (its docs)
        except RuntimeError as e:  # "IMX500: Requested camera dev-node not found", firmware errors
            raise EdgeclsError(f"could not start the AI Camera with {self.rpk}: {e}; check 'rpicam-hello --list-cameras'") from None
        self._picamera2 = Picamera2
        self.cam: Any = None
        self.missing = 0
        import picamera2

        self.runtime_version = getattr(picamera2, "__version__", None)
        intrinsics = getattr(self.imx500, "network_intrinsics", None)
        self.intrinsics_labels = list(getattr(intrinsics, "labels", None) or []) or None
        self.input_size = tuple(reversed(self.imx500.get_input_size()))  # (width, height) -> (h, w)
        if not self._open():
            raise EdgeclsError("could not start the AI Camera's stream with Picamera2; check it with 'rpicam-hello'")
        self.num_outputs = self._wait_for_firmware(firmware_timeout_s)

    def _open(self) -> bool:
        try:
            cam = self._picamera2(self.imx500.camera_num)
            cam.configure(cam.create_preview_configuration(main={"size": (self.width, self.height),
                                                                 "format": "XRGB8888"}, buffer_count=12))
            cam.start()
        except Exception as e:  # noqa: BLE001 - libcamera raises RuntimeError/IndexError/...
            log.warning("Picamera2 failed to start the AI Camera: %s", e)
            return False
        self.cam = cam
        return True

    def _wait_for_firmware(self, timeout_s: float) -> int:
        """Block until the sensor returns its first result (the network firmware is loaded); its length."""
        t0 = last = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            scores = scores_from_outputs(self.imx500.get_outputs(self.cam.capture_metadata()))
            if scores is not None:
                return int(scores.size)
            if time.monotonic() - last > FIRMWARE_LOG_EVERY_S:
                last = time.monotonic()
                log.warning("waiting for the IMX500 to load %s (%.0f s; a network's first upload takes minutes)",
                            self.rpk.name, last - t0)
        self.close()
        raise EdgeclsError(f"the IMX500 returned no inference result within {timeout_s:.0f} s of loading {self.rpk}")

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        if self.cam is None:
            return False, None
        while True:
            try:
                request = self.cam.capture_request()
                try:
                    rgb = bgrx_to_rgb(request.make_array("main"))
                    metadata = request.get_metadata()
                finally:
                    request.release()
            except Exception as e:  # noqa: BLE001
                log.warning("Picamera2 capture failed: %s", e)
                return False, None
            scores = scores_from_outputs(self.imx500.get_outputs(metadata))
            if scores is not None:
                self.missing = 0
                return True, SensorFrame.wrap(rgb, scores, self.imx500.get_kpi_info(metadata))
            self.missing += 1  # a frame the network has not processed: skipped, not shown with old scores
            if self.missing >= MISSING_OUTPUT_FRAMES:
                log.warning("%d frames in a row without an inference result from the IMX500", self.missing)
                return False, None

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


class SensorClassifier:
    """The loop's classifier for on-sensor inference: the scores come with each :class:`SensorFrame`."""

    runtime = RUNTIME
    input_dtype = np.dtype(np.float32)
    output_dtype = np.dtype(np.float32)

    def __init__(self, model_path: str | Path, *, num_classes: int, input_size: tuple[int, int],
                 labels: Optional[Sequence[str]] = None, intrinsics_labels: Optional[Sequence[str]] = None,
                 runtime_version: Optional[str] = None) -> None:
        self.model_path = Path(model_path)
        self.num_classes = int(num_classes)
        self.input_size = tuple(input_size)
        self.runtime_version = runtime_version
        self.labels, self.labels_source = self._resolve_labels(labels, intrinsics_labels)
        self.unknown_threshold: Optional[float] = None
        """The sensor's package carries no unknown rule: ``--unknown-threshold`` sets one."""
        self.unknown_class: Optional[int] = None
        if len(self.labels) != self.num_classes:
            raise EdgeclsError(f"{len(self.labels)} labels ({self.labels_source}) but the network on the sensor gives "
                               f"{self.num_classes} scores; pass the labels.txt of this export (--labels)")
        self._kpi: collections.deque[tuple[float, float]] = collections.deque(maxlen=KPI_WINDOW)

    def _resolve_labels(self, given: Optional[Sequence[str]], intrinsics: Optional[Sequence[str]]) -> tuple[list[str], str]:
        if given is not None:
            return list(given), "given"
        beside = self.model_path.with_name(LABELS_FILENAME)
        if beside.is_file():
            return read_labels_file(beside), str(beside)
        if intrinsics:
            return list(intrinsics), "network intrinsics (rpk)"
        return [f"class_{i}" for i in range(self.num_classes)], NO_LABELS_SOURCE

    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        """The frame's own sensor scores as the 'tensor' (nothing to resize: the sensor saw the scene itself)."""
        scores = getattr(frame, "scores", None)
        if scores is None:
            raise EdgeclsError("a frame reached the IMX500 classifier without the sensor's scores (not from --source imx500)")
        kpi = getattr(frame, "kpi_ms", None)
        if kpi is not None:
            self._kpi.append(kpi)
        return np.asarray(scores, np.float32)[None]

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        return tensor[0]

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        scores = np.asarray(raw, np.float32).reshape(-1)
        if scores.size != self.num_classes:
            raise EdgeclsError(f"the sensor returned {scores.size} scores, the network had {self.num_classes}")
        return scores

    def probabilities(self, frame: np.ndarray) -> np.ndarray:
        return self.postprocess(self.invoke(self.preprocess(frame)))

    def classify(self, frame: np.ndarray, k: int = 3, threshold: float = 0.0) -> list[Category]:
        return top_k(self.probabilities(frame), k, threshold, self.labels)

    def report(self) -> dict[str, Any]:
        """The sensor's own timing per frame (CnnKpiInfo): the host cannot time on-sensor inference."""
        kpi = list(self._kpi)
        return {"imx500": {"dnn_ms": percentiles(k[0] for k in kpi), "dsp_ms": percentiles(k[1] for k in kpi)}}

    def describe(self) -> dict:
        return {"model": str(self.model_path), "runtime": self.runtime, "runtime_version": self.runtime_version,
                "input_shape": [1, *self.input_size, 3], "input_dtype": "on-sensor", "output_shape": [self.num_classes],
                "output_dtype": "float32", "labels": self.labels, "labels_source": self.labels_source}


def open_imx500(model: str, labels: Optional[Sequence[str]], *, width: int, height: int,
                source: Optional[FrameSource] = None) -> tuple[SensorClassifier, FrameSource]:
    """The loop's classifier and source for ``--source imx500``; ``source`` replaces the camera (a recording
    of SensorFrames, for embedding and tests): it must tell ``num_outputs`` and ``input_size``."""
    src = source if source is not None else Imx500Source(model, width=width, height=height)
    clf = SensorClassifier(model, num_classes=src.num_outputs, input_size=src.input_size, labels=labels,
                           intrinsics_labels=getattr(src, "intrinsics_labels", None),
                           runtime_version=getattr(src, "runtime_version", None))
    return clf, src
