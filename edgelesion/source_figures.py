"""The positive class against each look-alike within every source, beside the same figures pooled over sources.

When class and source go together, a model can tell melanoma from nevus by the look of the source (dermatoscope,
light, framing), and a pooled figure rewards it. Inside one source that shortcut is gone: the within-source
figures are what a new clinic can expect, the pooled ones an upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from edgelesion.metrics import wilson_interval

# A source is scored on its own when it holds at least this many images of the positive class and of a
# look-alike: fewer give an AUC interval wider than the gap it is meant to show.
MIN_PER_SOURCE = 10
AUC_METHOD = "ROC AUC with the Hanley-McNeil 95% interval"


def auc_estimate(positive_scores: np.ndarray, negative_scores: np.ndarray) -> dict[str, Any]:
    """AUC of positives against negatives with the Hanley-McNeil (1982) 95% interval (None without both)."""
    n1, n2 = len(positive_scores), len(negative_scores)
    if not n1 or not n2:
        return {"value": None, "ci95": None, "n_positive": n1, "n_negative": n2}
    labels = np.r_[np.ones(n1), np.zeros(n2)]
    auc = float(roc_auc_score(labels, np.r_[positive_scores, negative_scores]))
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = np.sqrt(max(0.0, auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n2 - 1) * (q2 - auc**2)) / (n1 * n2))
    return {
        "value": auc,
        "ci95": [float(max(0.0, auc - 1.96 * se)), float(min(1.0, auc + 1.96 * se))],
        "n_positive": n1,
        "n_negative": n2,
    }


def lookalike_indices(classes: Sequence[str], lookalikes: Sequence[str]) -> dict[str, int]:
    """Class index of each look-alike the model knows."""
    return {name: list(classes).index(name) for name in lookalikes if name in classes}


def mixed_sources(
    labels: np.ndarray,
    sources: Sequence[str] | np.ndarray,
    positive: int,
    lookalikes: Sequence[int],
    min_images: int = MIN_PER_SOURCE,
) -> list[str]:
    """The sources holding at least `min_images` of the positive class and of some look-alike, sorted."""
    label_array, source_array = np.asarray(labels), np.asarray(sources)
    return sorted(
        str(s)
        for s in np.unique(source_array)
        if (label_array[source_array == s] == positive).sum() >= min_images
        and any((label_array[source_array == s] == k).sum() >= min_images for k in lookalikes)
    )


def too_few_reason(labels: np.ndarray, indices: dict[str, int], min_images: int = MIN_PER_SOURCE) -> str:
    """Why a source is not scored on its own: its count of the positive class (first in `indices`) and of each
    look-alike."""
    counts = ", ".join(f"{int((np.asarray(labels) == k).sum())} {name}" for name, k in indices.items())
    return f"{counts}: fewer than {min_images} of {next(iter(indices))} and of a look-alike"


def _figures(
    scores: np.ndarray,
    labels: np.ndarray,
    alert: np.ndarray | None,
    positive: int,
    lookalikes: dict[str, int],
    min_images: int,
) -> dict[str, Any]:
    is_positive = labels == positive
    result: dict[str, Any] = {
        "n_positive": int(is_positive.sum()),
        "alert_sensitivity": None
        if alert is None
        else wilson_interval(int((alert & is_positive).sum()), int(is_positive.sum())),
        "lookalikes": {},
    }
    for name, index in lookalikes.items():
        is_lookalike = labels == index
        if is_lookalike.sum() < min_images:
            continue
        result["lookalikes"][name] = {
            "n": int(is_lookalike.sum()),
            "auc": auc_estimate(scores[is_positive], scores[is_lookalike]),
            "alert_specificity": None
            if alert is None
            else wilson_interval(int((~alert & is_lookalike).sum()), int(is_lookalike.sum())),
        }
    return result


def within_source_figures(
    probabilities: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    sources: Sequence[str],
    positive_class: str,
    lookalikes: Sequence[str],
    thresholds: float | np.ndarray | None = None,
    min_images: int = MIN_PER_SOURCE,
) -> dict[str, Any] | None:
    """The positive class's AUC against each look-alike, and the alert's sensitivity and its specificity on each
    look-alike, pooled and within every source holding at least `min_images` of both; sentences where they part.

    `thresholds` is the alert threshold (one, or one per image where folds chose their own); None: no alert
    figures. None when the model has no positive class.
    """
    if positive_class not in classes:
        return None
    positive = list(classes).index(positive_class)
    known = lookalike_indices(classes, lookalikes)
    labels, source_array = np.asarray(labels), np.asarray(sources, dtype=object)
    scores = np.asarray(probabilities)[:, positive]
    alert = None if thresholds is None else scores >= np.asarray(thresholds)
    pooled = _figures(scores, labels, alert, positive, known, 1)
    scored, not_scored = {}, {}
    mixed = mixed_sources(labels, source_array, positive, list(known.values()), min_images)
    for source in sorted(set(source_array.tolist())):
        inside = source_array == source
        if source in mixed:
            scored[source] = _figures(
                scores[inside], labels[inside], None if alert is None else alert[inside], positive, known, min_images
            )
        else:
            not_scored[source] = too_few_reason(labels[inside], {positive_class: positive, **known}, min_images)
    result = {
        "positive_class": positive_class,
        "lookalikes": list(known),
        "min_images": min_images,
        "method": f"{AUC_METHOD}; alert figures with 95% Wilson intervals",
        "pooled": pooled,
        "sources": scored,
        "not_scored": not_scored,
    }
    result["parting"] = parting_sentences(result)
    return result


def _above(pooled: dict[str, Any] | None, inside: dict[str, Any] | None) -> bool:
    """The pooled value lies above the within-source 95% interval."""
    return bool(
        pooled
        and inside
        and pooled.get("value") is not None
        and inside.get("ci95")
        and pooled["value"] > inside["ci95"][1]
    )


def parting_sentences(figures: dict[str, Any]) -> list[str]:
    """One line for each source whose figure lies below the pooled one beyond its own 95% interval."""
    lines, pooled, positive = [], figures["pooled"], figures["positive_class"]
    for source, inside in figures["sources"].items():
        for name, row in inside["lookalikes"].items():
            if _above(pooled["lookalikes"][name]["auc"], row["auc"]):
                lines.append(
                    f"{positive} against {name}: AUC {row['auc']['value']:.3f} "
                    f"[{row['auc']['ci95'][0]:.3f}, {row['auc']['ci95'][1]:.3f}] inside source {source}, "
                    f"{pooled['lookalikes'][name]['auc']['value']:.3f} pooled: the pooled figure is lifted by "
                    "images whose source gives their class away"
                )
        if _above(pooled["alert_sensitivity"], inside["alert_sensitivity"]):
            lines.append(
                f"{positive} alert sensitivity {inside['alert_sensitivity']['value']:.3f} inside source "
                f"{source}, {pooled['alert_sensitivity']['value']:.3f} pooled: a new clinic may miss more"
            )
    return lines


def _estimate(value: dict[str, Any] | None) -> str:
    if not value or value.get("value") is None:
        return "n/a"
    ci = value.get("ci95")
    return f"{value['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def format_within_source(figures: dict[str, Any]) -> str:
    """Terminal lines: pooled, then each scored source, then the sources not scored and where the figures part."""
    positive = figures["positive_class"]
    lines = [
        f"  {positive} within each source (sources holding >= {figures['min_images']} of {positive} and of a "
        "look-alike), beside the pooled figures:"
    ]
    for name, row in [("pooled", figures["pooled"]), *figures["sources"].items()]:
        parts = [f"{positive} n={row['n_positive']}"]
        if row["alert_sensitivity"] is not None:
            parts.append(f"alert sensitivity {_estimate(row['alert_sensitivity'])}")
        for lookalike, pair in row["lookalikes"].items():
            text = f"vs {lookalike} (n={pair['n']}): AUC {_estimate(pair['auc'])}"
            if pair["alert_specificity"] is not None:
                text += f", alert specificity {_estimate(pair['alert_specificity'])}"
            parts.append(text)
        lines.append(f"    {name:<22} " + "; ".join(parts))
    if not figures["sources"]:
        lines.append(
            f"    no source holds >= {figures['min_images']} of {positive} and of a look-alike: "
            "the pooled figures cannot be checked within a source"
        )
    lines += [f"    not scored alone: {source} ({reason})" for source, reason in figures["not_scored"].items()]
    lines += [f"  PARTING: {sentence}" for sentence in figures["parting"]]
    return "\n".join(lines)
