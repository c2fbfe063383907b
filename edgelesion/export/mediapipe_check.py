"""Run an int8 TFLite file in MediaPipe Tasks' ImageClassifier, the task API Android and iOS apps use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgelesion.quiet import native_stderr_dropped

INSTALL_HINT = "pip install --no-deps -r requirements-mediapipe.txt (make install does this)"


def mediapipe_probabilities(tflite_path: Path, pixels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Class scores from MediaPipe's ImageClassifier for uint8 images already at the model's input size, and the
    category name it gives each class index (empty where the file carries no labels)."""
    import mediapipe as mp
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision

    options = vision.ImageClassifierOptions(
        base_options=mp_tasks.BaseOptions(model_asset_path=str(tflite_path)), max_results=-1
    )
    scores, names = None, []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for i, image in enumerate(pixels):
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            categories = result.classifications[0].categories
            if scores is None:
                scores = np.zeros((len(pixels), len(categories)), np.float32)
                names = [""] * len(categories)
            for category in categories:
                scores[i, category.index] = category.score
                names[category.index] = category.category_name or ""
    return (scores if scores is not None else np.zeros((0, 0), np.float32)), names


def mediapipe_agreement(tflite_path: Path, pixels: np.ndarray, litert_probabilities: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement and max score difference between MediaPipe and LiteRT on the same images, and the
    category names MediaPipe returns (from the labels inside the file)."""
    from importlib.metadata import version

    with native_stderr_dropped():  # MediaPipe's interpreter announces its XNNPACK delegate
        scores, names = mediapipe_probabilities(tflite_path, pixels)
    return {
        "mediapipe_version": version("mediapipe"),
        "images": len(pixels),
        "top1_agreement_with_litert": float((scores.argmax(1) == litert_probabilities.argmax(1)).mean()),
        "max_abs_score_diff": float(np.abs(scores - litert_probabilities).max()) if len(pixels) else 0.0,
        "category_names": names,
    }
