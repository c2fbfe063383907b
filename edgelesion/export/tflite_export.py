"""Keras to TFLite: the one place converter settings are chosen, one preset per precision."""

from __future__ import annotations

import numpy as np

from edgelesion._tf import keras, tf
from edgelesion.export.calibration import representative_dataset
from edgelesion.errors import CheckFailed
from edgelesion.preprocessing import Preprocessing


def convert_float32(model: keras.Model) -> bytes:
    """Float32 TFLite of the full float model: float32 raw pixels (0-255) in, probabilities out."""
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def convert_float16(model: keras.Model) -> bytes:
    """Float16 weights (computed in float32 on CPU): float32 raw pixels in, probabilities out."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def convert_int8(quantized_core: keras.Model, calibration: np.ndarray, preprocessing: Preprocessing) -> bytes:
    """Full-integer TFLite of the QAT core: uint8 camera pixels in, float32 probabilities out.

    Every op must be int8 (the converter fails otherwise). The QAT core's input range is fixed to
    what the scaling makes of pixels 0 and 255, so the uint8 input gets the scaling's own scale and
    zero point (`Preprocessing.uint8_quantization`): pixel p means exactly the float model's scaled
    pixel. That is checked here, since feeding pixels to a wrongly quantized input silently ruins
    accuracy (tensorflow#53278).
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(quantized_core)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: representative_dataset(
        calibration, scale=preprocessing.scale, offset=preprocessing.offset)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    flatbuffer = converter.convert()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    expected_scale, expected_zero_point = preprocessing.uint8_quantization
    if zero_point != expected_zero_point or not np.isclose(scale, expected_scale, rtol=1e-6):
        raise CheckFailed(f"int8.tflite input quantization is scale {scale}, zero point {zero_point}; expected "
                          f"{expected_scale:.6g} and {expected_zero_point} so that camera pixels can be fed as they are")
    return flatbuffer
