"""Keras to TFLite: the one place converter settings are chosen, one preset per precision."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelesion._tf import keras, tf
from edgelesion.errors import CheckFailed, EdgelesionError
from edgelesion.export.calibration import representative_dataset
from edgelesion.export.scaling import core_model
from edgelesion.infer.runtimes import litert_interpreter
from edgelesion.preprocessing import Preprocessing
from edgelesion.quiet import native_stderr_dropped


def converted(converter: tf.lite.TFLiteConverter) -> bytes:
    """The converter's flatbuffer; its C++ notices (the quantizer's settings, MLIR passes) dropped unless verbose."""
    with native_stderr_dropped():
        return converter.convert()


def convert_float32(model: keras.Model) -> bytes:
    """Float32 TFLite of the full float model: float32 raw pixels (0-255) in, probabilities out."""
    return converted(tf.lite.TFLiteConverter.from_keras_model(model))


def convert_float16(model: keras.Model) -> bytes:
    """Float16 weights (computed in float32 on CPU): float32 raw pixels in, probabilities out."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converted(converter)


def _full_integer_converter(
    model: keras.Model, calibration: np.ndarray, preprocessing: Preprocessing
) -> tf.lite.TFLiteConverter:
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
        pinned, scale=preprocessing.scale, offset=preprocessing.offset
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    return converter


def _checked_input_quantization(flatbuffer: bytes, preprocessing: Preprocessing) -> bytes:
    """Refuse an int8 file whose uint8 input is not quantized exactly as the model's scaling.

    Feeding pixels to a wrongly quantized input silently ruins accuracy (tensorflow#53278).
    """
    scale, zero_point = litert_interpreter(model_content=flatbuffer).get_input_details()[0]["quantization"]
    expected_scale, expected_zero_point = preprocessing.uint8_quantization
    if zero_point != expected_zero_point or not np.isclose(scale, expected_scale, rtol=1e-6):
        raise CheckFailed(
            f"int8.tflite input quantization is scale {scale}, zero point {zero_point}; expected "
            f"{expected_scale:.6g} and {expected_zero_point} so that camera pixels can be fed as they are"
        )
    return flatbuffer


def convert_int8_qat(
    float_model: keras.Model, quantized_core: keras.Model, calibration: np.ndarray, preprocessing: Preprocessing
) -> bytes:
    """Full-integer TFLite of the QAT core (its fake-quant ranges, Dense kernels per output channel, see
    qat.for_conversion) up to the features, then its classifier head and softmax in float32 (`float_head_tail`):
    uint8 camera pixels in, float32 probabilities out."""
    from edgelesion.export.qat import for_conversion

    converter = _full_integer_converter(for_conversion(float_model, quantized_core), calibration, preprocessing)
    return _checked_input_quantization(on_weight_grid(float_head_tail(converted(converter))), preprocessing)


INT8_LEVELS = 127


def on_weight_grid(flatbuffer: bytes) -> bytes:
    """Put a QAT file's int8 convolution and Dense weights back on the 7-bit grid QAT trained them on
    (qat.WEIGHT_BITS): values x 63/127, scales x 127/63, and each bias (scale: input scale x weight scale)
    rescaled with them. Depthwise convolutions keep their 8 bits.

    TFLite's converter stores a fake-quantized kernel scaled to the full int8 range, each value rounded to
    the nearest of 255 levels rather than kept on QAT's 127: within a quarter of an 8-bit step, yet on the
    20-epoch Lite0 that file kept 1.1 points fewer of the QAT model's answers than the same file on the grid
    (docs/quantization.md). On the grid, the file is also what tflite_to_onnx converts: 7-bit
    weights cannot saturate onnxruntime's 16-bit pair sums on x86 CPUs without VNNI.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.util import (
        _convert_model_from_bytearray_to_object,
        _convert_model_from_object_to_bytearray,
    )

    from edgelesion.export.qat import WEIGHT_LEVELS

    model = _convert_model_from_bytearray_to_object(flatbuffer)
    graph = model.subgraphs[0]
    builtin = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    ratio = INT8_LEVELS / WEIGHT_LEVELS  # 127 / 63
    matrix_ops = (schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.FULLY_CONNECTED)
    rescaled: set[int] = set()
    for op in graph.operators:
        if builtin[op.opcodeIndex] not in matrix_ops or graph.tensors[op.inputs[1]].type != schema.TensorType.INT8:
            continue  # other ops, depthwise convolutions, and the float classifier head
        constants = [(op.inputs[1], np.int8), *[(index, np.int32) for index in op.inputs[2:3] if index >= 0]]
        for index, dtype in constants:
            tensor = graph.tensors[index]
            if index in rescaled or sum(other.buffer == tensor.buffer for other in graph.tensors) != 1:
                raise EdgelesionError(
                    f"tensor {tensor.name.decode()!r} is shared (read by two ops, or its data by "
                    "another tensor): its weights cannot be put back on their grid"
                )
            values = np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype)
            model.buffers[tensor.buffer].data = np.frombuffer(
                np.round(values.astype(np.float64) / ratio).astype(dtype).tobytes(), np.uint8
            )
            tensor.quantization.scale = (np.asarray(tensor.quantization.scale, np.float64) * ratio).astype(np.float32)
            rescaled.add(index)
    return bytes(_convert_model_from_object_to_bytearray(model))


def _dequantized(model: Any, tensor: Any, dtype: type) -> np.ndarray:
    """A constant quantized tensor of a flatbuffer (object API), of numpy type `dtype`, as the float32 values it
    stands for."""
    from tensorflow.lite.python import schema_py_generated as schema

    quantization, expected = tensor.quantization, {np.int8: schema.TensorType.INT8, np.int32: schema.TensorType.INT32}
    buffer = model.buffers[tensor.buffer].data if tensor.buffer else None
    if tensor.type != expected[dtype] or quantization is None or quantization.scale is None or buffer is None:
        raise EdgelesionError(
            f"the classifier head's tensor {tensor.name.decode()!r} is not a quantized constant of "
            f"{np.dtype(dtype).name}: its head cannot be moved to float"
        )
    data = np.frombuffer(bytes(buffer), dtype).reshape(tensor.shape).astype(np.float32)
    shape = [1] * data.ndim
    shape[quantization.quantizedDimension if len(quantization.scale) > 1 else 0] = -1
    scale = np.asarray(quantization.scale, np.float32).reshape(shape)
    zero_point = np.asarray(quantization.zeroPoint, np.float32).reshape(shape)
    return (data - zero_point) * scale


def float_head_tail(flatbuffer: bytes) -> bytes:
    """Rewrite an int8 file's closing `FULLY_CONNECTED (int8) -> SOFTMAX (int8) -> DEQUANTIZE` into
    `DEQUANTIZE -> FULLY_CONNECTED (float32) -> SOFTMAX (float32)`: the classifier head in float, as in the
    post-training file (`convert_int8_ptq`).

    The converter quantizes a QAT model's head and softmax whatever it is told, so its probabilities come
    in steps of 1/256 and classes whose int8 logits are equal tie, arg-max deciding by class order (the
    20-epoch Lite0 file still tied on 1% of its validation views with a float softmax after int8 logits).
    Dequantizing the features instead keeps every int8 op before the head; the head's weights become the
    values of their int8 per-channel grid (the grid QAT trained on), its bias the int32 bias's values.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.util import (
        _convert_model_from_bytearray_to_object,
        _convert_model_from_object_to_bytearray,
    )

    model = _convert_model_from_bytearray_to_object(flatbuffer)
    graph = model.subgraphs[0]
    builtin = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    ops = graph.operators
    tail = [schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.SOFTMAX, schema.BuiltinOperator.DEQUANTIZE]
    if (
        len(ops) < 3
        or [builtin[op.opcodeIndex] for op in ops[-3:]] != tail
        or list(ops[-2].inputs) != list(ops[-3].outputs)
        or list(ops[-1].inputs) != list(ops[-2].outputs)
        or list(ops[-1].outputs) != list(graph.outputs)
        or len(ops[-3].inputs) not in (2, 3)
    ):
        raise EdgelesionError(
            "the int8 file does not end in a dense classifier head, an int8 softmax and a "
            "dequantize to its float output, so its head cannot be moved to float: convert a "
            "model whose last layer is a Dense with softmax"
        )
    head, softmax, dequantize = ops[-3:]
    features, weights = graph.tensors[head.inputs[0]], graph.tensors[head.inputs[1]]
    logits, probabilities = graph.tensors[head.outputs[0]], graph.tensors[softmax.outputs[0]]
    constants = [(weights, np.int8)] + [(graph.tensors[index], np.int32) for index in head.inputs[2:] if index >= 0]
    for constant, dtype in constants:  # the kernel, and the bias where the converter kept one (not when all zero)
        if sum(tensor.buffer == constant.buffer for tensor in graph.tensors) != 1:
            raise EdgelesionError(
                f"the classifier head's {constant.name.decode()!r} shares its data with another "
                "tensor: its head cannot be moved to float"
            )
        values = _dequantized(model, constant, dtype)
        model.buffers[constant.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
        constant.type, constant.quantization = schema.TensorType.FLOAT32, None
    # the int8 logits' tensor becomes the dequantized features, the int8 probabilities' (same shape) the float
    # logits; names are bytes in the object API
    probabilities.type, probabilities.quantization, probabilities.name = schema.TensorType.FLOAT32, None, logits.name
    logits.type, logits.quantization, logits.name = schema.TensorType.FLOAT32, None, features.name + b"/dequantized"
    logits.shape, logits.shapeSignature = features.shape, features.shapeSignature
    dequantize.inputs, dequantize.outputs = [head.inputs[0]], [head.outputs[0]]
    head.inputs[0], head.outputs = head.outputs[0], [softmax.outputs[0]]
    softmax.inputs, softmax.outputs = [softmax.outputs[0]], list(graph.outputs)
    graph.operators = [*ops[:-3], dequantize, head, softmax]
    # the float kernels' versions (TFLite's op_version: a float FULLY_CONNECTED needs 6 without a bias input and
    # 5 to keep its input's dimensions), unless an int8 op of the same kind remains
    without_bias, keep_dims = len(head.inputs) < 3, bool(getattr(head.builtinOptions, "keepNumDims", False))
    versions = {head.opcodeIndex: 6 if without_bias else 5 if keep_dims else 1, softmax.opcodeIndex: 1}
    for index, version in versions.items():
        if sum(1 for other in graph.operators if other.opcodeIndex == index) == 1:
            model.operatorCodes[index].version = version
    return bytes(_convert_model_from_object_to_bytearray(model))


def _softmax_input_name(flatbuffer: bytes) -> str:
    """The name of the tensor the model's softmax reads: the logits, which the classifier head writes."""
    interpreter = litert_interpreter(model_content=flatbuffer)
    softmax = [op for op in interpreter._get_ops_details() if op["op_name"] == "SOFTMAX"]
    if len(softmax) != 1:
        raise EdgelesionError(
            f"the model has {len(softmax)} softmax ops: edgelesion's int8 export needs one, "
            "at the end, after the classifier head"
        )
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
    with native_stderr_dropped():  # each quantization pass prints its settings
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=converter.representative_dataset,
            debug_options=options(denylisted_ops=["SOFTMAX"]),
        )
        debugger.options = options(
            denylisted_ops=["SOFTMAX"], denylisted_nodes=[_softmax_input_name(debugger.calibrated_model)]
        )
        flatbuffer = modify_model_io_type(debugger.get_nondebug_quantized_model(), tf.uint8, tf.float32)
    return _checked_input_quantization(flatbuffer, preprocessing)
