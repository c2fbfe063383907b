"""The calibration data, defined once: a seeded sample of the training split's pixels.

It feeds the TFLite converter's representative dataset and onnxruntime's static quantization.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edgelesion.data.image_rows import ImageRows

CALIBRATION_IMAGES = 200


def calibration_sample(
    train_pixels: np.ndarray | ImageRows, *, n: int = CALIBRATION_IMAGES, seed: int = 0
) -> np.ndarray:
    """Up to `n` training images (uint8 N x H x W x 3), drawn with `seed`."""
    count = min(n, len(train_pixels))
    return train_pixels[np.sort(np.random.default_rng(seed).choice(len(train_pixels), count, replace=False))]


def representative_dataset(
    pixels: np.ndarray, *, scale: float = 1.0, offset: float = 0.0
) -> Iterator[list[np.ndarray]]:
    """The TFLite converter's representative dataset: one float32 image at a time, times `scale` plus `offset`."""
    for image in pixels:
        yield [image[None].astype(np.float32) * np.float32(scale) + np.float32(offset)]


class OnnxCalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over the same sample."""

    def __init__(self, pixels: np.ndarray, input_name: str, batch_size: int = 16) -> None:
        self.batches = iter([pixels[i : i + batch_size].astype(np.float32) for i in range(0, len(pixels), batch_size)])
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}
