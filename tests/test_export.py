"""Export: every mode converts, the file is checked against its promise, card and file set."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgecls.core.config import ExportConfig
from edgecls.core.errors import EdgeclsError

SIZE = 32


def _tiny_model(op=None):
    """Raw 0..255 input with preprocessing inside, like the real classifiers; ``op`` adds a Lambda."""
    from edgecls.core.keras import keras

    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    if op is not None:
        x = keras.layers.Lambda(op)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def calibration():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("mode, in_dtype", [("float32", "float32"), ("float16", "float32"), ("dynamic", "float32")])
def test_float_modes_convert_and_pass_the_check(tmp_path, mode, in_dtype):
    from edgecls.optimize.convert import convert_model
    from edgecls.optimize.checks import check_tflite, inspect_tflite

    info = inspect_tflite(_write(tmp_path, f"{mode}.tflite", convert_model(_tiny_model(), mode)))
    assert info.input.dtype == in_dtype and info.input.shape == [1, SIZE, SIZE, 3]
    assert check_tflite(info, mode=mode, size=SIZE) == []
    with pytest.raises(EdgeclsError, match=r"expected \[1, 48, 48, 3\]"):
        check_tflite(info, mode=mode, size=48)


@pytest.mark.slow
@pytest.mark.parametrize("io, zero_point", [("uint8", 0), ("int8", -128)])
def test_int8_is_full_integer_with_exact_input_quantization(tmp_path, calibration, io, zero_point):
    from edgecls.optimize.convert import convert_model
    from edgecls.optimize.checks import check_tflite, inspect_tflite

    data = convert_model(_tiny_model(), "int8", representative=calibration, io=io)
    info = inspect_tflite(_write(tmp_path, "m.tflite", data))
    assert info.input.dtype == io and info.output.dtype == io
    assert info.float_tensors == [] and info.float_ops == []
    # Raw pixels pass unchanged: the calibration anchor pins the input range to 0..255.
    assert info.input.scale == pytest.approx(1.0) and info.input.zero_point == zero_point
    assert check_tflite(info, mode="int8", size=SIZE, io=io) == []


@pytest.mark.slow
@pytest.mark.parametrize("io", ["uint8", "int8"])
def test_int8_input_scaling_keeps_every_grey_level(calibration, io):
    """The 256 pixel values reach the first conv as 255 distinct codes, in order. Calibration alone
    gives the Rescaling's MUL the range [-1, 2] (scale 3/255: 171 codes, a staircase of 1.5 grey
    levels that cost 3 points of agreement on blurry photos); export sets the scaling's ranges
    exactly. 255, not 256: (p - 127.5) / 127.5 never hits 0, which an int8 grid must hold, so the
    two values at one end share a code."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgecls.optimize.convert import convert_model
    from edgecls.train.backbones import BackboneChoice, build_classifier

    # The real classifier: a conv without padding (_tiny_model) takes the scaling into its weights.
    model = build_classifier(BackboneChoice("mobilenet_v2", size=SIZE, alpha=0.35, weights="none"), 3)
    data = convert_model(model, "int8", representative=calibration, io=io)
    it = Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    ramp = (np.arange(SIZE * SIZE) % 256).reshape(SIZE, SIZE)  # every grey level, 4 times
    img = np.repeat(ramp[..., None], 3, axis=2).astype(np.int16) - (128 if io == "int8" else 0)
    it.set_tensor(it.get_input_details()[0]["index"], img[None].astype(io))
    it.invoke()
    conv = next(op for op in it._get_ops_details() if op["op_name"] == "CONV_2D")
    codes = it.get_tensor(conv["inputs"][0])[0, ..., 0]
    assert len(np.unique(codes)) == 255
    # ...in the pixels' order: the scaling is monotonic, so sorting by pixel sorts the codes.
    order = np.argsort(ramp.ravel(), kind="stable")
    assert np.all(np.diff(codes.ravel()[order].astype(np.int16)) >= 0)


@pytest.mark.slow
def test_op_without_int8_kernel_is_named_and_needs_float_fallback(tmp_path, calibration):
    """TF 2.21 does not refuse SIN under TFLITE_BUILTINS_INT8: it leaves it float; the check catches it."""
    from edgecls.optimize.convert import convert_model
    from edgecls.core.keras import tf
    from edgecls.optimize.checks import check_tflite, inspect_tflite

    data = convert_model(_tiny_model(tf.math.sin), "int8", representative=calibration)
    info = inspect_tflite(_write(tmp_path, "sin.tflite", data))
    assert "SIN" in info.float_ops and info.float_tensors
    with pytest.raises(EdgeclsError, match=r"op\(s\) SIN have no int8 kernel.*--allow-float-fallback"):
        check_tflite(info, mode="int8", size=SIZE)
    warnings = check_tflite(info, mode="int8", size=SIZE, allow_float_fallback=True)
    assert any("mixed model" in w and "SIN" in w for w in warnings)


@pytest.mark.slow
def test_converter_error_names_the_op(calibration):
    """A real converter failure (Erf has no TFLite builtin at all) becomes one clear error."""
    from edgecls.optimize.convert import convert_model
    from edgecls.core.keras import tf

    with pytest.raises(EdgeclsError, match=r"int8 conversion failed: op\(s\) Erf .*Flex"):
        convert_model(_tiny_model(tf.math.erf), "int8", representative=calibration, allow_float_fallback=True)


@pytest.mark.parametrize("message, ops", [
    ("loc(x): error: 'tf.Erf' op is neither a custom op nor a flex op\nTF Select ops: Erf, Cumprod", ["Erf", "Cumprod"]),
    ("error: Quantization not yet supported for op: 'tfl.hard_swish'", ["hard_swish"]),
    ("error: failed to legalize operation 'tfl.custom_op'", ["custom_op"]),
    ("something unrelated", []),
])
def test_ops_in_converter_error(message, ops):
    from edgecls.optimize.convert import ops_in_converter_error

    assert ops_in_converter_error(message) == ops


@pytest.mark.parametrize("backbone, minimalistic, warned", [
    ("mobilenet_v3_small", False, "4.09 ms"), ("mobilenet_v3_large", True, None),
    ("efficientnet_b0", False, "EfficientNet-Lite"), ("mobilenet_v2", False, None),
])
def test_poor_int8_backbones_are_warned_about(backbone, minimalistic, warned):
    from edgecls.optimize.export import int8_backbone_warning

    w = int8_backbone_warning(backbone, minimalistic)
    assert (w is None) if warned is None else (warned in w and "mobilenet_v2" in w)


@pytest.mark.slow
def test_int8_export_file_set_and_card(exported_run):
    from edgecls.optimize.checks import inspect_tflite

    exp = exported_run.path / "export"
    for name in ("model_int8.tflite", "model_int8.card.json", "parity_int8.json", "labels.txt",
                 "model_pruned_int8.tflite", "model_pruned_int8.card.json", "parity_pruned_int8.json"):
        assert (exp / name).is_file(), name
    card = json.loads((exp / "model_int8.card.json").read_text())
    assert card == {k: v for k, v in exported_run.int8.items()}
    assert card["backbone"] == "mobilenet_v2" and card["alpha"] == 0.35
    assert card["input"] == {"size": 64, "dtype": "uint8", "shape": [1, 64, 64, 3], "scale": 1.0, "zero_point": 0}
    assert card["output"]["dtype"] == "uint8" and card["output"]["scale"] > 0
    assert card["labels"] == (exported_run.path / "labels.txt").read_text().split()
    assert (exp / "labels.txt").read_text().split() == card["labels"]
    assert card["file_bytes"] == (exp / "model_int8.tflite").stat().st_size
    assert 0 < card["gzip_bytes"] < card["file_bytes"]
    assert card["metadata"] is True and card["sparsity"] is None
    # The tiny model misses the aim, so a repair may ship: "mixed" says whether the shipped path kept float
    # layers, and the file agrees.
    kept_float = bool(card["quantization"]["float_layers"])
    assert card["mixed"] is kept_float and bool(inspect_tflite(exp / "model_int8.tflite").float_ops) is kept_float
    assert card["float_model"] == "model.keras" and card["run"] == str(exported_run.path.resolve())
    split = json.loads((exported_run.path / "split.json").read_text())
    assert card["representative_samples"] == min(300, len(split["train"]))
    # The card's figures are the file's: an independent parity run on the shipped file (a fresh process, the
    # device runtime, the run's held-out images) measures the same accuracies and agreement.
    report = exported_run.path.parent / "independent_parity.json"
    if not report.exists():
        proc = subprocess.run([sys.executable, "-c", "from edgecls.cli import main; main()", "parity",
                               str(exported_run.path), str(exp / "model_int8.tflite"), "--max-drop", "100",
                               "--min-clear-agreement", "0", "--json", str(report)], capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr
    independent = json.loads(report.read_text())
    for key in ("float_accuracy", "tflite_accuracy", "agreement", "n_images", "n_clear", "clear_agreement"):
        assert card["parity"][key] == pytest.approx(independent[key], abs=1e-9), key
    assert card["parity_passed"] is True and card["parity"]["n_images"] == len(split["val"]) + len(split["test"])
    assert {"edgecls", "tensorflow"} <= set(card["versions"]) and card["created"]
    info = inspect_tflite(exp / "model_int8.tflite")
    assert (info.float_tensors == []) is not kept_float
    shipped = [a for a in card["quantization"]["attempts"] if a["path"] == card["quantization"]["path"]]
    assert len(shipped) == 1 and shipped[0]["passed"] is True
    assert shipped[0]["clear_agreement"] == card["parity"]["clear_agreement"]
    assert shipped[0]["file_bytes"] == card["file_bytes"]


@pytest.mark.slow
def test_pruned_int8_card_and_size(exported_run):
    card = exported_run.pruned_int8
    assert card["model"] == "model_pruned_int8.tflite" and card["pruned"] is True
    assert card["float_model"] == "model_pruned.keras"
    assert card["sparsity"] == {"measured": exported_run.pruning["sparsity"], "target": 0.5}
    # Zeros compress: the pruned int8 file is clearly smaller once gzip'd (raw size unchanged).
    assert card["gzip_bytes"] * 1.15 < exported_run.int8["gzip_bytes"]


@pytest.mark.slow
def test_modes_coexist_and_reexport_needs_force(exported_run, tmp_path):
    from edgecls.optimize.export import export_run

    out = tmp_path / "exports"
    card = export_run(ExportConfig(run=str(exported_run.path), mode="dynamic", out=str(out)))
    assert card["parity"] is None and card["input"]["dtype"] == "float32"
    assert (out / "model_dynamic.tflite").is_file() and (out / "labels.txt").is_file()
    with pytest.raises(EdgeclsError, match="model_dynamic.tflite exists; pass --force"):
        export_run(ExportConfig(run=str(exported_run.path), mode="dynamic", out=str(out)))
    good = (out / "model_dynamic.tflite").read_bytes()
    (out / "model_dynamic.tflite").write_bytes(b"junk the re-export must replace")
    export_run(ExportConfig(run=str(exported_run.path), mode="dynamic", out=str(out), force=True))
    assert (out / "model_dynamic.tflite").read_bytes() == good  # rewritten (the conversion is deterministic)
    assert (exported_run.path / "export" / "model_int8.tflite").is_file()  # other modes untouched
