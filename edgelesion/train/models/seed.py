"""The seed project's CNNs: models 1 (seed-simple) and 2/3 (seed-dropout)."""

from __future__ import annotations

from edgelesion._tf import keras
from edgelesion.train.models.registry import register_model


def _seed_conv_stack(x: keras.layers.Layer) -> keras.layers.Layer:
    """The seed project's three conv blocks (16, 32, 64 filters) with max pooling."""
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    return x


@register_model("seed-simple")
def seed_simple(x: keras.layers.Layer) -> keras.layers.Layer:
    """The seed's model 1: three conv blocks, a 128-unit dense layer."""
    x = keras.layers.Flatten()(_seed_conv_stack(x))
    return keras.layers.Dense(128, activation="relu")(x)


@register_model("seed-dropout")
def seed_dropout(x: keras.layers.Layer) -> keras.layers.Layer:
    """The seed's models 2 and 3: model 1 with dropout after the conv stack and the dense layer.

    Dropout takes no per-layer seed: training re-seeds TensorFlow at every epoch instead, so a
    resumed run draws the same dropout masks as an uninterrupted one.
    """
    x = keras.layers.Dropout(0.2)(_seed_conv_stack(x))
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    return keras.layers.Dropout(0.2)(x)
