"""EfficientNet-Lite0 in tf-keras, with the ImageNet weights ported from a PyTorch checkpoint.

Lite is EfficientNet-B0's block table without squeeze-excitation, with ReLU6 and a fixed 32-filter
stem and 1280-filter head (google/automl efficientnet/lite). The graph is flat and made only of
layers that tfmot's default `quantize_model` knows: Conv2D/DepthwiseConv2D each directly followed by
BatchNormalization, `ReLU(6.0)`, Dropout (drop-connect), Add, GlobalAveragePooling2D.

Inputs are scaled as Lite was trained: (pixels - 127) / 128.
"""

from __future__ import annotations

import string

import numpy as np

from edgelesion._tf import keras
from edgelesion.errors import EdgelesionError
from edgelesion.train.models.registry import register_model
from edgelesion.train.models.torch_checkpoint import read_lite0_state_dict

# EfficientNet-B0 stages: (expand ratio, kernel, stride, output filters, repeats); Lite0 scales none.
BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
FEATURES = HEAD_FILTERS
IMAGENET_CLASSES = 1000
IMAGENET_LAYER = "imagenet_logits"
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99


def _block_specs() -> list[tuple[str, int, int, int, int, int]]:
    """Every block in order: (name such as 'block3b', in filters, expand ratio, kernel, stride, out filters)."""
    specs, filters = [], STEM_FILTERS
    for stage, (expand, kernel, stride, out, repeats) in enumerate(BLOCKS, start=1):
        for i in range(repeats):
            specs.append(
                (f"block{stage}{string.ascii_lowercase[i]}", filters, expand, kernel, stride if i == 0 else 1, out)
            )
            filters = out
    return specs


def _conv_bn_relu(x, filters: int, kernel: int, name: str, strides: int = 1, relu: bool = True):
    """Conv2D (no bias), BatchNormalization and optionally ReLU6, named `{name}_conv/_bn/_relu`."""
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu")(x) if relu else x


def _mbconv(x, name: str, in_filters: int, expand: int, kernel: int, stride: int, out: int, drop_rate: float):
    """One inverted-residual block: expand 1x1, depthwise, project 1x1, drop-connect and skip."""
    inputs = x
    if expand != 1:
        x = _conv_bn_relu(x, in_filters * expand, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_dwconv_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dwconv_relu")(x)
    x = _conv_bn_relu(x, out, 1, f"{name}_project", relu=False)
    if stride == 1 and in_filters == out:
        if drop_rate > 0:
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite0(x, *, drop_connect_rate: float = 0.2):
    """EfficientNet-Lite0 on a scaled image tensor ((pixels - 127) / 128): the pooled 1280-d features.

    Drop-connect rises linearly over the blocks up to `drop_connect_rate` (0 adds no Dropout layers).
    Layer names are fixed, so the backbone appears at most once in a model.
    """
    if not 0 <= drop_connect_rate < 1:
        raise EdgelesionError(f"drop_connect_rate must be in [0, 1), not {drop_connect_rate}")
    x = _conv_bn_relu(x, STEM_FILTERS, 3, "stem", strides=2)
    specs = _block_specs()
    for index, (name, in_filters, expand, kernel, stride, out) in enumerate(specs):
        x = _mbconv(x, name, in_filters, expand, kernel, stride, out, drop_connect_rate * index / len(specs))
    x = _conv_bn_relu(x, HEAD_FILTERS, 1, "head")
    return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _torch_layer_names() -> dict[str, str]:
    """Checkpoint module prefix (EfficientNet-PyTorch names) -> Keras layer name."""
    names = {
        "_conv_stem": "stem_conv",
        "_bn0": "stem_bn",
        "_conv_head": "head_conv",
        "_bn1": "head_bn",
        "_fc": IMAGENET_LAYER,
    }
    parts = {
        "_expand_conv": "expand_conv",
        "_bn0": "expand_bn",
        "_depthwise_conv": "dwconv",
        "_bn1": "dwconv_bn",
        "_project_conv": "project_conv",
        "_bn2": "project_bn",
    }
    for index, (block, *_) in enumerate(_block_specs()):
        names.update({f"_blocks.{index}.{torch}": f"{block}_{ours}" for torch, ours in parts.items()})
    return names


def _keras_weights(layer: keras.layers.Layer, tensors: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The checkpoint tensors of one module in the layout and order of the Keras layer's weights."""
    if isinstance(layer, keras.layers.BatchNormalization):
        order = ("weight", "bias", "running_mean", "running_var")
        return [tensors[k] for k in order] if set(tensors) == set(order) else []
    if isinstance(layer, keras.layers.DepthwiseConv2D) and set(tensors) == {"weight"}:
        return [tensors["weight"].transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if isinstance(layer, keras.layers.Conv2D) and set(tensors) == {"weight"}:
        return [tensors["weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
    if isinstance(layer, keras.layers.Dense) and set(tensors) == {"weight", "bias"}:
        return [tensors["weight"].T, tensors["bias"]]
    return []


def load_imagenet_weights(model: keras.Model, state_dict: dict[str, np.ndarray] | None = None) -> None:
    """Assign the ImageNet checkpoint to the model's EfficientNet-Lite0 layers by name.

    The 1000-class top is loaded only when the model has an `imagenet_logits` Dense layer. Every
    backbone tensor must find its layer with the right shape, and every backbone layer its tensors.
    """
    state_dict = read_lite0_state_dict() if state_dict is None else state_dict
    names = _torch_layer_names()
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in state_dict.items():
        prefix, _, attr = key.rpartition(".")
        if attr == "num_batches_tracked":
            continue
        if prefix not in names:
            raise EdgelesionError(f"checkpoint tensor {key} has no EfficientNet-Lite0 layer")
        modules.setdefault(prefix, {})[attr] = tensor
    layers = {layer.name: layer for layer in model.layers}
    has_top = IMAGENET_LAYER in layers
    wanted = {name for prefix, name in names.items() if prefix in modules and (has_top or name != IMAGENET_LAYER)}
    if missing := sorted(wanted - set(layers)):
        raise EdgelesionError(
            f"the model lacks the EfficientNet-Lite0 layers {missing[:5]} "
            f"({len(missing)} of {len(wanted)}): build it with efficientnet_lite0"
        )
    if unloaded := sorted(n for n in set(names.values()) & set(layers) if n not in wanted):
        raise EdgelesionError(f"the checkpoint has no weights for the layers {unloaded[:5]}")
    for prefix, tensors in modules.items():
        name = names[prefix]
        if name not in wanted:
            continue
        layer = layers[name]
        weights = _keras_weights(layer, tensors)
        current = [w.shape for w in layer.get_weights()]
        if [w.shape for w in weights] != current:
            raise EdgelesionError(
                f"checkpoint {prefix} ({sorted(tensors)}, shapes "
                f"{[t.shape for t in tensors.values()]}) does not fit layer {name} {current}"
            )
        layer.set_weights(weights)


def imagenet_classifier(image_size: int = 224) -> keras.Model:
    """The pretrained ImageNet EfficientNet-Lite0: raw 0..255 RGB floats in, 1000 class probabilities out."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="rescale")(inputs)
    x = efficientnet_lite0(x)
    x = keras.layers.Dense(IMAGENET_CLASSES, name=IMAGENET_LAYER)(x)
    outputs = keras.layers.Softmax(name="imagenet_probs")(x)
    model = keras.Model(inputs, outputs, name="efficientnet_lite0_imagenet")
    load_imagenet_weights(model)
    return model


@register_model("efficientnet-lite0", pretrained=load_imagenet_weights)
def efficientnet_lite0_classifier(x: keras.layers.Layer) -> keras.layers.Layer:
    """EfficientNet-Lite0's features with its classifier dropout (0.2), for a new head."""
    return keras.layers.Dropout(0.2, name="head_dropout")(efficientnet_lite0(x))
