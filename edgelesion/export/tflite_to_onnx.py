"""int8.onnx from the QAT int8.tflite file: the same integer model on onnxruntime, safe on every x86 CPU.

tf2onnx converts the TFLite file's quantized tensors to QuantizeLinear/DequantizeLinear pairs around
float ops, which onnxruntime fuses back into integer kernels (QLinearConv, QLinearAdd) when its
activations are uint8, and runs exactly on every x86 CPU when its weights have 7 bits:

- Activations are uint8. TFLite's are int8, and onnxruntime leaves a convolution in float where an
  int8 tensor is shared with a residual Add (docs/quantization.md); the same values as
  uint8 (zero point + 128) fuse everywhere.
- Weights of full convolutions and matrix products use 7 of their 8 bits. onnxruntime's uint8 x int8
  kernels on x86 CPUs without VNNI (AVX2 only) add pairs of products in 16 bits, which saturate on
  8-bit weights (2 x 255 x 127 > 32767) and not on 7-bit ones (2 x 255 x 63 < 32767). The QAT
  fine-tune trains those weights on a 7-bit grid (qat.WEIGHT_BITS) and the QAT file holds them on it
  (tflite_export.on_weight_grid); a file with wider weights is refused. Depthwise convolutions run in
  kernels that cannot saturate and keep their 8 bits.

The file takes float32 pixels 0-255 (`onnx_export.INPUT_NAME`) like every ONNX artifact, rounded to the
uint8 input the TFLite file quantizes exactly (1/255 or 1/128 per step, see scaling.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgelesion.errors import EdgelesionError
from edgelesion.export.onnx_export import INPUT_NAME, OPSET, is_depthwise
from edgelesion.export.qat import WEIGHT_LEVELS
from edgelesion.quiet import native_stderr_dropped

MATRIX_OPS = ("Conv", "MatMul", "Gemm")  # the ops onnxruntime runs in its uint8 x int8 matrix kernels


def convert_int8_tflite(tflite: Path, target: Path) -> None:
    """Write `target`, the int8.onnx equivalent of the int8 `tflite` file (see the module docstring)."""
    import tf2onnx

    with tempfile.TemporaryDirectory() as scratch:
        converted = Path(scratch) / "converted.onnx"
        with native_stderr_dropped():  # tf2onnx reads the file through a TFLite interpreter, which announces itself
            tf2onnx.convert.from_tflite(str(tflite), opset=OPSET, output_path=str(converted))
        model = onnx.load(str(converted))
    for_onnxruntime(model)
    onnx.save(model, str(target))


def for_onnxruntime(model: onnx.ModelProto) -> None:
    """Rewrite a converted int8 TFLite model in place as the module docstring says: uint8 activations, float32
    pixels in; weights that could saturate (more than 7 bits outside depthwise convolutions) are refused."""
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    weights = [node for node in graph.node if node.op_type == "DequantizeLinear" and node.input[0] in constants]
    _check_seven_bit_weights(graph, constants, weights)
    replaced = _uint8_activations(graph, constants, skip={id(node) for node in weights})
    _float_pixel_input(graph)
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    kept = [tensor for tensor in graph.initializer if tensor.name in used or tensor.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept)  # without the int8 zero points no node reads any more
    del graph.value_info[:]  # shapes inferred before the rewrite name int8 types; onnxruntime infers them again
    onnx.checker.check_model(model)


def _check_seven_bit_weights(
    graph: onnx.GraphProto, constants: dict[str, onnx.TensorProto], weights: list[onnx.NodeProto]
) -> None:
    """Refuse an int8 weight outside depthwise convolutions that could saturate onnxruntime's 16-bit pair sums on
    AVX2-only CPUs."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in weights:
        tensor, users = constants[node.input[0]], consumers.get(node.output[0], [])
        if (
            tensor.data_type != TensorProto.INT8
            or not any(user.op_type in MATRIX_OPS for user in users)
            or any(is_depthwise(user, tensor.dims) for user in users)
        ):
            continue
        largest = int(np.abs(numpy_helper.to_array(tensor).astype(np.int16)).max())
        if largest > WEIGHT_LEVELS:
            raise EdgelesionError(
                f"int8 weight {tensor.name} reaches {largest}, beyond the 7-bit grid (+-"
                f"{WEIGHT_LEVELS}) that keeps onnxruntime's x86 kernels from saturating: convert a "
                "QAT file made by edgelesion's export (tflite_export.on_weight_grid)"
            )


def _uint8_activations(graph: onnx.GraphProto, constants: dict[str, onnx.TensorProto], skip: set[int]) -> set[str]:
    """Every int8 activation's Quantize/DequantizeLinear (not the nodes in `skip`) moved to uint8: zero point + 128,
    the same values. Each gets new zero-point constants, so one that tf2onnx shares with a weight keeps its type
    there. Returns the names of the int8 zero points replaced."""
    uint8_zero_points: dict[str, str] = {}
    for node in graph.node:
        if (
            node.op_type not in ("QuantizeLinear", "DequantizeLinear")
            or id(node) in skip
            or len(node.input) < 3
            or node.input[2] not in constants
            or constants[node.input[2]].data_type != TensorProto.INT8
        ):
            continue
        zero_point = node.input[2]
        if zero_point not in uint8_zero_points:
            uint8_zero_points[zero_point] = name = f"{zero_point}__uint8"
            values = numpy_helper.to_array(constants[zero_point]).astype(np.int16) + 128
            graph.initializer.append(numpy_helper.from_array(values.astype(np.uint8), name))
        node.input[2] = uint8_zero_points[zero_point]
    return set(uint8_zero_points)


def _float_pixel_input(graph: onnx.GraphProto) -> None:
    """Replace the uint8 pixel input by a float32 one (pixels 0-255, as every ONNX artifact takes), quantized to uint8
    with scale 1 and zero point 0: rounded and saturated, as float32.onnx would take pixels with fractions."""
    (uint8_input,) = graph.input
    if uint8_input.type.tensor_type.elem_type != TensorProto.UINT8:
        raise EdgelesionError(
            f"the int8 TFLite file's input {uint8_input.name} is not uint8 pixels: not a file edgelesion's export made"
        )
    dims = [dim.dim_param or dim.dim_value for dim in uint8_input.type.tensor_type.shape.dim]
    graph.input.remove(uint8_input)
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims))
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.float32(1.0), "pixels_scale"),
            numpy_helper.from_array(np.uint8(0), "pixels_zero_point"),
        ]
    )
    graph.node.insert(
        0,
        helper.make_node(
            "QuantizeLinear",
            [INPUT_NAME, "pixels_scale", "pixels_zero_point"],
            [uint8_input.name],
            name="pixels_to_uint8",
        ),
    )
