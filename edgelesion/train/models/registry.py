"""Architectures by name (timm-style registry). Every model takes raw 0-255 RGB pixels and returns class probabilities."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from edgelesion._tf import keras
from edgelesion.errors import EdgelesionError
from edgelesion.preprocessing import Preprocessing

ModelBuilder = Callable[[keras.layers.Layer], keras.layers.Layer]
WeightLoader = Callable[[keras.Model], None]
HEAD = "probabilities"  # the classifier layer every model ends in
_REGISTRY: dict[str, ModelBuilder] = {}
_PRETRAINED: dict[str, WeightLoader] = {}


def register_model(name: str, pretrained: WeightLoader | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a function that maps scaled input to the penultimate layer's output.

    `pretrained` loads the architecture's pretrained weights into a built model (by layer name).
    """

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        _REGISTRY[name] = builder
        if pretrained is not None:
            _PRETRAINED[name] = pretrained
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def create_model(name: str, n_classes: int, preprocessing: Preprocessing, *, pretrained: bool = False) -> keras.Model:
    """Build model `name`: raw pixels in, in-graph scaling, the architecture, softmax probabilities out.

    With `pretrained`, the architecture's pretrained weights are loaded where it has them.
    """
    if name not in _REGISTRY:
        raise EdgelesionError(f"unknown model {name!r}: choose one of {', '.join(list_models())}")
    size = preprocessing.image_size
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="pixels")
    # Keras' Rescaling layer; the export step keeps it out of the quantized graph (tfmot refuses it).
    scaled = keras.layers.Rescaling(preprocessing.scale, preprocessing.offset, name="scaling")(inputs)
    features = _REGISTRY[name](scaled)
    # float32 under a mixed-precision policy too: the probabilities, and the loss, keep their precision
    outputs = keras.layers.Dense(n_classes, activation="softmax", name=HEAD, dtype="float32")(features)
    model = keras.Model(inputs, outputs, name=name)
    if pretrained and name in _PRETRAINED:
        _PRETRAINED[name](model)
    return model
