"""Does an exported artifact predict what its reference Keras model predicts? Figures and tolerances.

Every artifact is judged against the float model the user trained and evaluated, on the validation
images in all their orientations. What a user needs from an int8 file is that balanced accuracy
does not move and that the images the float model is sure of keep their answer; overall top-1
agreement has a floor on borderline images that no 8-bit scheme removes, so it is reported beside
them and only gated loosely.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgelesion.data.image_rows import ImageRows
from edgelesion.infer.runtimes import top_two_margin
from edgelesion.metrics import balanced_accuracy, paired_difference, sensitivity

SURE_PROBABILITY = 0.5  # an image the reference model is sure of: its top-1 probability is at least this
# Parity is measured on each validation image in its 8 orientations (flips and quarter turns: a dermoscopic
# image has no up), so one borderline image of a small class no longer decides a tolerance alone.
ORIENTATIONS = 8


@dataclass(frozen=True)
class Tolerance:
    """What an artifact must meet against its reference model on the validation split."""

    min_top1_agreement: float  # fraction of all images with the same top-1 class
    max_prob_diff: float | None = None  # largest absolute probability difference, if checked
    min_sure_agreement: float | None = None  # top-1 agreement on the images the reference is sure of, if checked
    max_balanced_accuracy_change: float | None = None  # |artifact - reference| balanced accuracy, if checked
    max_top1_ties: float | None = None  # fraction of images whose top two probabilities are equal, if checked
    max_prob_diff_p99: float | None = None  # 99th percentile of each prediction's largest |difference|, if checked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# a tie is decided by class order (arg-max takes the first class listed; MediaPipe's ImageClassifier may take the other)
INT8_TOLERANCE = Tolerance(
    min_top1_agreement=0.90, min_sure_agreement=0.99, max_balanced_accuracy_change=0.01, max_top1_ties=0.01
)
DEFAULT_TOLERANCES = {
    "float32.tflite": Tolerance(min_top1_agreement=1.0, max_prob_diff=1e-4),
    # float16 weights move every probability a little (Lite0: median 8e-4 per prediction) and a few borderline ones
    # more, so the largest of ~3,000 differences grows with their number (Lite0 folds 0 and 1: 1.1e-2 and 1.8e-2,
    # 99th percentile 6.1e-3 and 6.4e-3): the bulk is gated at 1e-2, the largest loosely, the answers tightly
    "float16.tflite": Tolerance(
        min_top1_agreement=0.99,
        max_prob_diff=5e-2,
        min_sure_agreement=0.999,
        max_balanced_accuracy_change=0.005,
        max_prob_diff_p99=1e-2,
    ),
    "int8.tflite": INT8_TOLERANCE,
    "float32.onnx": Tolerance(min_top1_agreement=1.0, max_prob_diff=1e-4),
    "int8.onnx": INT8_TOLERANCE,
}
# int8.tflite made by QAT against the QAT model it was converted from: is the conversion faithful?
CONVERSION_TOLERANCE = Tolerance(min_top1_agreement=0.98)


def _scores(probabilities: np.ndarray, labels: np.ndarray, scored: list[int], positive: int | None) -> dict[str, Any]:
    pred = probabilities.argmax(axis=1)
    return {
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": balanced_accuracy(labels, pred, scored),
        "melanoma_sensitivity": sensitivity(labels, pred, positive),
    }


def oriented(images: np.ndarray | ImageRows) -> Iterator[np.ndarray]:
    """Each of the 8 flips and quarter turns of a batch of square images in turn, the images as they are first."""
    images = np.asarray(images)
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"orientations need square images, not {images.shape[1]}x{images.shape[2]}")
    for turned in (images, images[:, :, ::-1]):  # 2 mirror images x 4 quarter turns = ORIENTATIONS
        for quarter_turns in range(ORIENTATIONS // 2):
            yield np.ascontiguousarray(np.rot90(turned, quarter_turns, axes=(1, 2)))


def predict_oriented(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray | ImageRows) -> np.ndarray:
    """`predict`'s probabilities for every orientation of `images`, orientation after orientation (the first
    len(images) rows are for the images as they are); one orientation is in memory at a time."""
    return np.concatenate([predict(view) for view in oriented(images)])


def top1_tie_rate(probabilities: np.ndarray) -> float:
    """Fraction of rows whose two highest probabilities are exactly equal (arg-max then decides by class order)."""
    if not len(probabilities):
        return 0.0
    return float((top_two_margin(probabilities) == 0).mean())


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray,
    scored: list[int],
    positive: int | None,
    *,
    views: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Top-1 agreement (all images, and those the reference is sure of), max probability difference, top-1 ties,
    and the change in the headline metrics (candidate - reference; balanced accuracy with a paired interval).

    With `views` > 1 the probabilities hold that many views of each of the len(labels) images, view after view
    (see `predict_oriented`): every figure is over all views, and the interval resamples images. "as_is" holds
    the same figures for the first view alone (the images as they are), what a benchmark of those images measures.
    """
    images = len(labels)
    if not len(reference) == len(candidate) == views * images:
        raise ValueError(
            f"{len(reference)} reference and {len(candidate)} candidate rows for {views} views of {images} images"
        )
    tiled = np.tile(labels, views)
    ref, cand = _scores(reference, tiled, scored, positive), _scores(candidate, tiled, scored, positive)
    deltas = {
        f"delta_{k}": None if ref[k] is None else cand[k] - ref[k]
        for k in ("balanced_accuracy", "melanoma_sensitivity", "accuracy")
    }
    same = reference.argmax(1) == candidate.argmax(1)
    sure = reference.max(1) >= SURE_PROBABILITY if images else np.zeros(0, bool)
    paired = (
        paired_difference(labels, reference, candidate, scored, positive, views=views, resamples=1000, seed=seed)
        if images and scored
        else None
    )
    figures = {
        "images": images,
        "views": views,
        "top1_agreement": float(same.mean()) if images else 1.0,
        "sure_images": int(sure.sum()),  # predictions, one per view
        "sure_top1_agreement": float(same[sure].mean()) if sure.any() else None,
        "max_abs_prob_diff": float(np.abs(reference - candidate).max()) if images else 0.0,
        "p99_abs_prob_diff": float(np.quantile(np.abs(reference - candidate).max(axis=1), 0.99)) if images else 0.0,
        "top1_ties": top1_tie_rate(candidate),
        **deltas,
        "delta_balanced_accuracy_ci95": None
        if paired is None or paired["delta_balanced_accuracy"] is None
        else paired["delta_balanced_accuracy"]["ci95"],
        "reference": ref,
        "artifact": cand,
    }
    figures["as_is"] = (
        compare(reference[:images], candidate[:images], labels, scored, positive, seed=seed)
        if views > 1
        else dict(figures)
    )
    return figures


def failures(name: str, figures: dict[str, Any], tolerance: Tolerance, reference_name: str) -> list[str]:
    """Human-readable reasons `figures` miss `tolerance` (empty when they meet it)."""
    problems = []
    if figures["top1_agreement"] < tolerance.min_top1_agreement:
        problems.append(
            f"{name}: top-1 agreement with the {reference_name} model {figures['top1_agreement']:.4f} "
            f"< {tolerance.min_top1_agreement}"
        )
    sure = figures.get("sure_top1_agreement")
    if tolerance.min_sure_agreement is not None and sure is not None and sure < tolerance.min_sure_agreement:
        counted = "images" if figures.get("views", 1) == 1 else f"predictions (of {figures['views']} orientations)"
        problems.append(
            f"{name}: top-1 agreement with the {reference_name} model on the {figures['sure_images']} "
            f"{counted} it is sure of (probability >= {SURE_PROBABILITY}) {sure:.4f} "
            f"< {tolerance.min_sure_agreement}"
        )
    change = figures.get("delta_balanced_accuracy")
    if (
        tolerance.max_balanced_accuracy_change is not None
        and change is not None
        and abs(change) > tolerance.max_balanced_accuracy_change + 1e-12
    ):  # recalls are ratios: no float noise
        problems.append(
            f"{name}: balanced accuracy moved {change:+.4f} from the {reference_name} model "
            f"(more than ±{tolerance.max_balanced_accuracy_change})"
        )
    if tolerance.max_top1_ties is not None and figures["top1_ties"] > tolerance.max_top1_ties:
        problems.append(
            f"{name}: its top two probabilities are tied on {figures['top1_ties']:.4f} of the images "
            f"(more than {tolerance.max_top1_ties}): arg-max then decides by class order"
        )
    if tolerance.max_prob_diff is not None and figures["max_abs_prob_diff"] > tolerance.max_prob_diff:
        problems.append(
            f"{name}: max probability difference from the {reference_name} model "
            f"{figures['max_abs_prob_diff']:.2e} > {tolerance.max_prob_diff:.0e}"
        )
    if tolerance.max_prob_diff_p99 is not None and figures["p99_abs_prob_diff"] > tolerance.max_prob_diff_p99:
        problems.append(
            f"{name}: 99th percentile of each prediction's largest probability difference from the "
            f"{reference_name} model {figures['p99_abs_prob_diff']:.2e} > {tolerance.max_prob_diff_p99:.0e}"
        )
    return problems
