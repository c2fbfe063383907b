"""The melanoma alert threshold: chosen on the validation split for a target sensitivity."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from edgelesion.metrics import wilson_interval

TARGET_SENSITIVITY = 0.90


def melanoma_threshold(probabilities: np.ndarray, labels: np.ndarray, positive: int | None,
                       target_sensitivity: float = TARGET_SENSITIVITY) -> dict[str, Any]:
    """The highest melanoma-probability threshold whose validation sensitivity reaches the target.

    The highest such threshold gives the best specificity at that sensitivity (scikit-learn's ROC
    curve). The sensitivity and specificity it reaches are returned with 95% Wilson intervals:
    with few validation melanomas, the target is met on this split, not guaranteed on new images.
    """
    if positive is None or not (labels == positive).any() or (labels == positive).all():
        return {"threshold": None, "target_sensitivity": target_sensitivity,
                "reason": "the validation split needs melanoma and non-melanoma images to choose a threshold"}
    is_positive = labels == positive
    scores = probabilities[:, positive]
    # every point kept: with tied scores (int8 outputs move in steps of 1/256) the default would drop
    # collinear points, among them possibly the one where sensitivity first reaches the target
    _, tpr, thresholds = roc_curve(is_positive, scores, drop_intermediate=False)
    threshold = float(min(1.0, thresholds[int(np.argmax(tpr >= target_sensitivity))]))
    alert = scores >= threshold
    return {
        "threshold": threshold,
        "target_sensitivity": target_sensitivity,
        "validation_sensitivity": wilson_interval(int((alert & is_positive).sum()), int(is_positive.sum())),
        "validation_specificity": wilson_interval(int((~alert & ~is_positive).sum()), int((~is_positive).sum())),
    }


def alert_figures(probabilities: np.ndarray, labels: np.ndarray, positive: int | None,
                  threshold: float | None) -> dict[str, Any] | None:
    """Sensitivity and specificity (95% Wilson intervals) of `melanoma probability >= threshold` on a labelled set.

    This is what an app acting on the alert gets, unlike the arg-max figures. None without a threshold
    or a positive class.
    """
    if threshold is None or positive is None:
        return None
    is_positive = np.asarray(labels) == positive
    alert = np.asarray(probabilities)[:, positive] >= threshold
    return {
        "threshold": float(threshold),
        "sensitivity": wilson_interval(int((alert & is_positive).sum()), int(is_positive.sum())),
        "specificity": wilson_interval(int((~alert & ~is_positive).sum()), int((~is_positive).sum())),
    }
