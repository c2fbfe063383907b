"""The melanoma alert threshold: chosen on the validation split for a target sensitivity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import beta as beta_distribution
from sklearn.metrics import roc_curve

from edgelesion.metrics import wilson_interval
from edgelesion.source_figures import MIN_PER_SOURCE, mixed_sources

TARGET_SENSITIVITY = 0.90


def melanoma_threshold(
    probabilities: np.ndarray, labels: np.ndarray, positive: int | None, target_sensitivity: float = TARGET_SENSITIVITY
) -> dict[str, Any]:
    """The highest melanoma-probability threshold whose validation sensitivity reaches the target.

    The highest such threshold gives the best specificity at that sensitivity (scikit-learn's ROC
    curve). The sensitivity and specificity it reaches are returned with 95% Wilson intervals:
    with few validation melanomas, the target is met on this split, not guaranteed on new images.
    """
    if positive is None or not (labels == positive).any() or (labels == positive).all():
        return {
            "threshold": None,
            "target_sensitivity": target_sensitivity,
            "reason": "the validation split needs melanoma and non-melanoma images to choose a threshold",
        }
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


def melanomas_needed(target_sensitivity: float) -> int:
    """The fewest melanoma scores among which a threshold can be expected to reach the target: n / (n + 1) at best."""
    return max(1, int(np.ceil(target_sensitivity / (1 - target_sensitivity) - 1e-9))) if target_sensitivity < 1 else 0


def order_statistic_threshold(
    probabilities: np.ndarray, labels: np.ndarray, positive: int, target_sensitivity: float = TARGET_SENSITIVITY
) -> dict[str, Any]:
    """The highest threshold at which new melanomas' expected sensitivity reaches the target, chosen among a small
    sample's melanoma scores, with the 95% interval of that sensitivity.

    A threshold set at the k-th lowest of n melanoma scores passes a new melanoma with probability 1 - F(s_(k)),
    which follows Beta(n - k + 1, k) whatever the score distribution F (order statistics of untied scores; ties at
    the threshold only raise it): mean (n - k + 1) / (n + 1).
    The threshold where the sample's own sensitivity first reaches the target is chosen on the very scores it is
    scored on, and overstates what new melanomas get: at 30 melanomas and 0.90, its mean is 0.87, and on a source
    the model never saw it fell below its own Wilson interval in 2 of 5 draws (docs/experiments.md, "Alert threshold").
    """
    scores = np.sort(np.asarray(probabilities)[np.asarray(labels) == positive, positive])
    n = len(scores)
    if target_sensitivity >= 1 or n < melanomas_needed(target_sensitivity):
        raise ValueError(f"{n} melanoma scores cannot set a threshold expected to reach {target_sensitivity}")
    k = max(1, int(np.floor((n + 1) * (1 - target_sensitivity) + 1e-9)))
    passed, missed = n - k + 1, k
    return {
        "threshold": float(scores[k - 1]),
        "expected_sensitivity": {
            "value": passed / (n + 1),
            "ci95": [float(q) for q in beta_distribution.ppf([0.025, 0.975], passed, missed)],
            "n": n,
            "method": f"order statistic: Beta({passed}, {missed}), the threshold at melanoma score {k} of {n} from the lowest",
        },
    }


def alert_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    positive: int | None,
    target_sensitivity: float = TARGET_SENSITIVITY,
    *,
    sources: Sequence[str] | None = None,
    lookalikes: Sequence[int] = (),
) -> dict[str, Any]:
    """The alert threshold (melanoma_threshold) and the rule that chose it, recorded as `rule`.

    With sources known, it is chosen on the images of the sources that hold both the positive class and a
    look-alike: elsewhere a melanoma's source can give it away, and those easy melanomas would set a threshold
    that misses the hard ones a new clinic sends. Pooled otherwise, saying why.
    """
    if sources is not None and positive is not None:
        mixed = mixed_sources(labels, sources, positive, lookalikes)
        if mixed:
            inside = np.isin(np.asarray(sources, dtype=object), mixed)
            chosen = melanoma_threshold(probabilities[inside], labels[inside], positive, target_sensitivity)
            # its validation_sensitivity and validation_specificity are those sources' figures, not the pooled ones
            return {
                **chosen,
                "rule": "within-source",
                "rule_sources": mixed,
                "rule_text": f"chosen on the images of the sources holding at least {MIN_PER_SOURCE} of the "
                f"positive class and of a look-alike ({', '.join(mixed)}), not pooled: elsewhere "
                "the source can give the class away (its validation figures are those sources')",
            }
        reason = (
            f"no source holds at least {MIN_PER_SOURCE} images of the positive class and of a look-alike, "
            "so the threshold is pooled over sources whose look may give the class away"
        )
    elif positive is None:
        reason = "the model has no positive class"
    else:
        reason = "sources unknown (no metadata CSV with a source column)"
    chosen = melanoma_threshold(probabilities, labels, positive, target_sensitivity)
    return {**chosen, "rule": "pooled", "rule_sources": None, "rule_text": f"pooled: {reason}"}


def alert_figures(
    probabilities: np.ndarray,
    labels: np.ndarray,
    positive: int | None,
    threshold: float | None,
    lookalikes: Mapping[str, int] | None = None,
) -> dict[str, Any] | None:
    """Sensitivity and specificity (95% Wilson intervals) of `melanoma probability >= threshold` on a labelled set.

    This is what an app acting on the alert gets, unlike the arg-max figures. With `lookalikes` (name: class
    index), also the specificity on each look-alike the set holds. None without a threshold or a positive class.
    """
    if threshold is None or positive is None:
        return None
    labels = np.asarray(labels)
    is_positive = labels == positive
    alert = np.asarray(probabilities)[:, positive] >= threshold
    figures = {
        "threshold": float(threshold),
        "sensitivity": wilson_interval(int((alert & is_positive).sum()), int(is_positive.sum())),
        "specificity": wilson_interval(int((~alert & ~is_positive).sum()), int((~is_positive).sum())),
    }
    if lookalikes is not None:
        figures["specificity_by_lookalike"] = {
            name: wilson_interval(int((~alert & (labels == index)).sum()), int((labels == index).sum()))
            for name, index in lookalikes.items()
            if (labels == index).any()
        }
    return figures
