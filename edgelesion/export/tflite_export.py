"""Keras to TFLite: the one place converter settings are chosen, one preset per precision."""

from __future__ import annotations

import numpy as np

from edgelesion._tf import keras, tf
from edgelesion.export.calibration import representative_dataset
from edgelesion.errors import CheckFailed, EdgelesionError
from edgelesion.export.scaling import core_model
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


def _full_integer_converter(model: keras.Model, calibration: np.ndarray,
                            preprocessing: Preprocessing) -> tf.lite.TFLiteConverter:
    """A converter to int8 ops of a core model (input: scaled pixels), uint8 in, float32 out.

    The representative dataset is the calibration sample, scaled, with pixels 0 and 255 set in its
    first image, so the input range is exactly what the scaling makes of 0..255 whatever the sample:
    the uint8 input then gets the scaling's own scale and zero point, never one calibrated from data.
    """
    pinned = calibration.copy()
    pinned[0, 0, 0, :], pinned[0, 0, -1, :] = 0, 255
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: representative_dataset(
        pinned, scale=preprocessing.scale, offset=preprocessing.offset)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    return converter


def _checked_input_quantization(flatbuffer: bytes, preprocessing: Preprocessing) -> bytes:
    """Refuse an int8 file whose uint8 input is not quantized exactly as the model's scaling.

    Feeding pixels to a wrongly quantized input silently ruins accuracy (tensorflow#53278).
    """
    from ai_edge_litert.interpreter import Interpreter

    scale, zero_point = Interpreter(model_content=flatbuffer).get_input_details()[0]["quantization"]
    expected_scale, expected_zero_point = preprocessing.uint8_quantization
    if zero_point != expected_zero_point or not np.isclose(scale, expected_scale, rtol=1e-6):
        raise CheckFailed(f"int8.tflite input quantization is scale {scale}, zero point {zero_point}; expected "
                          f"{expected_scale:.6g} and {expected_zero_point} so that camera pixels can be fed as they are")
    return flatbuffer


def convert_int8_qat(float_model: keras.Model, quantized_core: keras.Model, calibration: np.ndarray,
                     preprocessing: Preprocessing) -> bytes:
    """Full-integer TFLite of the QAT core (its fake-quant ranges, Dense kernels per output channel, see
    qat.for_conversion): uint8 camera pixels in, float32 probabilities out."""
    from edgelesion.export.qat import for_conversion

    converter = _full_integer_converter(for_conversion(float_model, quantized_core), calibration, preprocessing)
    return _checked_input_quantization(float_softmax_tail(converter.convert()), preprocessing)


def float_softmax_tail(flatbuffer: bytes) -> bytes:
    """Rewrite an int8 file's closing `SOFTMAX (int8) -> DEQUANTIZE` into `DEQUANTIZE -> SOFTMAX (float32)`.

    The converter quantizes a QAT model's softmax whatever it is told (its output range is fixed), so its
    probabilities come in steps of 1/256: two classes tie, and arg-max decides by class order. Dequantizing
    the int8 logits first keeps every int8 op before them and gives the probabilities full resolution, as
    the post-training path does (`convert_int8_ptq`). The softmax's tensor becomes the float logits.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.util import (_convert_model_from_bytearray_to_object,
                                             _convert_model_from_object_to_bytearray)

    model = _convert_model_from_bytearray_to_object(flatbuffer)
    graph = model.subgraphs[0]
    builtin = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    ops = graph.operators
    if (len(ops) < 2 or builtin[ops[-2].opcodeIndex] != schema.BuiltinOperator.SOFTMAX
            or builtin[ops[-1].opcodeIndex] != schema.BuiltinOperator.DEQUANTIZE
            or list(ops[-1].inputs) != list(ops[-2].outputs) or list(ops[-1].outputs) != list(graph.outputs)):
        raise EdgelesionError("the int8 file does not end in an int8 softmax and a dequantize to its float output, "
                              "so its softmax cannot be moved to float: convert a model whose head ends in softmax")
    softmax, dequantize = ops[-2], ops[-1]
    logits = graph.tensors[softmax.inputs[0]]
    float_logits = graph.tensors[softmax.outputs[0]]  # the int8 probabilities' tensor, reused for the float logits
    float_logits.type, float_logits.quantization = schema.TensorType.FLOAT32, None
    float_logits.shape, float_logits.shapeSignature = logits.shape, logits.shapeSignature
    float_logits.name = logits.name + b"/dequantized"  # the object API holds names as bytes
    dequantize.inputs, dequantize.outputs = [softmax.inputs[0]], [softmax.outputs[0]]
    softmax.inputs = [softmax.outputs[0]]
    softmax.outputs = list(graph.outputs)
    graph.operators = [*ops[:-2], dequantize, softmax]
    if sum(1 for op in ops if op.opcodeIndex == softmax.opcodeIndex) == 1:
        model.operatorCodes[softmax.opcodeIndex].version = 1  # the float kernel's version
    return bytes(_convert_model_from_object_to_bytearray(model))


def _softmax_input_name(flatbuffer: bytes) -> str:
    """The name of the tensor the model's softmax reads: the logits, which the classifier head writes."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    softmax = [op for op in interpreter._get_ops_details() if op["op_name"] == "SOFTMAX"]
    if len(softmax) != 1:
        raise EdgelesionError(f"the model has {len(softmax)} softmax ops: edgelesion's int8 export needs one, "
                              "at the end, after the classifier head")
    return interpreter.get_tensor_details()[softmax[0]["inputs"][0]]["name"]


def convert_int8_ptq(float_model: keras.Model, calibration: np.ndarray, preprocessing: Preprocessing) -> bytes:
    """Post-training full-integer TFLite of the float model's core, calibrated on `calibration`.

    Every op is int8 except the classifier head and its softmax, which run in float32 on the
    dequantized int8 features: probabilities keep full resolution. An int8 softmax rounds them to
    steps of 1/256, and int8 logits tie two classes whose logits differ by less than one step (4-9%
    of the seed models' validation images), which arg-max then decides by class order; the head is
    a tiny part of the model's work. The converter cannot leave ops in float by itself, so TFLite's
    QuantizationDebugger builds the model with them denylisted, and the converter's own
    `modify_model_io_type` then gives it the uint8 input.
    """
    from tensorflow.lite.python.util import modify_model_io_type

    converter = _full_integer_converter(core_model(float_model), calibration, preprocessing)
    options = tf.lite.experimental.QuantizationDebugOptions
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=converter.representative_dataset,
        debug_options=options(denylisted_ops=["SOFTMAX"]))
    debugger.options = options(denylisted_ops=["SOFTMAX"],
                               denylisted_nodes=[_softmax_input_name(debugger.calibrated_model)])
    flatbuffer = modify_model_io_type(debugger.get_nondebug_quantized_model(), tf.uint8, tf.float32)
    return _checked_input_quantization(flatbuffer, preprocessing)
