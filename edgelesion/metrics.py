"""Honest classification metrics: intervals on everything, and a stated class set for balanced accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest, bootstrap
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, recall_score

MIN_SUPPORT = 5  # a class with fewer evaluation images is listed, not scored
POSITIVE_CLASS = "melanoma"
LOOKALIKES = ("nevus", "seborrheic keratosis")  # the classes the positive one is mistaken for, and the reverse
BOOTSTRAP_RESAMPLES = 2000
CALIBRATION_BINS = 15


def wilson_interval(successes: int, n: int) -> dict[str, Any]:
    """A proportion with its 95% Wilson score interval (scipy)."""
    if n == 0:
        return {"value": None, "ci95": None, "n": 0, "method": "wilson"}
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return {"value": successes / n, "ci95": [float(ci.low), float(ci.high)], "n": int(n), "method": "wilson"}


def scored_class_indices(y_true: np.ndarray, n_classes: int, min_support: int = MIN_SUPPORT) -> list[int]:
    """Classes with at least `min_support` evaluation images."""
    counts = np.bincount(y_true, minlength=n_classes)
    return [c for c in range(n_classes) if counts[c] >= min_support]


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, classes: list[int]) -> float | None:
    """Mean recall over exactly `classes`; a prediction of any other class counts as a miss."""
    if not classes:
        return None
    return float(recall_score(y_true, y_pred, labels=classes, average="macro", zero_division=0))


def sensitivity(y_true: np.ndarray, y_pred: np.ndarray, positive: int | None) -> float | None:
    """Share of the `positive` class's images predicted as it (None without a positive class or image)."""
    is_pos = np.asarray(y_true) == positive
    if positive is None or not is_pos.any():
        return None
    return float((np.asarray(y_pred)[is_pos] == positive).mean())


def calibration_bins(y_true: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Top-1 confidence against accuracy in equal-width confidence bins, and the expected calibration error.

    ECE is the image-weighted mean gap |accuracy - confidence| over the bins (Guo et al. 2017).
    """
    confidence = np.asarray(probabilities).max(axis=1)
    correct = np.asarray(probabilities).argmax(axis=1) == np.asarray(y_true)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows: list[dict[str, Any]] = [
        {
            "low": b / bins,
            "high": (b + 1) / bins,
            "n": int((which == b).sum()),
            "confidence": float(confidence[which == b].mean()) if (which == b).any() else None,
            "accuracy": float(correct[which == b].mean()) if (which == b).any() else None,
        }
        for b in range(bins)
    ]
    ece = sum(r["n"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["n"]) / max(1, len(confidence))
    return {
        "expected_calibration_error": float(ece),
        "bins": rows,
        "method": f"{bins} equal-width top-1 confidence bins",
    }


def balanced_accuracy_interval(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[int], *, seed: int = 0
) -> list[float] | None:
    """95% percentile interval of balanced accuracy from a class-stratified bootstrap (scipy)."""
    correct = [(y_pred[y_true == c] == c).astype(float) for c in classes]
    if not correct or min(len(x) for x in correct) < 2:
        return None

    def mean_recall(*samples: np.ndarray, axis: int) -> np.ndarray:
        return np.mean([s.mean(axis=axis) for s in samples], axis=0)

    result = bootstrap(
        tuple(correct),
        mean_recall,
        n_resamples=BOOTSTRAP_RESAMPLES,
        vectorized=True,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def paired_difference(
    labels: np.ndarray,
    baseline: np.ndarray,
    candidate: np.ndarray,
    scored: list[int],
    positive: int | None,
    *,
    views: int = 1,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Candidate minus baseline (probabilities, arg-max) in balanced accuracy and melanoma sensitivity, with paired
    bootstrap 95% intervals: both are resampled on the same images, so the interval is that of the difference.

    With `views` > 1 the probabilities hold that many views of every image, view after view (rows
    v * len(labels) + i); each image counts once, with its views' mean, and the bootstrap resamples images.
    """
    rng = np.random.default_rng(seed)
    # per image: +1 where only the candidate is right, -1 where only the baseline is; a class's recall difference
    # is this mean over its images, so each resample costs a few means, not a metric library call
    tiled = np.tile(labels, views)
    gain = (candidate.argmax(1) == tiled).astype(float) - (baseline.argmax(1) == tiled).astype(float)
    gain = gain.reshape(views, len(labels)).mean(axis=0)
    present = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in present]
    in_scored = np.isin(present, scored)
    is_positive = present == positive

    def deltas(class_gains: np.ndarray) -> tuple[float, float]:
        bal = class_gains[in_scored].sum() / len(scored) if scored else 0.0  # a scored class without images adds 0
        return bal, class_gains[is_positive][0] if is_positive.any() else np.nan

    point = deltas(np.array([gain[ix].mean() for ix in by_class]))
    # resample within each class so every scored class stays present
    samples = np.array(
        [deltas(np.array([gain[rng.choice(ix, len(ix))].mean() for ix in by_class])) for _ in range(resamples)]
    )

    def estimate(column: int) -> dict[str, Any] | None:
        if np.isnan(point[column]):  # no melanoma in the evaluation set
            return None
        return {"value": float(point[column]), "ci95": np.percentile(samples[:, column], [2.5, 97.5]).tolist()}

    return {
        "delta_balanced_accuracy": estimate(0),
        "delta_melanoma_sensitivity": estimate(1),
        "method": f"paired, class-stratified bootstrap, {resamples} resamples",
    }


def classification_metrics(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    *,
    min_support: int = MIN_SUPPORT,
    scored_classes: list[str] | None = None,
    positive_class: str = POSITIVE_CLASS,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything `evaluate` reports, as a JSON-ready dict; balanced accuracy and melanoma first.

    `scored_classes` fixes the class set of balanced accuracy (to compare two evaluations on the
    same footing); by default it is every class with at least `min_support` images here.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(probabilities).argmax(axis=1)
    n_classes = len(class_names)
    support = np.bincount(y_true, minlength=n_classes)
    if scored_classes is None:
        scored = scored_class_indices(y_true, n_classes, min_support)
    else:
        scored = [class_names.index(name) for name in scored_classes]
    unscored = [
        {
            "class": class_names[c],
            "n": int(support[c]),
            "reason": f"fewer than {min_support} images to score"
            if support[c] < min_support
            else "outside the stated class set",
        }
        for c in range(n_classes)
        if c not in scored
    ]
    precision, _recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(n_classes)), zero_division=0
    )
    per_class = {
        name: {
            "n": int(support[c]),
            "scored": c in scored,
            "recall": wilson_interval(int(((y_pred == c) & (y_true == c)).sum()), int(support[c])),
            "precision": float(precision[c]),
            "f1": float(f1[c]),
        }
        for c, name in enumerate(class_names)
    }
    metrics: dict[str, Any] = {
        "balanced_accuracy": {
            "value": balanced_accuracy(y_true, y_pred, scored),
            "ci95": balanced_accuracy_interval(y_true, y_pred, scored, seed=seed),
            "method": f"mean recall over the stated classes; class-stratified bootstrap, {BOOTSTRAP_RESAMPLES} resamples",
            "classes": [class_names[c] for c in scored],
        },
    }
    if positive_class in class_names:
        pos = class_names.index(positive_class)
        is_pos, said_pos = y_true == pos, y_pred == pos
        metrics[f"{positive_class}_sensitivity"] = wilson_interval(int((is_pos & said_pos).sum()), int(is_pos.sum()))
        metrics[f"{positive_class}_specificity"] = wilson_interval(
            int((~is_pos & ~said_pos).sum()), int((~is_pos).sum())
        )
    metrics["accuracy"] = wilson_interval(int((y_pred == y_true).sum()), len(y_true))
    metrics["n_images"] = len(y_true)
    metrics["per_class"] = per_class
    metrics["unscored_classes"] = unscored
    metrics["class_names"] = list(class_names)
    metrics["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist()
    metrics["calibration"] = calibration_bins(y_true, probabilities)
    return metrics


def format_mean_sd(figure: dict[str, Any]) -> str:
    """'0.748 ± 0.051' from a {"mean", "sd"} summary over folds (or '0.748' from one fold, 'n/a' from none)."""
    if figure["mean"] is None:
        return "n/a"
    return f"{figure['mean']:.3f}" + ("" if figure["sd"] is None else f" ± {figure['sd']:.3f}")


def format_estimate(estimate: dict[str, Any]) -> str:
    """'0.712 [0.640, 0.776]' (or 'n/a')."""
    if estimate.get("value") is None:
        return "n/a"
    ci = estimate.get("ci95")
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else " [interval n/a]"
    count = f" (n={estimate['n']})" if "n" in estimate else ""
    return f"{estimate['value']:.3f}{interval}{count}"


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """A terminal summary: balanced accuracy and melanoma sensitivity first, then the rest."""
    lines = [title] if title else []
    bal = metrics["balanced_accuracy"]
    lines.append(f"  balanced accuracy     {format_estimate(bal)}  over {len(bal['classes'])} classes")
    for key, value in metrics.items():
        if key.endswith(("_sensitivity", "_specificity")):
            lines.append(f"  {key.replace('_', ' '):<21} {format_estimate(value)}  (arg-max)")
    if alert := metrics.get("melanoma_alert"):
        lines.append(
            f"  melanoma alert at p >= {alert['threshold']:.3f}: sensitivity {format_estimate(alert['sensitivity'])}, "
            f"specificity {format_estimate(alert['specificity'])}"
        )
    lines.append(f"  accuracy              {format_estimate(metrics['accuracy'])}")
    if "calibration" in metrics:
        lines.append(
            f"  expected calibration error {metrics['calibration']['expected_calibration_error']:.3f} "
            "(top-1 confidence against accuracy)"
        )
    lines.append(f"  {'class':<28} {'n':>4}  {'recall [95% CI]':<24} {'precision':>9} {'f1':>6}")
    for name, row in metrics["per_class"].items():
        recall = format_estimate({k: v for k, v in row["recall"].items() if k != "n"})
        mark = "" if row["scored"] else "  (not scored)"
        lines.append(f"  {name:<28} {row['n']:>4}  {recall:<24} {row['precision']:>9.3f} {row['f1']:>6.3f}{mark}")
    for item in metrics["unscored_classes"]:
        lines.append(f"  not in balanced accuracy: {item['class']} ({item['n']} images: {item['reason']})")
    return "\n".join(lines)
