"""Keras to ONNX (tf2onnx), and int8 ONNX by onnxruntime's static quantization."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgelesion._tf import keras, tf
from edgelesion.export.calibration import OnnxCalibrationReader

OPSET = 17
INPUT_NAME = "pixels"


def convert_float32(model: keras.Model, target: Path) -> None:
    """Float32 ONNX with a dynamic batch dimension: float32 raw pixels (N x H x W x 3, 0-255) in.

    tf2onnx on TensorFlow >= 2.16 needs an explicit input_signature (tensorflow-onnx#2348).
    """
    import tf2onnx

    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)]
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET, output_path=str(target))


def quantize_static_int8(float_onnx: Path, target: Path, calibration: np.ndarray) -> None:
    """Int8 QDQ ONNX from the float32 ONNX, calibrated on the shared calibration sample (onnxruntime)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(float_onnx), str(prepared))
        quantize_static(str(prepared), str(target), OnnxCalibrationReader(calibration, INPUT_NAME),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=True)
