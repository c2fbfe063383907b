"""The fine-tuning recipe: augmentation drawn from (seed, epoch, image), its learning-rate schedule, its stages."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from edgelesion._tf import tf
from edgelesion.train.config import MODEL_INPUTS, OnlineAugment, TrainConfig
from edgelesion.train.online_augment import augment_batch, mix_batch

ON = OnlineAugment(enabled=True)


def _images(n: int = 6, size: int = 20) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_an_image_gets_the_same_augmentation_in_any_batch_or_order():
    images = _images()
    index = np.arange(6)
    whole = augment_batch(tf.constant(images), tf.constant(index), 7, ON).numpy()
    order = np.array([4, 1, 5])
    part = augment_batch(tf.constant(images[order]), tf.constant(order), 7, ON).numpy()
    np.testing.assert_array_equal(part, whole[order])
    assert whole.dtype == np.float32 and whole.min() >= 0 and whole.max() <= 255
    assert not np.allclose(whole, images), "augmentation changed nothing"


def test_another_epoch_draws_other_augmentations_and_disabled_is_the_identity():
    images, index = tf.constant(_images()), tf.constant(np.arange(6))
    first = augment_batch(images, index, 7, ON).numpy()
    assert not np.allclose(first, augment_batch(images, index, 8, ON).numpy())
    np.testing.assert_array_equal(augment_batch(images, index, 7, OnlineAugment()).numpy(), _images())


def test_geometric_augmentation_keeps_the_pixels_of_a_flip_or_turn():
    only_geometry = OnlineAugment(enabled=True, min_crop=1.0, brightness=0, contrast=0, saturation=0, hue=0)
    images = _images(12)
    out = augment_batch(tf.constant(images), tf.constant(np.arange(12)), 3, only_geometry).numpy()
    for original, augmented in zip(images, out):
        variants = [np.rot90(f, k) for f in (original, original[::-1]) for k in range(4)]
        assert any(np.array_equal(v, augmented) for v in variants)


def test_pixel_noise_adds_gaussian_grey_levels_on_top_of_the_same_draws():
    images = _images(6, 32)  # random pixels: a different flip, turn or crop would show up as a large difference
    index = tf.constant(np.arange(6))
    plain = augment_batch(tf.constant(images), index, 7, ON).numpy()
    noisy = augment_batch(tf.constant(images), index, 7, replace(ON, pixel_noise=4.0)).numpy()
    inside = (plain > 20) & (plain < 235)  # away from the clip at 0 and 255
    difference = (noisy - plain)[inside]
    assert inside.mean() > 0.7
    assert difference.std() == pytest.approx(4.0, rel=0.05) and abs(difference.mean()) < 0.1
    assert noisy.min() >= 0 and noisy.max() <= 255
    with pytest.raises(ValueError, match="pixel_noise"):
        OnlineAugment(pixel_noise=-1)


def test_illumination_draws_come_on_top_of_the_same_geometry():
    images = _images(8, 32) // 2 + 40  # 40-167: no gain below pushes a pixel past white
    index = tf.constant(np.arange(8))
    geometry = replace(ON, brightness=0, contrast=0, saturation=0, hue=0)
    plain = augment_batch(tf.constant(images), index, 7, geometry).numpy()
    gray = augment_batch(tf.constant(images), index, 7, replace(geometry, grayscale=1.0)).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-3)
    luma = np.array([0.2989, 0.587, 0.114])  # tf.image.rgb_to_grayscale's weights
    np.testing.assert_allclose(gray[..., 0], plain @ luma, atol=0.05)  # the same image, its colour taken away
    cast = augment_batch(tf.constant(images), index, 7, replace(geometry, white_balance=0.3)).numpy()
    gains = cast.mean(axis=(1, 2)) / plain.mean(axis=(1, 2))  # one gain per image and channel
    np.testing.assert_allclose(cast, plain * gains[:, None, None, :], rtol=1e-4)
    assert gains.min() >= 0.7 - 1e-4 and gains.max() <= 1.3 + 1e-4
    assert np.ptp(gains, axis=1).min() > 0.005  # the channels drawn apart: a colour cast, not brightness
    dark = augment_batch(tf.constant(images), index, 7, replace(geometry, gamma=0.5)).numpy()
    exponent = np.log(dark / 255.0) / np.log(plain / 255.0)  # gamma exp(u), one per image
    np.testing.assert_allclose(exponent, exponent[:, :1, :1, :1] * np.ones_like(exponent), rtol=1e-3)
    assert exponent.min() >= np.exp(-0.5) - 1e-3 and exponent.max() <= np.exp(0.5) + 1e-3
    assert np.ptp(exponent[:, 0, 0, 0]) > 0.05
    framed = augment_batch(tf.constant(images), index, 7, replace(geometry, frame=1.0)).numpy()
    assert np.all(framed[:, 0, 0] == 0) and np.all(framed[:, -1, -1] == 0)  # corners outside every circle drawn
    np.testing.assert_array_equal(framed[:, 12:20, 12:20], plain[:, 12:20, 12:20])  # the middle inside all of them
    for name in ("gamma", "white_balance", "grayscale", "frame"):
        with pytest.raises(ValueError, match=name):
            OnlineAugment(**{name: 1.5})


def test_mixup_blends_each_image_target_and_weight_with_the_next_by_one_share_reproducibly():
    images = tf.constant(_images(5).astype(np.float32))
    targets = tf.one_hot([0, 1, 2, 1, 2], 3)
    weights = tf.constant([1.0, 2.0, 4.0, 2.0, 4.0])
    index = tf.constant([9, 3, 7, 1, 4])
    mixed, soft, weighted = (t.numpy() for t in mix_batch(images, targets, weights, index, 7, alpha=0.4))
    share = soft.max(axis=1)  # no image's partner shares its class: its own class's share is the blend's share
    partner = np.roll(np.arange(5), -1)
    assert np.all(share >= 0.5) and np.all(share <= 1.0) and len(np.unique(share.round(6))) > 1
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    expected = share[:, None, None, None] * _images(5) + (1 - share[:, None, None, None]) * _images(5)[partner]
    np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(weighted, share * weights.numpy() + (1 - share) * weights.numpy()[partner], rtol=1e-6)
    again = mix_batch(images, targets, weights, index, 7, alpha=0.4)[1].numpy()
    np.testing.assert_array_equal(again, soft)  # a resumed run mixes alike
    assert not np.allclose(mix_batch(images, targets, weights, index, 8, alpha=0.4)[1].numpy(), soft)
    with pytest.raises(ValueError, match="mixup"):
        OnlineAugment(mixup=2.0)


def test_learning_rate_head_then_warmup_then_cosine_to_zero():
    config = TrainConfig(
        epochs=10, head_epochs=2, head_learning_rate=1e-3, learning_rate=2e-4, warmup_epochs=1, lr_schedule="cosine"
    )
    rates = [config.learning_rate_at(e) for e in range(10)]
    assert rates[:2] == [1e-3, 1e-3]
    assert rates[2] == pytest.approx(1e-4)  # warm-up: half way
    assert rates[3] == pytest.approx(2e-4)  # cosine starts at the peak
    assert all(a > b for a, b in itertools.pairwise(rates[3:]))
    assert rates[-1] == pytest.approx(2e-4 * 0.5 * (1 + np.cos(np.pi * 6 / 7)))
    assert TrainConfig().learning_rate_at(5) == TrainConfig().learning_rate  # the seed models' constant rate


def test_a_model_takes_its_own_input_normalisation_and_recipe():
    lite = TrainConfig.for_model("efficientnet-lite0")
    assert lite.preprocessing == MODEL_INPUTS["efficientnet-lite0"]
    assert (lite.preprocessing.scale, lite.preprocessing.offset) == (1 / 128, -127 / 128)
    assert lite.head_epochs > 0 and lite.online_augment.enabled and lite.label_smoothing > 0
    assert TrainConfig.from_dict(lite.to_dict()) == lite
    assert TrainConfig.for_model("seed-dropout") == TrainConfig()
    older = lite.to_dict()  # a run written before reduced JPEG decoding existed trained on full decodes
    del older["preprocessing"]["jpeg_draft"]
    assert TrainConfig.from_dict(older).preprocessing.jpeg_draft is False and lite.preprocessing.jpeg_draft
    del older["preprocessing"]["jpeg_draft_margin"]  # runs that record no margin decoded to 4 input sides
    older["preprocessing"]["jpeg_draft"] = True
    assert TrainConfig.from_dict(older).preprocessing.draft_side == 4 * 224 and lite.preprocessing.draft_side == 3 * 224
    with pytest.raises(ValueError, match="head_epochs"):
        TrainConfig(epochs=3, head_epochs=3)
    with pytest.raises(ValueError, match="jpeg_draft_margin 0 must be between 1 and 16"):
        replace(lite.preprocessing, jpeg_draft_margin=0)


def test_the_lite0_recipe_resumes_across_the_head_to_whole_network_switch_to_the_same_result(lite0_run, tmp_path):
    """Head epoch, then the whole network with frozen BatchNorm, augmentation, smoothing and class weights."""
    from edgelesion._tf import keras
    from edgelesion.fileio import read_csv, read_json
    from edgelesion.train import training
    from edgelesion.train.runs import RunDir, read_run
    from tests.conftest import interrupted_at

    # pretrained: with random weights and frozen BatchNorm the features vanish, and nothing would train
    info = read_run(lite0_run)
    config = info.config
    assert config.head_epochs == 1 and config.epochs == 2 and config.freeze_batchnorm
    with interrupted_at(training, epoch=1), pytest.raises(KeyboardInterrupt):  # the first whole-network epoch
        training.train(info.data_dir, tmp_path / "cut", config, progress=False)
    after_head = keras.models.load_model(RunDir(tmp_path / "cut").checkpoints / "epoch-0001.keras")
    resumed = training.resume(tmp_path / "cut", progress=False)
    full = read_json(RunDir(lite0_run).evaluation / "validation" / "metrics.json")
    full_history, cut_history = (read_csv(RunDir(path).history) for path in (lite0_run, tmp_path / "cut"))
    for key in ("loss", "val_loss", "learning_rate"):
        assert [r[key] for r in cut_history] == [r[key] for r in full_history], key
    assert resumed["confusion_matrix"] == full["confusion_matrix"]
    # the head epoch trained the head alone, and BatchNorm statistics never move under freeze_batchnorm
    keras.utils.set_random_seed(config.seed)  # as training does before building the model
    start = training.create_model(config.model, 3, config.preprocessing, pretrained=True)
    after_all = keras.models.load_model(RunDir(tmp_path / "cut").checkpoints / "epoch-0002.keras")
    for name in ("stem_conv", "block4b_dwconv", "head_conv"):
        np.testing.assert_array_equal(
            after_head.get_layer(name).get_weights()[0], start.get_layer(name).get_weights()[0]
        )
    assert not np.array_equal(
        after_head.get_layer("probabilities").get_weights()[0], start.get_layer("probabilities").get_weights()[0]
    )
    assert not np.array_equal(
        after_all.get_layer("stem_conv").get_weights()[0], start.get_layer("stem_conv").get_weights()[0]
    )
    bn = next(l for l in after_all.layers if isinstance(l, keras.layers.BatchNormalization))
    np.testing.assert_array_equal(bn.moving_mean.numpy(), start.get_layer(bn.name).moving_mean.numpy())
