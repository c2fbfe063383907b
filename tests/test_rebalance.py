"""Augmentor rebalancing: deterministic, cached, capped, and only ever from the training split."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgelesion.data import rebalance
from edgelesion.data.rebalance import MAX_CLASS_WEIGHT, AugmentConfig, augment, class_weights, extra_per_class


def named(images: np.ndarray) -> str:
    """What training passes as `content`: a name for these exact images (there: their files' hashes and decoding)."""
    return hashlib.sha256(images.tobytes()).hexdigest()


def tiny_split(rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)
    images = rng.integers(0, 255, size=(9, 24, 24, 3), dtype=np.uint8)
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    return images, labels


def test_targets_fill_up_to_the_largest_class_within_the_cap():
    labels = np.array([0] * 6 + [1] * 2 + [2])
    plan = extra_per_class(labels, 3, AugmentConfig(target="max", max_copies_per_image=2))
    assert plan == {0: (0, 0), 1: (4, 4), 2: (5, 2)}
    seed_plan = extra_per_class(labels, 3, AugmentConfig(target="seed", max_copies_per_image=1000))
    assert all(wanted == 500 for wanted, _ in seed_plan.values())


def test_augmentation_is_deterministic_and_uses_only_given_images(tmp_path):
    images, labels = tiny_split()
    config = AugmentConfig(target="max", max_copies_per_image=3, flips=True, zoom=True)
    first = augment(images, labels, 3, config, seed=5, content=named(images), cache_dir=tmp_path / "a", progress=False)
    second = augment(images, labels, 3, config, seed=5, content=named(images), cache_dir=tmp_path / "b", progress=False)
    assert np.array_equal(first.images, second.images) and np.array_equal(first.sources, second.sources)
    assert np.bincount(np.concatenate([labels, first.labels])).tolist() == [6, 6, 4]
    assert first.shortfall == {2: 2}
    assert np.array_equal(first.labels, labels[first.sources])
    other_seed = augment(
        images, labels, 3, config, seed=6, content=named(images), cache_dir=tmp_path / "c", progress=False
    )
    assert not np.array_equal(first.images, other_seed.images)


def test_global_random_state_is_left_as_it_was(tmp_path):
    import random

    images, labels = tiny_split()
    random.seed(1)
    np.random.seed(1)
    expected = random.random(), np.random.random()
    random.seed(1)
    np.random.seed(1)
    augment(images, labels, 3, AugmentConfig(), seed=5, content=named(images), cache_dir=tmp_path, progress=False)
    assert (random.random(), np.random.random()) == expected


def test_cache_is_reused_when_inputs_are_unchanged(tmp_path, monkeypatch):
    images, labels = tiny_split()
    first = augment(
        images, labels, 3, AugmentConfig(), seed=1, content=named(images), cache_dir=tmp_path, progress=False
    )

    def no_augmentor(config):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(rebalance, "build_pipeline", no_augmentor)
    again = augment(
        images, labels, 3, AugmentConfig(), seed=1, content=named(images), cache_dir=tmp_path, progress=False
    )
    assert np.array_equal(first.images, again.images) and again.cache_folder == first.cache_folder
    changed = images.copy()  # one pixel off, as another decode or resize of the same files would give
    changed[-1, 0, 0, 0] ^= 1
    with pytest.raises(AssertionError, match="cache"):  # changed pixels are not served from the cache
        augment(changed, labels, 3, AugmentConfig(), seed=1, content=named(changed), cache_dir=tmp_path, progress=False)


def test_a_damaged_augmentation_entry_is_made_again(tmp_path):
    images, labels = tiny_split()
    first = augment(
        images, labels, 3, AugmentConfig(), seed=1, content=named(images), cache_dir=tmp_path, progress=False
    )
    (first.cache_folder / "sources.npy").unlink()  # as an interrupted removal leaves it
    again = augment(
        images, labels, 3, AugmentConfig(), seed=1, content=named(images), cache_dir=tmp_path, progress=False
    )
    assert np.array_equal(again.images, first.images) and np.array_equal(again.sources, first.sources)


def test_class_weights_balance_the_classes_present():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights[0] * 3 == pytest.approx(weights[1] * 1) and weights[2] == 0.0
    rare = class_weights(np.array([0] * 98 + [1] * 2), 2)  # balanced would give the rare class 25
    assert rare[1] == MAX_CLASS_WEIGHT and rare[0] == pytest.approx(100 / (2 * 98))
