"""Strategy and mixed-precision choices; the multi-replica path on a CPU split in two."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgecls.core.errors import EdgeclsError


@pytest.mark.parametrize(
    "name, n_gpus, tf_config, expected",
    [
        ("auto", 0, None, "default"),
        ("auto", 1, None, "default"),
        ("auto", 2, None, "mirrored"),
        ("auto", 0, '{"cluster": {}}', "multiworker"),
        ("auto", 4, '{"cluster": {}}', "multiworker"),
        ("default", 4, None, "default"),
        ("mirrored", 0, None, "mirrored"),
    ],
)
def test_choose_strategy(name, n_gpus, tf_config, expected):
    from edgecls.train.distribute import choose_strategy

    assert choose_strategy(name, n_gpus=n_gpus, tf_config=tf_config) == expected


def test_strategy_errors(monkeypatch):
    from edgecls.train.distribute import choose_strategy, make_strategy

    with pytest.raises(EdgeclsError, match="unknown strategy 'tpu'"):
        choose_strategy("tpu", n_gpus=0, tf_config=None)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(EdgeclsError, match="needs the TF_CONFIG"):
        make_strategy("multiworker")
    assert make_strategy("default").num_replicas_in_sync == 1


@pytest.mark.parametrize(
    "tf_config, chief",
    [
        (None, True),
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}', True),
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}', False),
        ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', False),
        ('{"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', True),
    ],
)
def test_only_the_chief_writes_the_run(monkeypatch, tf_config, chief):
    from edgecls.train.distribute import is_chief

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert is_chief() is chief


@pytest.mark.parametrize(
    "mode, n_gpus, policy",
    [("auto", 0, "float32"), ("auto", 1, "mixed_float16"), ("on", 0, "mixed_float16"), ("off", 2, "float32")],
)
def test_precision_policy(mode, n_gpus, policy):
    from edgecls.train.distribute import precision_policy

    assert precision_policy(mode, n_gpus=n_gpus) == policy


@pytest.mark.slow
def test_mixed_precision_computes_float16_and_saves_a_float32_graph():
    from edgecls.train.backbones import BackboneChoice, build_classifier
    from edgecls.core.config import TrainConfig
    from edgecls.train.distribute import precision
    from edgecls.core.keras import keras
    from edgecls.train.models import compile_for, float32_copy, set_trainable

    cfg = TrainConfig(alpha=0.35, size=32, weights="none")
    with precision("on") as policy:
        assert policy == "mixed_float16"
        model = build_classifier(BackboneChoice("mobilenet_v2", size=32, alpha=0.35, weights="none"), 3)
        conv = model.get_layer("backbone").get_layer("Conv1")
        assert conv.compute_dtype == "float16" and conv.kernel.dtype == "float32"
        assert model.get_layer("predictions").compute_dtype == "float32"
        assert model.output.dtype == "float32"
        compile_for(model, 1e-3, 0.1)
        assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
        x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
        set_trainable(model, 0.5)  # frozen/unfrozen mix: weight order differs from a fresh build
        clean = float32_copy(model)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    dtypes = {layer.compute_dtype for layer in clean.submodules if isinstance(layer, keras.layers.Layer)}
    assert dtypes == {"float32"}
    np.testing.assert_allclose(clean(x).numpy(), model(x).numpy(), atol=2e-2)


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from edgecls.core.keras import tf
    # Must happen before TensorFlow initialises its devices: hence a fresh process.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from edgecls.core.config import TrainConfig
    from edgecls.train.distribute import make_strategy
    from edgecls.data.synth import write_synthetic_dataset
    from edgecls.train.fit import train
    from edgecls.train.model_io import load_model

    root = Path(sys.argv[1])
    write_synthetic_dataset(root / "data", classes=2, per_class=10, size=32, seed=2)
    strategy = make_strategy("mirrored")
    # MobileNetV3-Small minimalistic: each replica traces its own copy; the cheapest backbone to trace.
    cfg = TrainConfig(data=str(root / "data"), out=str(root / "run"), backbone="mobilenet_v3_small",
                      minimalistic=True, alpha=0.35, size=32, weights="none", epochs=1, fine_tune_epochs=0, batch_size=8, augment=False, cache="none",
                      strategy="mirrored", seed=2)
    run = train(cfg, verbose=0)
    model = load_model(run.model_path)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                      "devices": list(strategy.extended.worker_devices),
                      "metrics": json.loads(run.metrics_json.read_text()),
                      "output_shape": list(model.output_shape)}))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert [d.rsplit("/", 1)[-1] for d in out["devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert out["metrics"]["replicas"] == 2  # the run itself trained on both replicas
    assert out["output_shape"] == [None, 2]
    assert (tmp_path / "run" / "model.keras").is_file()
