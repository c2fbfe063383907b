"""No group of identical or near-identical images ever spans two sides of a split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgelesion.data.splits import group_folds, train_val_indices
from edgelesion.errors import EdgelesionError


@st.composite
def labelled_groups(draw):
    n_groups = draw(st.integers(min_value=6, max_value=60))
    sizes = draw(st.lists(st.integers(1, 4), min_size=n_groups, max_size=n_groups))
    group_labels = draw(st.lists(st.integers(0, 3), min_size=n_groups, max_size=n_groups))
    groups = np.repeat(np.arange(n_groups), sizes)
    labels = np.repeat(np.array(group_labels), sizes)
    order = np.random.default_rng(draw(st.integers(0, 1000))).permutation(len(groups))
    return labels[order], groups[order]


@settings(max_examples=60, deadline=None)
@given(labelled_groups(), st.integers(2, 5), st.integers(0, 10_000))
def test_every_group_falls_in_exactly_one_fold(data, n_folds, seed):
    labels, groups = data
    if len(np.unique(groups)) < n_folds or np.bincount(labels).max() < n_folds:
        with pytest.raises(EdgelesionError, match=f"--folds {n_folds}"):
            group_folds(labels, groups, n_folds, seed)
        return
    folds = group_folds(labels, groups, n_folds, seed)
    assert set(np.unique(folds)) <= set(range(n_folds))
    for gid in np.unique(groups):
        assert len(np.unique(folds[groups == gid])) == 1


@settings(max_examples=40, deadline=None)
@given(labelled_groups(), st.integers(0, 10_000))
def test_train_and_validation_partition_the_images_without_shared_groups(data, seed):
    labels, groups = data
    assume(np.bincount(labels).max() >= 3)  # fewer is the refusal the test above expects
    train, val = train_val_indices(labels, groups, n_folds=3, fold=1, seed=seed)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert not set(groups[train]) & set(groups[val])


def test_split_is_stratified_and_reproducible():
    labels = np.repeat([0, 1, 2], [100, 50, 25])
    groups = np.arange(175)
    train, val = train_val_indices(labels, groups, n_folds=5, fold=0, seed=3)
    assert np.bincount(labels[val]).tolist() == [20, 10, 5]
    again, _ = train_val_indices(labels, groups, n_folds=5, fold=0, seed=3)
    assert (train == again).all()


def test_bad_fold_arguments_are_named():
    labels, groups = np.zeros(10, int), np.arange(10)
    with pytest.raises(EdgelesionError, match="--fold 5 is out of range"):
        train_val_indices(labels, groups, n_folds=5, fold=5)
    with pytest.raises(EdgelesionError, match="--folds 1"):
        group_folds(labels, groups, 1, 0)
