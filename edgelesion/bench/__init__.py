"""Measurement side: the benchmark harness (accuracy with intervals, latency, memory) over bundles.

Imports the inference and data sides and the shared leaves; keras_runner imports TensorFlow for the float baseline.
"""
