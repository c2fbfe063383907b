"""Metrics state their class set, carry intervals, and never silently drop a class."""

from __future__ import annotations

import numpy as np
import pytest

from edgelesion.metrics import classification_metrics, format_metrics, wilson_interval

CLASSES = ["a", "melanoma", "c"]


def one_hot(pred, n=3):
    return np.eye(n)[np.asarray(pred)]


def test_wilson_interval_matches_the_textbook_value():
    est = wilson_interval(8, 10)
    assert est["value"] == 0.8
    assert est["ci95"] == pytest.approx([0.4902, 0.9433], abs=1e-4)


def test_small_class_is_listed_not_scored_and_its_misses_still_count():
    y = np.array([0] * 10 + [1] * 10 + [2] * 2)
    pred = np.array([0] * 10 + [1] * 5 + [2] * 5 + [2, 2])  # five melanomas called 'c'
    m = classification_metrics(y, one_hot(pred), CLASSES, min_support=5)
    assert m["balanced_accuracy"]["classes"] == ["a", "melanoma"]
    assert m["balanced_accuracy"]["value"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["unscored_classes"] == [{"class": "c", "n": 2, "reason": "fewer than 5 images to score"}]
    assert m["per_class"]["c"]["scored"] is False


def test_stated_class_set_is_used_even_when_a_class_is_absent():
    y = np.array([0] * 6 + [2] * 6)
    pred = np.array([0] * 6 + [0] * 6)
    m = classification_metrics(y, one_hot(pred), CLASSES, scored_classes=["a", "melanoma", "c"])
    # sklearn's balanced_accuracy_score would average over the two present classes only: 0.5
    assert m["balanced_accuracy"]["value"] == pytest.approx(1.0 / 3)


def test_melanoma_sensitivity_and_specificity():
    y = np.array([1] * 16 + [0] * 20)
    pred = np.array([1] * 12 + [0] * 4 + [0] * 18 + [1] * 2)
    m = classification_metrics(y, one_hot(pred), CLASSES)
    assert m["melanoma_sensitivity"]["value"] == pytest.approx(12 / 16)
    assert m["melanoma_specificity"]["value"] == pytest.approx(18 / 20)
    low, high = m["melanoma_sensitivity"]["ci95"]
    assert high - low > 0.35  # 16 melanomas cannot pin sensitivity down: users must see that


def test_balanced_accuracy_interval_contains_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    m = classification_metrics(y, one_hot(pred), CLASSES)
    low, high = m["balanced_accuracy"]["ci95"]
    assert low < m["balanced_accuracy"]["value"] < high and high - low < 0.2


def test_summary_puts_balanced_accuracy_then_melanoma_first():
    y = np.array([0] * 6 + [1] * 6 + [2] * 6)
    lines = format_metrics(classification_metrics(y, one_hot(y), CLASSES)).splitlines()
    assert "balanced accuracy" in lines[0] and "melanoma sensitivity" in lines[1]


def test_expected_calibration_error_is_the_weighted_confidence_accuracy_gap():
    from edgelesion.metrics import calibration_bins

    # 10 images at confidence 0.9, 8 right: gap 0.1; 10 at 0.6, 6 right: gap 0
    probabilities = np.array([[0.9, 0.1]] * 10 + [[0.4, 0.6]] * 10)
    labels = np.array([0] * 8 + [1] * 2 + [1] * 6 + [0] * 4)
    result = calibration_bins(labels, probabilities, bins=10)
    assert result["expected_calibration_error"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.0)
    used = [b for b in result["bins"] if b["n"]]
    assert [(b["n"], b["accuracy"]) for b in used] == [(10, pytest.approx(0.6)), (10, pytest.approx(0.8))]


def test_paired_difference_is_the_metric_difference_on_the_same_class_stratified_resamples():
    from edgelesion.metrics import balanced_accuracy, paired_difference, sensitivity

    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2, 3], [40, 25, 3, 30])  # class 2 too small to score, class 3 outside the stated set
    base = one_hot(np.where(rng.random(len(y)) < 0.6, y, rng.integers(0, 4, len(y))), 4)
    cand = one_hot(np.where(rng.random(len(y)) < 0.8, y, rng.integers(0, 4, len(y))), 4)
    scored, resamples = [0, 1, 4], 50  # class 4 is stated but has no image: it scores 0 for both

    def delta(index):
        yi, b, c = y[index], base.argmax(1)[index], cand.argmax(1)[index]
        return (
            balanced_accuracy(yi, c, scored) - balanced_accuracy(yi, b, scored),
            sensitivity(yi, c, 1) - sensitivity(yi, b, 1),
        )

    draws = np.random.default_rng(9)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    expected = np.array(
        [delta(np.concatenate([draws.choice(ix, len(ix)) for ix in by_class])) for _ in range(resamples)]
    )
    result = paired_difference(y, base, cand, scored, 1, resamples=resamples, seed=9)
    for column, key in enumerate(("delta_balanced_accuracy", "delta_melanoma_sensitivity")):
        assert result[key]["value"] == pytest.approx(delta(np.arange(len(y)))[column])
        assert result[key]["ci95"] == pytest.approx(np.percentile(expected[:, column], [2.5, 97.5]).tolist())
    assert result["delta_balanced_accuracy"]["value"] > 0.1  # the candidate is the better model
    assert paired_difference(y, base, cand, scored, None, resamples=5)["delta_melanoma_sensitivity"] is None
