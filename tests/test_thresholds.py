"""The melanoma alert threshold is the highest one that reaches the target sensitivity."""

from __future__ import annotations

import numpy as np
import pytest

from edgelesion.thresholds import melanoma_threshold


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
