"""The float model's in-graph pixel scaling, and the graph after it (what int8 quantization works on).

tfmot refuses Keras' Rescaling layer, and an int8 file takes uint8 camera pixels whose input
quantization *is* the scaling (1/255 and 0 for the seed models, 1/128 and 127 for EfficientNet-Lite).
So quantization works on the core model after the scaling layer, whose input range is exactly what
pixels 0 and 255 become.
"""

from __future__ import annotations

from edgelesion._tf import keras, tf
from edgelesion.errors import EdgelesionError


def scaling_layer(model: keras.Model) -> keras.layers.Rescaling:
    """The model's in-graph pixel scaling (the layer right after its input)."""
    layer = model.layers[1]
    if not isinstance(layer, keras.layers.Rescaling):
        raise EdgelesionError(
            f"model {model.name} does not start with its scaling layer: it was not made by edgelesion"
        )
    return layer


def input_range(model: keras.Model) -> tuple[float, float]:
    """What raw pixels 0 and 255 become after the model's scaling layer."""
    scaling = scaling_layer(model)
    return float(scaling.offset), float(255 * scaling.scale + scaling.offset)


def core_model(model: keras.Model) -> keras.Model:
    """The float model without its scaling layer (input: scaled pixels), sharing its layers.

    The graph after the scaling layer is called again, node by node in the model's topological
    order, on a new Input, so branches and residual Adds are kept as they are.
    """
    scaling = scaling_layer(model)
    inputs = keras.Input(shape=model.input_shape[1:], name="scaled_pixels")
    produced = {id(scaling.output): inputs}
    for layer in model.layers[2:]:
        node = layer.inbound_nodes[0]  # the layer's call inside `model`: each layer is used once
        args = tf.nest.map_structure(lambda t: produced[id(t)], node.call_args)
        kwargs = tf.nest.map_structure(lambda t: produced.get(id(t), t), node.call_kwargs)
        produced[id(layer.output)] = layer(*args, **kwargs)
    return keras.Model(inputs, produced[id(model.output)], name=f"{model.name}_core")


def with_scaling(model: keras.Model, quantized_core: keras.Model) -> keras.Model:
    """Raw pixels in: the float model's scaling layer in front of the QAT core (for parity checks)."""
    inputs = keras.Input(shape=model.input_shape[1:], name="pixels")
    return keras.Model(inputs, quantized_core(scaling_layer(model)(inputs)), name=f"{model.name}_qat")
