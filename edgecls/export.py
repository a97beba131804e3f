"""Export a run's Keras model to TFLite: float32, float16, dynamic-range or full int8.

``export_run(ExportConfig)`` writes one file set per mode into ``RUN/export/`` (modes coexist)::

    model_<mode>.tflite          model_pruned_<mode>.tflite with --pruned
    model_<mode>.card.json       what the file is, where it came from, how it did in parity
    parity_<mode>.json           int8 (parity runs automatically after an int8 export)
    labels.txt

Full int8 calibrates on a stratified sample of the run's *training* split, decoded and resized
exactly as in training (``data.load_images``), fed as raw 0..255 float32 because the model has
its preprocessing inside. The first calibration image carries one black and one white pixel so
the input range is exactly 0..255: the uint8 input then has scale 1 / zero point 0 and camera
pixels go in unchanged.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import os
import re
import sys
import tempfile
import warnings as warnings_module
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from edgecls import __version__
from edgecls.config import ExportConfig, ParityConfig, TrainConfig
from edgecls.errors import EdgeclsError
from edgecls.io import atomic_write_json, read_json
from edgecls.rundir import RunDir, write_labels

MODES = ("int8", "float16", "dynamic", "float32")
IO_TYPES = ("uint8", "int8")
INPUT_NAME = "image"

# Measured (DESIGN.md, ai-edge-litert 2.3 + XNNPACK, 2-core x86, 1 thread, 224 px).
POOR_INT8_BACKBONES = {
    "mobilenet_v3_small": "MobileNetV3's hard-swish has no fast int8 kernel in XNNPACK: int8 measured 4.09 ms vs "
    "1.72 ms float32 (MobileNetV3Small 224, 1 thread); use --minimalistic, float16, or mobilenet_v2",
    "mobilenet_v3_large": "MobileNetV3's hard-swish has no fast int8 kernel in XNNPACK (MobileNetV3Small 224: int8 "
    "4.09 ms vs float32 1.72 ms, 1 thread); use --minimalistic, float16, or mobilenet_v2",
    "efficientnet_b0": "EfficientNetB0 is known to lose accuracy in full int8 (swish + depthwise; EfficientNet-Lite "
    "exists for this reason); check parity closely or use mobilenet_v2",
}


class ExportFailed(EdgeclsError):
    """Export wrote its files but a gate failed (parity); ``card`` holds what was recorded."""

    def __init__(self, message: str, card: dict[str, Any], parity: Optional[dict[str, Any]] = None):
        super().__init__(message)
        self.card = card
        self.parity = parity


def warn(message: str) -> None:
    print(f"Warning: {message}", file=sys.stderr)


def int8_backbone_warning(backbone: str, minimalistic: bool) -> Optional[str]:
    """One line on why this backbone is a poor full-int8 citizen, or None."""
    if backbone not in POOR_INT8_BACKBONES or (backbone.startswith("mobilenet_v3") and minimalistic):
        return None
    return f"{backbone} is a poor int8 citizen: {POOR_INT8_BACKBONES[backbone]}"


# -- file names -------------------------------------------------------------------------------


def export_paths(run: RunDir, mode: str, pruned: bool, out: Optional[str]) -> dict[str, Path]:
    """The file set of one mode; ``out`` is a folder, or a .tflite path (card/parity beside it)."""
    tag = f"{'pruned_' if pruned else ''}{mode}"
    if out and str(out).endswith(".tflite"):
        model = Path(out)
        folder = model.parent
    else:
        folder = Path(out) if out else run.export_dir
        model = folder / f"model_{tag}.tflite"
    return {
        "model": model,
        "card": model.with_name(model.name[: -len(".tflite")] + ".card.json"),
        "parity": folder / f"parity_{tag}.json",
        "labels": folder / "labels.txt",
    }


def card_path_for(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name((p.name[: -len(".tflite")] if p.name.endswith(".tflite") else p.stem) + ".card.json")


# -- conversion -------------------------------------------------------------------------------

_OP_PATTERNS = (
    re.compile(r"'tfl?\.(\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"TF Select ops: ([\w, ]+)"),
    re.compile(r"[Qq]uantization (?:is )?not (?:yet )?supported for op:? '?(?:tfl?\.)?(\w+)"),
    re.compile(r"'tfl\.(\w+)' op (?:operand|result) #\d+ must be"),
    re.compile(r"failed to legalize operation '(?:tfl?\.)?(\w+)'"),
)


def ops_in_converter_error(message: str) -> list[str]:
    """Op names a TFLite converter error blames, in order, without duplicates."""
    found: list[str] = []
    for pat in _OP_PATTERNS:
        for m in pat.finditer(message):
            for name in m.group(1).split(","):
                name = name.strip()
                if name and name not in found:
                    found.append(name)
    return found


def representative_images(run: RunDir, size: int, n: int, seed: int) -> np.ndarray:
    """uint8 [n,S,S,3]: a stratified sample of the training split, decoded/resized as in training."""
    from edgecls import data

    root, split = data.load_split(run)
    train = split.get("train") or []
    if not train:
        raise EdgeclsError(f"{run.split_json} lists no training images to calibrate int8 on")
    items = data.stratified_sample(train, n, seed)
    images, _ = data.load_images(root, items, size)
    return images


def _representative(images: np.ndarray):
    def gen() -> Iterator[list[np.ndarray]]:
        for i, img in enumerate(images):
            x = img.astype(np.float32)
            if i == 0:  # pin the observed input range to exactly 0..255 (see module doc)
                x = x.copy()
                x[0, 0, :] = 0.0
                x[0, -1, :] = 255.0
            yield [x[None]]

    return gen


def convert_model(
    model: Any,
    mode: str,
    *,
    representative: Optional[np.ndarray] = None,
    io: str = "uint8",
    allow_float_fallback: bool = False,
) -> bytes:
    """TFLite flatbuffer of a tf_keras ``model``, batch 1.

    ``TFLiteConverter.from_keras_model`` works with tf_keras models under TF 2.21 but first
    exports a SavedModel: 18-35 s for MobileNetV2 0.35 at 64 px on 2 busy cores. A traced
    concrete function converted without that detour (``experimental_lower_to_saved_model =
    False``) gives the same graph in about 1 s.
    """
    from edgecls.keras import quiet_native_stderr, tf

    if mode not in MODES:
        raise EdgeclsError(f"unknown export mode {mode!r}; use one of {', '.join(MODES)}")
    shape = [1, *[int(d) for d in model.input_shape[1:]]]
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32, name=INPUT_NAME))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    conv.experimental_lower_to_saved_model = False
    if mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if representative is None or len(representative) == 0:
            raise EdgeclsError("int8 export needs representative images")
        if io not in IO_TYPES:
            raise EdgeclsError(f"--io must be uint8 or int8, got {io!r}")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(representative)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if allow_float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        conv.target_spec.supported_ops = ops
        conv.inference_input_type = tf.uint8 if io == "uint8" else tf.int8
        conv.inference_output_type = tf.uint8 if io == "uint8" else tf.int8
    try:
        with quiet_native_stderr(), warnings_module.catch_warnings():
            # Our inputs carry their own range (0-255, pinned by calibration), so the converter's
            # "statistics for quantized inputs were expected" warning does not apply.
            warnings_module.filterwarnings("ignore", message="Statistics for quantized inputs")
            return bytes(conv.convert())
    except Exception as e:  # noqa: BLE001 - ConverterError and friends
        raise EdgeclsError(_conversion_error(str(e), mode, allow_float_fallback)) from None


def _conversion_error(message: str, mode: str, allow_float_fallback: bool) -> str:
    ops = ops_in_converter_error(message)
    named = ", ".join(ops) if ops else "unknown (see the converter log above)"
    if "flex" in message.lower() or "TF Select" in message:
        return (
            f"{mode} conversion failed: op(s) {named} have no TFLite builtin kernel (they need TensorFlow "
            "'Flex' ops, which the device runtime does not ship); remove them from the model"
        )
    if mode == "int8" and not allow_float_fallback:
        return (
            f"int8 conversion failed: op(s) {named} cannot be quantized to int8; pass --allow-float-fallback "
            "to keep them in float32 (a mixed model), or use a backbone that quantizes fully (mobilenet_v2)"
        )
    first = message.strip().splitlines()[0] if message.strip() else "no message"
    return f"{mode} conversion failed (op(s): {named}): {first}"


# -- the stage ---------------------------------------------------------------------------------


def _train_config(run: RunDir) -> TrainConfig:
    return TrainConfig.from_dict(run.read_config().get("train", {}))


def _versions() -> dict[str, str]:
    from edgecls.keras import tf

    out = {"edgecls": __version__, "tensorflow": tf.__version__}
    try:
        from importlib.metadata import version

        out["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - optional
        pass
    return out


def export_run(cfg: ExportConfig) -> dict[str, Any]:
    """Convert, check, add metadata, write the file set; int8 then runs parity. Returns the card."""
    if cfg.mode not in MODES:
        raise EdgeclsError(f"unknown export mode {cfg.mode!r}; use one of {', '.join(MODES)}")
    if cfg.io not in IO_TYPES:
        raise EdgeclsError(f"--io must be uint8 or int8, got {cfg.io!r}")
    if cfg.mode == "int8" and cfg.representative_samples < 1:
        raise EdgeclsError(f"--representative-samples must be >= 1, got {cfg.representative_samples}")
    run = RunDir.open(cfg.run)
    source = run.pruned_model_path if cfg.pruned else run.model_path
    if not source.is_file():
        if cfg.pruned:
            raise EdgeclsError(f"no pruned model in {run.path} ({source.name}); run 'edgecls prune {run.path}' first")
        raise EdgeclsError(f"{source} is missing; train the run first ('edgecls train')")
    paths = export_paths(run, cfg.mode, cfg.pruned, cfg.out)
    existing = [p for p in (paths["model"], paths["card"]) if p.exists()]
    if existing and not cfg.force:
        raise EdgeclsError(f"{existing[0]} exists; pass --force to export {cfg.mode} again and replace it")

    tcfg = _train_config(run)
    labels = run.read_labels()
    warnings: list[str] = []
    backbone_warning = int8_backbone_warning(tcfg.backbone, tcfg.minimalistic) if cfg.mode == "int8" else None
    if backbone_warning:
        warnings.append(backbone_warning)
        warn(backbone_warning)

    from edgecls.prune import load_keras_model
    from edgecls.tflite_check import check_tflite, inspect_tflite

    model = load_keras_model(source)
    size = int(model.input_shape[1])
    if size != tcfg.size:
        raise EdgeclsError(f"{source.name} takes {size} px but the run's config says {tcfg.size}; the run is inconsistent")
    rep = None
    if cfg.mode == "int8":
        rep = representative_images(run, size, cfg.representative_samples, tcfg.seed)
    tflite = convert_model(model, cfg.mode, representative=rep, io=cfg.io, allow_float_fallback=cfg.allow_float_fallback)

    from edgecls.metadata import MetadataUnavailable, add_image_classifier_metadata

    metadata_reason = None
    try:
        tflite = add_image_classifier_metadata(
            tflite, labels, name=f"edgecls {tcfg.backbone} {cfg.mode}",
            description=f"{tcfg.backbone} alpha {tcfg.alpha} {size}px, {len(labels)} classes, exported by edgecls "
            f"{__version__}; input raw RGB 0..255",
        )
    except MetadataUnavailable as e:
        metadata_reason = str(e)
        warnings.append(f"the model has no metadata (labels/normalisation): {e}")
        warn(warnings[-1])

    # Check a temp copy in the destination folder, then rename it into place (atomic, and a
    # model that breaks its promise never appears under the final name).
    paths["model"].parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{paths['model'].name}.", suffix=".tmp", dir=paths["model"].parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(tflite)
        info = inspect_tflite(tmp)
        for w in check_tflite(info, mode=cfg.mode, size=size, io=cfg.io,
                              allow_float_fallback=cfg.allow_float_fallback, path=paths["model"].name):
            warnings.append(w)
            warn(w)
        os.replace(tmp, paths["model"])
    finally:
        Path(tmp).unlink(missing_ok=True)
    write_labels(paths["labels"], labels)

    sparsity = None
    if cfg.pruned and run.pruning_json.is_file():
        pj = read_json(run.pruning_json)
        sparsity = {"measured": pj.get("sparsity"), "target": pj.get("target_sparsity")}
    card: dict[str, Any] = {
        "model": paths["model"].name,
        "mode": cfg.mode,
        "backbone": tcfg.backbone,
        "alpha": tcfg.alpha,
        "minimalistic": tcfg.minimalistic,
        "input": {"size": size, **asdict(info.input)},
        "output": asdict(info.output),
        "labels": labels,
        "mixed": bool(info.float_ops) if cfg.mode == "int8" else None,
        "float_ops": info.float_ops if cfg.mode == "int8" else [],
        "pruned": cfg.pruned,
        "sparsity": sparsity,
        "file_bytes": len(tflite),
        "gzip_bytes": len(gzip.compress(tflite, compresslevel=9)),
        "metadata": metadata_reason is None,
        "metadata_missing_reason": metadata_reason,
        "representative_samples": int(len(rep)) if rep is not None else None,
        "run": str(run.path.resolve()),
        "float_model": source.name,
        "parity": None,
        "parity_passed": None,
        "warnings": warnings,
        "export_config": asdict(cfg),
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(paths["card"], card)
    if cfg.mode != "int8" or not cfg.parity:
        return card

    from edgecls.parity import run_parity

    report = run_parity(ParityConfig(run=str(run.path), model=str(paths["model"]), max_drop=cfg.max_drop,
                                     min_agreement=cfg.min_agreement, json=str(paths["parity"]),
                                     float_model=str(source)), raise_on_fail=False)
    card["parity"] = {k: report[k] for k in ("float_accuracy", "tflite_accuracy", "accuracy_drop_points",
                                             "agreement", "n_images", "mean_abs_prob_diff", "max_abs_prob_diff")}
    card["parity"]["report"] = paths["parity"].name
    card["parity_passed"] = bool(report["passed"])
    atomic_write_json(paths["card"], card)
    if not report["passed"]:
        raise ExportFailed(f"exported {paths['model']} but {report['failure']}", card, report)
    return card
