"""Seconds per epoch of edgelesion's training step against a bare `model.fit` on the same in-memory arrays.

    .venv/bin/python -m benchmarks.pipeline_overhead [--epochs 5]

Both train model 3 (seed-dropout, Augmentor-rebalanced training split) from the same initial
weights on the same machine: a bare fit, then edgelesion, then the bare fit again (the two bare
runs show how much the machine's own speed drifted). Goal: edgelesion <= 1.1x the bare fit.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.common import RUNS, record, require_data
from edgelesion._tf import keras, tf
from edgelesion.train.config import TrainConfig
from edgelesion.train.models import create_model
from edgelesion.data.rebalance import default_cache_dir
from edgelesion.train.runs import RunDir
from edgelesion.train.training import fit_one_epoch, prepare_data, training_arrays


class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def compiled_model(config: TrainConfig, n_classes: int) -> keras.Model:
    keras.utils.set_random_seed(config.seed)
    model = create_model(config.model, n_classes, config.preprocessing)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    config = TrainConfig(model="seed-dropout", rebalance="augmentor", epochs=args.epochs)
    data = prepare_data(require_data(), config)
    scratch = RunDir(RUNS / "pipeline-overhead")
    scratch.root.mkdir(parents=True, exist_ok=True)
    x, y, _ = training_arrays(scratch, data.train, config, default_cache_dir(), progress=False)
    n_classes = len(data.dataset.classes)

    x_float = x.astype(np.float32)
    x_tensor, y_tensor = tf.constant(x), tf.constant(y)  # as run_epochs does, once per run

    def bare_fit() -> list[float]:
        """A plain model.fit of all epochs in one call on the in-memory arrays, timed per epoch."""
        timer = EpochTimer()
        compiled_model(config, n_classes).fit(x_float, y, batch_size=config.batch_size, epochs=args.epochs,
                                              shuffle=True, callbacks=[timer], verbose=0)
        return timer.seconds

    # bare, edgelesion, bare again: drift in the machine's speed shows up as two different bare runs
    bare_seconds = bare_fit()
    ours, ours_seconds = compiled_model(config, n_classes), []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        fit_one_epoch(ours, x_tensor, y_tensor, epoch, config, None, progress=False)
        ours_seconds.append(time.perf_counter() - started)
    bare_again = bare_fit()

    # the first epoch of each includes tracing; compare the median of the rest
    bare_s = statistics.median(bare_seconds[1:] + bare_again[1:])
    ours_s = statistics.median(ours_seconds[1:])
    result = {
        "images_per_epoch": int(len(x)),
        "bare_fit_seconds_per_epoch": bare_seconds,
        "bare_fit_again_seconds_per_epoch": bare_again,
        "edgelesion_seconds_per_epoch": ours_seconds,
        "bare_fit_median_after_first": bare_s,
        "edgelesion_median_after_first": ours_s,
        "ratio": ours_s / bare_s,
        "goal": "ratio <= 1.1",
    }
    record("pipeline_overhead", result)
    print(f"bare fit {bare_s:.1f}s/epoch ({len(x) / bare_s:.0f} img/s), edgelesion {ours_s:.1f}s/epoch "
          f"({len(x) / ours_s:.0f} img/s): ratio {ours_s / bare_s:.2f}")


if __name__ == "__main__":
    main()
