"""The melanoma alert threshold is the highest one that reaches the target sensitivity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from edgelesion.thresholds import melanoma_threshold, order_statistic_threshold


def probabilities(melanoma_scores):
    scores = np.asarray(melanoma_scores, dtype=float)
    return np.stack([1 - scores, scores], axis=1)


def test_highest_threshold_reaching_the_target_with_tied_scores():
    # int8-like outputs: many ties. 10 melanomas, 10 others; the ROC points at 0.9, 0.7 and 0.5 lie on one
    # straight line, and scikit-learn's default drop_intermediate would drop the one at 0.7
    melanoma = [0.9] * 5 + [0.7] * 2 + [0.5] * 2 + [0.1]
    others = [0.7] * 2 + [0.5] * 2 + [0.1] * 6
    labels = np.array([1] * 10 + [0] * 10)
    result = melanoma_threshold(probabilities(melanoma + others), labels, positive=1, target_sensitivity=0.7)
    # sensitivity at 0.7 is 7/10: the highest threshold that reaches 0.7 (0.5 would reach it too, with worse specificity)
    assert result["threshold"] == pytest.approx(0.7)
    assert result["validation_sensitivity"]["value"] == pytest.approx(0.7)
    assert result["validation_specificity"]["value"] == pytest.approx(0.8)


def test_no_threshold_without_both_kinds_of_image():
    result = melanoma_threshold(probabilities([0.2, 0.4]), np.array([0, 0]), positive=1)
    assert result["threshold"] is None and "needs melanoma and non-melanoma" in result["reason"]


def test_the_order_statistic_threshold_reaches_the_target_on_new_melanomas_as_it_says():
    rng = np.random.default_rng(0)
    reached, inside = [], []
    for _ in range(2000):  # melanoma scores from one distribution: the sensitivity at t is P(score >= t)
        scores = rng.normal(size=30)
        probabilities = np.stack([1 - scores, scores], axis=1)
        chosen = order_statistic_threshold(probabilities, np.ones(30, int), 1, 0.9)
        true = float(norm.sf(chosen["threshold"]))
        reached.append(true)
        low, high = chosen["expected_sensitivity"]["ci95"]
        inside.append(low <= true <= high)
    assert np.mean(reached) == pytest.approx(28 / 31, abs=0.005)  # expected as stated, at least the target
    assert 0.93 < np.mean(inside) < 0.97  # the interval covers the new melanomas' sensitivity 95% of the time
    # the sample's own rule (threshold at the 4th lowest: 27/30 reached on the sample) falls short on new ones
    assert np.mean([norm.sf(np.sort(rng.normal(size=30))[3]) for _ in range(2000)]) < 0.88
