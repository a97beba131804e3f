"""Where training runs: the tf.distribute strategy and the mixed-precision policy.

- Strategy ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set (a cluster),
  ``MirroredStrategy`` over all GPUs when more than one is visible, else the default
  (single-device) strategy. ``default``/``mirrored``/``multiworker`` force one.
  ``mirrored`` with no GPU mirrors over the logical CPU devices (normally one; tests split the
  CPU in two to exercise the multi-replica path).
- Mixed precision ``auto``: ``mixed_float16`` when a GPU is visible (Tensor Cores; float16
  activations halve memory), float32 otherwise (CPUs gain nothing from float16). ``on`` forces
  it, ``off`` never. The classifier's last layer is float32 either way.

The batch size in :class:`~edgecls.core.config.TrainConfig` is *global*: Keras splits each batch
over the replicas, so results do not depend on the number of GPUs.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from edgecls.core.errors import EdgeclsError
from edgecls.core.keras import keras, tf
from edgecls.train import cluster
from edgecls.core.config import PRECISIONS, STRATEGIES


def gpus() -> list:
    """Physical GPUs TensorFlow can see."""
    return tf.config.list_physical_devices("GPU")


def choose_strategy(name: str, *, n_gpus: int, tf_config: str | None) -> str:
    """Resolve ``auto`` to a concrete strategy name (pure: tested without a cluster or GPUs)."""
    if name not in STRATEGIES:
        raise EdgeclsError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    if name != "auto":
        return name
    if tf_config:
        return "multiworker"
    return "mirrored" if n_gpus > 1 else "default"


def make_strategy(name: str = "auto") -> "tf.distribute.Strategy":
    """The distribution strategy for ``name`` (see module docstring)."""
    name = choose_strategy(name, n_gpus=len(gpus()), tf_config=os.environ.get("TF_CONFIG"))
    if name == "multiworker":
        cluster.task_for("multiworker")  # a missing or malformed TF_CONFIG: one clear line, not TF's traceback
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def is_chief(strategy: str = "auto") -> bool:
    """Whether this process writes the run folder (always, unless it is a non-chief cluster worker)."""
    task = cluster.task_for(strategy)
    return task is None or task.is_chief


def precision_policy(mode: str = "auto", *, n_gpus: int | None = None) -> str:
    """The Keras dtype policy name for ``mode`` (``n_gpus`` defaults to the visible GPUs)."""
    if mode not in PRECISIONS:
        raise EdgeclsError(f"unknown mixed precision mode {mode!r}; choose one of: {', '.join(PRECISIONS)}")
    if n_gpus is None:
        n_gpus = len(gpus())
    if mode == "on" or (mode == "auto" and n_gpus > 0):
        return "mixed_float16"
    return "float32"


@contextlib.contextmanager
def precision(mode: str = "auto") -> Iterator[str]:
    """Set the global Keras policy for building models, and restore the previous one after."""
    previous = keras.mixed_precision.global_policy()
    policy = precision_policy(mode)
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)
