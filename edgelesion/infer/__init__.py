"""Inference side, the base install: bundles run on LiteRT and onnxruntime. Never imports TensorFlow.

Imports only the shared leaves; nothing from data, train, export or bench.
"""
