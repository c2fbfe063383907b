"""Inference side, the base install: bundles run on LiteRT and onnxruntime. Never imports TensorFlow.

Imports only the shared leaves; nothing from data, train, export or bench.
"""

from edgelesion._lazy import lazy_entry_points

__getattr__, __all__ = lazy_entry_points(
    __name__, {"run_predict": "edgelesion.infer.predicting", "Classifier": "edgelesion.infer.inference"}
)
