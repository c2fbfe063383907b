"""Does an exported artifact predict what its reference Keras model predicts? Figures and tolerances."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgelesion.metrics import balanced_accuracy, sensitivity


@dataclass(frozen=True)
class Tolerance:
    """What an artifact must meet against its reference model on the validation split."""

    min_top1_agreement: float  # fraction of images with the same top-1 class
    max_prob_diff: float | None = None  # largest absolute probability difference, if checked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_TOLERANCES = {
    "float32.tflite": Tolerance(min_top1_agreement=1.0, max_prob_diff=1e-4),
    "float16.tflite": Tolerance(min_top1_agreement=0.99, max_prob_diff=1e-2),
    "int8.tflite": Tolerance(min_top1_agreement=0.98),
    "float32.onnx": Tolerance(min_top1_agreement=1.0, max_prob_diff=1e-4),
    "int8.onnx": Tolerance(min_top1_agreement=0.98),
}


def _scores(probabilities: np.ndarray, labels: np.ndarray, scored: list[int], positive: int | None) -> dict[str, Any]:
    pred = probabilities.argmax(axis=1)
    return {"accuracy": float((pred == labels).mean()), "balanced_accuracy": balanced_accuracy(labels, pred, scored),
            "melanoma_sensitivity": sensitivity(labels, pred, positive)}


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray, scored: list[int],
            positive: int | None) -> dict[str, Any]:
    """Top-1 agreement, max probability difference, and the change in the headline metrics (candidate - reference)."""
    ref, cand = _scores(reference, labels, scored, positive), _scores(candidate, labels, scored, positive)
    deltas = {f"delta_{k}": None if ref[k] is None else cand[k] - ref[k] for k in ("balanced_accuracy",
                                                                                   "melanoma_sensitivity", "accuracy")}
    return {
        "images": int(len(labels)),
        "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()),
        "max_abs_prob_diff": float(np.abs(reference - candidate).max()) if len(labels) else 0.0,
        **deltas,
        "reference": ref,
        "artifact": cand,
    }


def failures(name: str, figures: dict[str, Any], tolerance: Tolerance, reference_name: str) -> list[str]:
    """Human-readable reasons `figures` miss `tolerance` (empty when they meet it)."""
    problems = []
    if figures["top1_agreement"] < tolerance.min_top1_agreement:
        problems.append(f"{name}: top-1 agreement with the {reference_name} model {figures['top1_agreement']:.4f} "
                        f"< {tolerance.min_top1_agreement}")
    if tolerance.max_prob_diff is not None and figures["max_abs_prob_diff"] > tolerance.max_prob_diff:
        problems.append(f"{name}: max probability difference from the {reference_name} model "
                        f"{figures['max_abs_prob_diff']:.2e} > {tolerance.max_prob_diff:.0e}")
    return problems
