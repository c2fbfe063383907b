"""Single-image latency of a loaded artifact: warm-up, then timed runs, summarised as percentiles."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edgelesion.infer.runtimes import Runner


def measure_latency(runner: Runner, image: np.ndarray, *, warmup: int = 20, runs: int = 200) -> dict[str, Any]:
    """Milliseconds per call of runner.predict on one image (batch 1): median, p90, p99 over `runs` timed calls."""
    batch = image[None]
    for _ in range(warmup):
        runner.predict(batch)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        runner.predict(batch)
        times[i] = (time.perf_counter() - start) * 1000.0
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "p99_ms": float(np.percentile(times, 99)),
        "runs": runs,
        "warmup": warmup,
        "times_ms": [round(float(t), 4) for t in times],
    }
