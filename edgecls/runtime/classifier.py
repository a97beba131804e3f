"""Classifier: one .tflite image classifier, from an RGB frame of any size to top-k labels.

Everything the model needs is read from the model itself (input size, dtype, quantization),
so the same code serves float32, float16, dynamic-range and full-int8 exports.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgecls.core.errors import EdgeclsError
from edgecls.core.rundir import read_labels
from edgecls.runtime.interpreter import load_interpreter, runtime_version
from edgecls.runtime.scores import Category, dequantize, quantize, top_k

LABELS_FILENAME = "labels.txt"
log = logging.getLogger("edgecls.classifier")
NO_LABELS_SOURCE = "none (class_<i>)"  # labels_source when the model has no labels anywhere


# The run folder's rule (one class per line, blank lines ignored); rundir is stdlib-only.
read_labels_file = read_labels


def labels_from_metadata(model_bytes: bytes) -> Optional[list[str]]:
    """Labels packed inside a .tflite by the metadata writer, without TensorFlow.

    A model with associated files is also a zip archive (the files are appended after the
    flatbuffer), so :mod:`zipfile` reads them straight from the model bytes.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as z:
            names = [n for n in z.namelist() if n.lower().endswith(".txt")]
            if not names:
                return None
            # Prefer a file that says it holds labels; else the first text file.
            names.sort(key=lambda n: (0 if "label" in n.lower() else 1, n))
            text = z.read(names[0]).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError, KeyError):
        return None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    return labels or None


def _packed_rule(model_bytes: bytes) -> tuple[Optional[float], Optional[int]]:
    """(threshold, unknown class index) of the ``edgecls.json`` export packs with the model; None for each it lacks."""
    from edgecls.core.unknown import RULE_FILE, packed_rule, read_rule_file

    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as z:
            data = z.read(RULE_FILE) if RULE_FILE in z.namelist() else b""
    except (zipfile.BadZipFile, OSError, KeyError):
        return None, None
    record = read_rule_file(data).get("unknown")
    return packed_rule(record) if isinstance(record, dict) else (None, None)


LABELS_SHOWN = 6  # names quoted per side in a conflict message; the first difference is always named


def _short(names: Sequence[str]) -> str:
    shown = ", ".join(names[:LABELS_SHOWN])
    return f"{len(names)}: {shown}" + (", ..." if len(names) > LABELS_SHOWN else "")


def labels_conflict_message(file: Path, from_file: Sequence[str], model: Path, embedded: Sequence[str],
                            labels_option: Optional[str] = None) -> str:
    """One line naming both label sets and where they first differ (and the command's labels option, if it has one)."""
    first = next((i for i, (a, b) in enumerate(zip(from_file, embedded)) if a != b), min(len(from_file), len(embedded)))
    at_file = from_file[first] if first < len(from_file) else "(none)"
    at_model = embedded[first] if first < len(embedded) else "(none)"
    return (
        f"{file} ({_short(from_file)}) disagrees with the labels embedded in {model.name} ({_short(embedded)}); "
        f"first difference at class {first}: {at_file!r} vs {at_model!r}. Remove or fix the stale labels file"
        + (f", or pass {labels_option} FILE to choose" if labels_option else "")
    )


def resize_squash(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to (height, width) ignoring aspect, like training; a no-op at the right size.

    INTER_AREA when shrinking (it averages, close to TF's antialiased bilinear), INTER_LINEAR
    when enlarging (INTER_AREA degenerates to nearest-neighbour there). A large shrink goes in
    two area steps: first by the largest whole factor that divides each side (OpenCV's fast
    box-average path), then the rest. It agrees with training's resize as closely as one step
    (docs/data.md) at about two thirds of the time, which the camera loop's grabber spends per frame.
    """
    h, w = rgb.shape[:2]
    if (h, w) == (height, width):
        return rgb
    import cv2

    if height * width >= h * w:
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    ky, kx = _whole_factor(h, height), _whole_factor(w, width)
    if ky > 1 or kx > 1:
        rgb = cv2.resize(rgb, (w // kx, h // ky), interpolation=cv2.INTER_AREA)
        if rgb.shape[:2] == (height, width):
            return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _whole_factor(size: int, target: int) -> int:
    """The largest k >= 2 that divides ``size`` and keeps ``size // k >= target``; 1 when none does."""
    for k in range(size // max(target, 1), 1, -1):
        if size % k == 0:
            return k
    return 1


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Accept HxW (gray), HxWx3 or HxWx4 (alpha dropped), any numeric type; return HxWx3 uint8."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise EdgeclsError(f"expected an RGB image HxWx3, got an array of shape {a.shape}")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float32)), 0, 255).astype(np.uint8)
    return a


class Classifier:
    """Load a .tflite classifier and run it on RGB frames.

    ``input_size`` is (height, width). Input that is int8/uint8/int16 is quantized with the input
    tensor's own scale and zero point (the exported models take raw 0-255 pixel values, so a
    uint8 input with scale 1 and zero point 0 receives the pixel bytes unchanged). int16 in/out
    is what a 16x8 model (int16 activations) may have instead of float32; it cannot be uint8.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        labels: Optional[list[str]] = None,
        num_threads: int = 2,
        xnnpack: bool = True,
        labels_option: Optional[str] = None,
    ) -> None:
        """``labels_option``: the caller's command-line option for a labels file (``--labels``), named in
        messages about labels; None when the command has none."""
        self.model_path = Path(model_path)
        self.labels_option = labels_option
        self.num_threads = int(num_threads)
        self.xnnpack = bool(xnnpack)
        self.interpreter, self.runtime = load_interpreter(
            self.model_path, num_threads=self.num_threads, xnnpack=self.xnnpack
        )
        self.runtime_version = runtime_version(self.runtime)
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) < 1:
            raise EdgeclsError(f"{self.model_path} is not an image classifier (expects 1 input, has {len(inp)})")
        self._in = inp[0]
        self._out = out[0]
        shape = tuple(int(d) for d in self._in["shape"])
        if len(shape) != 4 or shape[3] != 3:
            raise EdgeclsError(
                f"{self.model_path} is not an RGB image classifier (input shape {list(shape)}, expected [1, H, W, 3])"
            )
        self.input_size: tuple[int, int] = (shape[1], shape[2])
        self.input_dtype = np.dtype(self._in["dtype"])
        self.output_dtype = np.dtype(self._out["dtype"])
        self.input_scale, self.input_zero_point = _quant_params(self._in)
        self.output_scale, self.output_zero_point = _quant_params(self._out)
        self.num_classes = int(self._out["shape"][-1])
        model_bytes = self.model_path.read_bytes()
        self.labels, self.labels_source = self._resolve_labels(labels, model_bytes)
        self.unknown_threshold, self.unknown_class = _packed_rule(model_bytes)
        """The unknown rule packed with the model by export: its threshold (None: the model has no rule) and
        the index of its unknown class (None: trained without negatives)."""
        if self.unknown_class is not None and self.unknown_class >= self.num_classes:
            self.unknown_class = None
        if len(self.labels) != self.num_classes:
            raise EdgeclsError(
                f"{len(self.labels)} labels ({self.labels_source}) but the model has {self.num_classes} outputs; "
                + (f"pass the labels.txt that came with this model ({self.labels_option})" if self.labels_option
                   else "put the labels.txt that came with this model beside it")
            )

    # -- labels -----------------------------------------------------------------------------
    def _resolve_labels(self, labels: Optional[Sequence[str]], model_bytes: bytes) -> tuple[list[str], str]:
        """Labels the user chose (``--labels``) win, with a warning when they differ from the model's own;
        otherwise labels.txt beside the model and the labels embedded in it must agree, because a stale
        labels.txt next to a re-exported model would otherwise silently rename every prediction."""
        embedded = labels_from_metadata(model_bytes)
        if labels is not None:
            if embedded and list(labels) != embedded:
                log.warning("the labels given rename the model's own classes (%s); results use the given names",
                            ", ".join(f"{a} -> {b}" for a, b in zip(embedded, labels) if a != b)[:300]
                            or f"{len(embedded)} -> {len(list(labels))} names")
            return list(labels), "given"
        beside = self.model_path.with_name(LABELS_FILENAME)
        from_file = read_labels_file(beside) if beside.is_file() else None
        if from_file is not None and embedded and from_file != embedded:
            raise EdgeclsError(labels_conflict_message(beside, from_file, self.model_path, embedded, self.labels_option))
        if from_file is not None:
            return from_file, str(beside) + (" (= model metadata)" if embedded else "")
        if embedded:
            return embedded, "model metadata"
        return [f"class_{i}" for i in range(self.num_classes)], NO_LABELS_SOURCE

    # -- the three stages -------------------------------------------------------------------
    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 HxWx3 of any size -> the model's input tensor [1, h, w, 3]."""
        img = resize_squash(as_rgb_uint8(rgb), *self.input_size)
        if self.input_dtype == np.float32:
            return img.astype(np.float32)[None]
        if self.input_dtype in (np.uint8, np.int8, np.int16):
            scale = self.input_scale or 1.0  # scale 0 = not quantized: the integers are the real values
            if abs(scale - 1.0) < 1e-6 and self.input_zero_point == 0 and self.input_dtype == np.uint8:
                # The exported models' usual case: the pixel bytes go straight in (no float round trip).
                return np.ascontiguousarray(img)[None]
            return quantize(img, scale, self.input_zero_point, self.input_dtype)[None]
        if self.input_dtype == np.float16:
            return img.astype(np.float16)[None]
        raise EdgeclsError(f"unsupported model input type {self.input_dtype}")

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run the model on one input tensor; the raw (possibly quantized) output row."""
        self.interpreter.set_tensor(self._in["index"], tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out["index"])[0]

    def set_input(self, tensor: np.ndarray) -> None:
        """Copy a preprocessed tensor into the interpreter (bench times ``invoke_only`` without this copy)."""
        self.interpreter.set_tensor(self._in["index"], tensor)

    def invoke_only(self) -> None:
        self.interpreter.invoke()

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw output row -> float32 scores [C] (dequantized by the output tensor's own parameters)."""
        raw = np.asarray(raw).reshape(-1)
        if np.issubdtype(raw.dtype, np.integer):
            if self.output_scale == 0.0:
                return raw.astype(np.float32)
            return dequantize(raw, self.output_scale, self.output_zero_point)
        return raw.astype(np.float32)

    # -- conveniences -------------------------------------------------------------------------
    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        return self.postprocess(self.invoke(self.preprocess(rgb)))

    def classify(self, rgb: np.ndarray, k: int = 3, threshold: float = 0.0) -> list[Category]:
        return top_k(self.probabilities(rgb), k, threshold, self.labels)

    def describe(self) -> dict:
        """What the model expects and returns (doctor, bench, stats)."""
        return {
            "model": str(self.model_path),
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "input_shape": [1, *self.input_size, 3],
            "input_dtype": self.input_dtype.name,
            "input_quantization": [self.input_scale, self.input_zero_point],
            "output_shape": [int(d) for d in self._out["shape"]],
            "output_dtype": self.output_dtype.name,
            "output_quantization": [self.output_scale, self.output_zero_point],
            "labels": self.labels,
            "labels_source": self.labels_source,
        }


def _quant_params(details: dict) -> tuple[float, int]:
    scale, zero_point = details.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)
