"""A classifier as one flat functional graph: what QAT and bias correction rewrite layer by layer."""

from __future__ import annotations

from typing import Any


def flatten(model: Any) -> Any:
    """The same classifier as one flat functional graph (nested models inlined), same weights.

    A model with no nested model is copied as it is (any graph, branches included); a nested one
    must be a chain (input, backbone, head layers), as every edgecls classifier is."""
    from edgecls.core.keras import keras

    if not any(isinstance(layer, keras.Model) for layer in model.layers):
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy

    inp = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name=model.layers[0].name)
    x = inp
    for layer in model.layers[1:]:
        if isinstance(layer, keras.Model):
            flat = keras.models.clone_model(layer, input_tensors=x)
            src = [lyr for lyr in layer.layers if not isinstance(lyr, keras.layers.InputLayer)]
            dst = [lyr for lyr in flat.layers if not isinstance(lyr, keras.layers.InputLayer)]
            for a, b in zip(src, dst):
                b.set_weights(a.get_weights())
            x = flat.outputs[0]
        else:
            new = layer.__class__.from_config(layer.get_config())
            x = new(x)
            new.set_weights(layer.get_weights())
    return keras.Model(inp, x, name=model.name)
