"""The graph surgery pruning needs: which layers tfmot prunes, and the classifier's chain rebuilt with
every layer mapped (wrapped for pruning, unwrapped after), nested backbone included.

``clone_model`` does not recurse into the nested backbone model, so the backbone is cloned with the
mapping function on its own and the outer chain (input -> backbone -> dropout -> predictions) is
rebuilt around it. The pruning wrapper only updates its masks when ``training`` is true, so the
chain built for pruning calls the backbone without the classifier's ``training=False``;
:func:`restore_training_flag` gives it back.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from edgecls.core.errors import EdgeclsError


def is_prunable(layer: Any) -> bool:
    """Conv2D (incl. pointwise 1x1) and Dense kernels; never DepthwiseConv2D, BatchNorm, Rescaling."""
    from edgecls.core.keras import keras

    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(
        layer, keras.layers.DepthwiseConv2D
    )


def chain(model: Any) -> list[tuple[Any, dict]]:
    """The outer model as a chain [(layer, call kwargs)], or an error when it is not one."""
    cfg = model.get_config()
    layers = cfg.get("layers", [])
    if not layers or len(cfg.get("input_layers", [])) != 1 or len(cfg.get("output_layers", [])) != 1:
        raise EdgeclsError("pruning supports single-input, single-output models made by 'edgecls train'")
    chain = []
    prev = layers[0]["name"]
    for lc in layers[1:]:
        nodes = lc.get("inbound_nodes") or []
        if len(nodes) != 1 or len(nodes[0]) != 1 or nodes[0][0][0] != prev:
            raise EdgeclsError(
                f"cannot prune this model: layer {lc['name']!r} is not in a simple chain; "
                "pruning supports models made by 'edgecls train'"
            )
        kwargs = dict(nodes[0][0][3]) if len(nodes[0][0]) > 3 else {}
        chain.append((model.get_layer(lc["name"]), kwargs))
        prev = lc["name"]
    return chain


def rebuild(model: Any, layer_fn: Callable[[Any], Any], keep_training_flag: bool) -> Any:
    """Same chain as ``model`` with each layer mapped by ``layer_fn`` (nested models cloned too)."""
    from edgecls.core.keras import keras

    inp = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name=model.layers[0].name)
    x = inp
    for layer, kwargs in chain(model):
        if not keep_training_flag:
            kwargs = {k: v for k, v in kwargs.items() if k != "training"}
        if isinstance(layer, keras.Model):
            new = keras.models.clone_model(layer, clone_function=layer_fn)
            new._name = layer.name  # the contract finds it by name ("backbone")
        else:
            new = layer_fn(layer)
        x = new(x, **kwargs)
    return keras.Model(inp, x, name=model.name)


def all_layers(model: Any) -> Iterator[Any]:
    """Every layer of ``model``, nested models' layers in their place."""
    from edgecls.core.keras import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def measure_sparsity(model: Any) -> tuple[float, dict[str, dict[str, float]]]:
    """(overall, per layer) share of exact zeros in every Conv2D/Dense kernel, measured from weights."""
    per_layer: dict[str, dict[str, float]] = {}
    zeros = total = 0
    for layer in all_layers(model):
        if not is_prunable(layer):
            continue
        k = np.asarray(layer.kernel.numpy())
        z = int(np.count_nonzero(k == 0))
        per_layer[layer.name] = {"sparsity": round(z / k.size, 4), "weights": int(k.size)}
        zeros += z
        total += k.size
    return (zeros / total if total else 0.0), per_layer


def build_pruning_model(model: Any, layer_fn: Callable[[Any], Any]) -> Any:
    """The chain rebuilt for pruning: backbone called without ``training=False`` (masks update only in training)."""
    return rebuild(model, layer_fn, keep_training_flag=False)


def restore_training_flag(model: Any, original: Any) -> Any:
    """Rebuild ``model`` with the call kwargs (``training=False``) the original chain had."""
    from edgecls.core.keras import keras

    kwargs_by_name = {layer.name: kw for layer, kw in chain(original)}
    inp = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name=model.layers[0].name)
    x = inp
    for layer, _ in chain(model):
        if isinstance(layer, keras.Model):
            layer._name = next(o.name for o, _ in chain(original) if isinstance(o, keras.Model))
        x = layer(x, **kwargs_by_name.get(layer.name, {}))
    return keras.Model(inp, x, name=original.name)
