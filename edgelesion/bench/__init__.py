"""Measurement side: the benchmark harness (accuracy with intervals, latency, memory) over bundles.

Imports the inference and data sides and the shared leaves; keras_runner imports TensorFlow for the float baseline.
"""

from edgelesion._lazy import lazy_entry_points

__getattr__, __all__ = lazy_entry_points(
    __name__,
    {
        "run_benchmark": "edgelesion.bench.benchmarking",
        "compare_bundles": "edgelesion.bench.benchmarking",
        "BenchmarkConfig": "edgelesion.bench.benchmarking",
    },
)
