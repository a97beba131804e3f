"""export --imx500: the gate, the transaction, the one-line errors, and one real conversion.

The real test (slow) runs Sony's chain for real: the toolchain venv (built by edgecls under
.venv-test/imx500, started in the background by tests/prebuild.py), MCT, imxconv-tf on Java 17.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecls.cli import cli
from edgecls.core.config import ExportConfig
from edgecls.core.errors import EdgeclsError
from edgecls.optimize.imx500 import export as imx_export
from edgecls.optimize.imx500 import toolchain
from edgecls.optimize.imx500.package import read_packer_zip

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = [ROOT.parent / "shared" / "pretrained" / "mobilenet_v2_1.0_160_no_top.h5",
              Path("/work/shared/pretrained/mobilenet_v2_1.0_160_no_top.h5")]
LABELS = ["a", "b", "c"]


def probs(rows):
    return np.asarray(rows, np.float32)


def _fake_run(root: Path) -> Path:
    """A run folder whose model is never loaded (the checks that come before it)."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"train": {"backbone": "mobilenet_v2", "size": 64}}))
    (root / "labels.txt").write_text("a\nb\n")
    (root / "model.keras").write_bytes(b"not loaded")
    return root


@pytest.mark.parametrize("env, message", [
    ({toolchain.JAVA_ENV: "/bin/true"}, "the IMX500 converter (imxconv-tf) needs Java 17; found /bin/true is Java ?: "
                                        "sudo apt install openjdk-17-jre-headless"),
    ({toolchain.PYTHON_ENV: "/bin/true"}, "needs Python 3.11, none found (/bin/true is not runnable): install CPython 3.11"),
])
def test_missing_java_or_python_is_one_line(env, message, tmp_path, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(toolchain.VENV_ENV, raising=False)
    run = _fake_run(tmp_path / "run")
    res = CliRunner().invoke(cli, ["export", str(run), "--imx500"])
    assert res.exit_code == 1 and message in res.output, res.output
    assert res.output.count("Error:") == 1 and "Traceback" not in res.output


@pytest.mark.parametrize("args, message", [
    (["--imx500", "--int8"], "--imx500 and --int8 exclude each other"),
    (["--imx500", "--qat"], "--qat apply to .tflite exports, not --imx500"),
    (["--imx500", "--no-parity"], "--no-parity apply to .tflite exports"),
])
def test_options_that_do_not_apply(args, message, tmp_path):
    res = CliRunner().invoke(cli, ["export", str(_fake_run(tmp_path / "run")), *args])
    assert res.exit_code != 0 and message in res.output, res.output


def test_unsupported_backbone_is_refused_before_anything_slow(tmp_path):
    run = _fake_run(tmp_path / "run")
    (run / "config.json").write_text(json.dumps({"train": {"backbone": "efficientnet_b0", "size": 64}}))
    with pytest.raises(EdgeclsError, match="supports mobilenet_v2 runs .* is efficientnet_b0"):
        imx_export.export_imx500(ExportConfig(run=str(run), mode="imx500"))


def test_failed_gate_replaces_nothing_and_keeps_the_rejected_model(tiny_run, tmp_path, monkeypatch):
    """The worker's answer flips clear decisions: export fails with one line, the previous set stays byte
    for byte, MCT's model and its report are kept as REJECTED, no package is converted."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "logs", "cache", "plots", "export"))
    old = {"model_imx500.packerOut.zip": b"previous package", "model_imx500.card.json": b'{"previous": true}'}
    (run / "export").mkdir()
    for name, data in old.items():
        (run / "export" / name).write_bytes(data)
    monkeypatch.setattr(toolchain, "ensure", lambda **kw: toolchain.Toolchain(tmp_path / "no-venv", Path("/bin/true")))

    def worker(tc, job, log):  # our subprocess boundary: what the Sony venv would answer, with every decision moved
        n = len(np.load(job / "eval.npy"))
        rng = np.random.default_rng(0)
        p = rng.dirichlet(np.ones(3) * 0.2, size=n).astype(np.float32)
        np.save(job / "float_probs.npy", p)
        np.save(job / "quant_probs.npy", np.roll(p, 1, axis=1))
        (job / "quantized.keras").write_bytes(b"mct model")
        return 0, {"versions": {"model-compression-toolkit": "2.5.1"}, "input_quantizer": {}, "tpc": "imx500 v1"}

    monkeypatch.setattr(imx_export, "run_worker", worker)
    monkeypatch.setattr(imx_export, "FLOAT_TOLERANCE", 2.0)  # the planted float answer is not the host's
    res = CliRunner().invoke(cli, ["export", str(run), "--imx500", "--force"])
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "clear-decision agreement" in errors[0] and "REJECTED" in errors[0]
    export = run / "export"
    for name, data in old.items():
        assert (export / name).read_bytes() == data
    card = json.loads((export / "model_imx500.REJECTED.card.json").read_text())
    assert card["parity_passed"] is False and card["model"] is None
    assert (export / "model_imx500.REJECTED.mct.keras").read_bytes() == b"mct model"
    assert json.loads((export / "parity_imx500.REJECTED.json").read_text())["passed"] is False
    assert not list(export.glob(".staging-*")) and not (export / "model_imx500.REJECTED.packerOut.zip").exists()


def _pretrained() -> Path | None:
    return next((p for p in PRETRAINED if p.is_file()), None)


@pytest.fixture(scope="module")
def imx500_export(request, tmp_path_factory):
    """One real export --imx500. With the shared pretrained backbone (shared/pretrained, beside the clone) a
    MobileNetV2 1.0 at 96 px learns the synthetic shapes, and the default gate applies; without it, the
    suite's random-init tiny_run is converted under lenient gates (its random features are too chaotic for
    any 8-bit rounding: MCT changed 8 of its 24 decisions)."""
    import os

    from tests.isolated_venv import VENVS

    try:  # before any training: a machine without them skips with the reason
        toolchain.find_python()
        toolchain.find_java()
    except EdgeclsError as e:
        pytest.skip(str(e))
    os.environ.setdefault(toolchain.CACHE_ENV, str(VENVS / "imx500"))  # the venv the background build made
    root = tmp_path_factory.mktemp("imx500")
    weights = _pretrained()
    if weights is not None:
        from edgecls.core.config import TrainConfig
        from edgecls.data.synth import write_synthetic_dataset
        from edgecls.train.fit import train

        write_synthetic_dataset(root / "data", classes=3, per_class=30, size=96, seed=0)
        run = train(TrainConfig(data=str(root / "data"), out=str(root / "run"), backbone="mobilenet_v2", alpha=1.0,
                                size=96, weights=str(weights), epochs=8, fine_tune_epochs=0, batch_size=16,
                                augment=False, cache="memory", seed=0), verbose=0).path
        gates = {}  # the default gate
    else:
        run = root / "run"  # asked for only here: tiny_run's xdist group keeps the 43 tests that share it together
        shutil.copytree(request.getfixturevalue("tiny_run"), run, ignore=shutil.ignore_patterns("checkpoints", "logs", "cache", "plots", "export"))
        gates = dict(max_drop=100.0, min_clear_agreement=0.0)
    card = imx_export.export_imx500(ExportConfig(run=str(run), mode="imx500", **gates))
    return run, card, weights is not None


@pytest.mark.slow
@pytest.mark.prebuild("imx500")
def test_real_conversion_writes_a_package_the_sensor_can_hold(imx500_export):
    run, card, default_gate = imx500_export
    export = run / "export"
    size = card["input"]["size"]
    info = read_packer_zip(export / "model_imx500.packerOut.zip")  # dnnParams.xml inside the zip
    assert sorted(info.inputs[0].shape) == sorted([size, size, 3])
    assert info.inputs[0].signed and info.inputs[0].bits == 8 and info.inputs[0].scale == 1 / 128
    assert info.outputs[0].shape == [3] and info.outputs[0].bits == 8
    with zipfile.ZipFile(export / "model_imx500.packerOut.zip") as z:
        assert {"dnnParams.xml", "l2staticData.bin", "manifest.json"} <= set(z.namelist())
    mem = card["memory"]
    assert mem["fits"] and 0 < mem["utilization_percent"] < 100 and mem["available_bytes"] == 8 << 20
    assert card["rebuild"]["max_abs_prob_diff"] <= 1e-4
    assert card["versions"]["toolchain"]["model-compression-toolkit"] == "2.5.1"
    assert card["input"]["sensor_codes"] == "pixel - 128, signed 8-bit"
    report = json.loads((export / "parity_imx500.json").read_text())
    assert report["passed"] and card["parity_passed"] and card["parity"]["n_images"] == report["n_images"] > 0
    if default_gate:  # the done-when: MCT's model passes accuracy drop <= 1 and clear agreement >= 0.99
        assert report["gates"] == {"max_drop": 1.0, "min_clear_agreement": 0.99, "min_agreement": None, "clear_margin": 0.1}
        assert report["accuracy_drop_points"] <= 1.0 and report["clear_agreement"] >= 0.99
    golden = np.load(export / "model_imx500.golden.npz")
    assert golden["images"].shape[1:] == (size, size, 3) and golden["probabilities"].shape[1] == 3
    assert (export / "labels.txt").read_text().split() == card["labels"]
    assert not list(export.glob(".staging-*")) and not (export / "model_imx500.mct.keras").exists()
