"""Measure one artifact in a process of its own, so load time and memory are its alone.

    python -m edgelesion.bench.worker ARTIFACT PIXELS.npy RESULT.json THREADS WARMUP RUNS BATCH [latency-only]

Writes RESULT.json (timings, memory) and RESULT.npy (probabilities for every image); with `latency-only`,
load time, memory and batch-1 latency alone (a repeated timing needs no second pass over the images).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edgelesion.bench.keras_runner import open_benchmark_runner
from edgelesion.bench.latency import measure_latency
from edgelesion.infer.runtimes import predict_in_batches


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(
    artifact: Path, pixels: np.ndarray, threads: int, warmup: int, runs: int, batch: int, latency_only: bool = False
) -> tuple[dict, np.ndarray | None]:
    """Load time, memory added, batch-1 latency and (unless `latency_only`) batch throughput at `threads` threads,
    and probabilities.

    One thread setting per process: TensorFlow cannot change its thread pools once started.
    """
    rss_before = _status_kb("VmRSS")
    start = time.perf_counter()
    runner = open_benchmark_runner(artifact, threads=threads)
    load_seconds = time.perf_counter() - start
    latency = measure_latency(runner, pixels[0], warmup=warmup, runs=runs)
    if latency_only:
        return {
            "threads": threads,
            "load_seconds": load_seconds,
            "peak_memory_added_mb": (_status_kb("VmHWM") - rss_before) / 1024,
            "latency": latency,
        }, None
    probabilities = predict_in_batches(runner, pixels, batch)  # every image, for the accuracy figures
    full = pixels[: max(batch, len(pixels) // batch * batch)]  # timed on full batches only: no re-allocation
    predict_in_batches(runner, full[:batch], batch)  # warm the batch shape
    start = time.perf_counter()
    predict_in_batches(runner, full, batch)
    throughput = len(full) / (time.perf_counter() - start)
    return {
        "threads": threads,
        "load_seconds": load_seconds,
        "peak_memory_added_mb": (_status_kb("VmHWM") - rss_before) / 1024,
        "latency": latency,
        "batch_size": batch,
        "throughput_images_per_second": throughput,
    }, probabilities


def main(argv: list[str]) -> None:
    artifact, pixels_path, result_path = Path(argv[0]), Path(argv[1]), Path(argv[2])
    threads, warmup, runs, batch = (int(v) for v in argv[3:7])
    latency_only = argv[7:] == ["latency-only"]
    result, probabilities = measure(artifact, np.load(pixels_path), threads, warmup, runs, batch, latency_only)
    result_path.write_text(json.dumps(result))
    if probabilities is not None:
        np.save(result_path.with_suffix(".npy"), probabilities)


if __name__ == "__main__":
    main(sys.argv[1:])
