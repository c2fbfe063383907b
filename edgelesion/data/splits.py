"""Stratified splits in which every group of identical or near-identical images stays on one side."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from edgelesion.errors import EdgelesionError


def group_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Assign every image a fold in [0, n_folds): class-stratified, and a group never spans two folds."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    if n_folds < 2:
        raise EdgelesionError(f"--folds {n_folds} is too few: use 2 or more (5 holds out a fifth for validation)")
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise EdgelesionError(
            f"--folds {n_folds} needs at least {n_folds} distinct images, but the data has {n_groups}: "
            "add images or lower --folds"
        )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.empty(len(labels), dtype=np.int64)
    with warnings.catch_warnings():
        # Classes smaller than n_folds are reported by the audit; sklearn's warning would repeat it.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        try:
            for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
                folds[held_out] = fold
        except ValueError as exc:  # every class smaller than n_folds
            raise EdgelesionError(
                f"--folds {n_folds} is more than the images of any class: lower --folds or add images ({exc})"
            ) from exc
    return folds


def train_val_indices(
    labels: np.ndarray, groups: np.ndarray, *, n_folds: int = 5, fold: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation images: validation is fold `fold` of `n_folds`."""
    if not 0 <= fold < n_folds:
        raise EdgelesionError(f"--fold {fold} is out of range: choose 0 to {n_folds - 1} for --folds {n_folds}")
    folds = group_folds(labels, groups, n_folds, seed)
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
