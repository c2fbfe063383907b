"""The float baseline of a benchmark: a .keras file on TensorFlow, behind the same Runner interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgelesion.infer.runtimes import Runner, open_runner


class KerasRunner:
    """A .keras file on TensorFlow (the float baseline; imports TensorFlow, unlike the other runners)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from edgelesion._tf import keras, tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        self.path = Path(path)
        self.model = keras.models.load_model(self.path)
        self.labels = None  # a .keras file carries no label list

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of uint8 images."""
        return self.model(pixels.astype(np.float32), training=False).numpy()


def open_benchmark_runner(path: str | Path, threads: int | None = None) -> Runner:
    """The runner for an artifact or, for a .keras file, the TensorFlow baseline."""
    if Path(path).suffix == ".keras" and Path(path).is_file():
        return KerasRunner(path, threads)
    return open_runner(path, threads)
