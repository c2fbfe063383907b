"""int8.onnx from the QAT int8.tflite file: the same integer model on onnxruntime, safe on every x86 CPU.

tf2onnx converts the TFLite file's quantized tensors to QuantizeLinear/DequantizeLinear pairs around
float ops, which onnxruntime fuses back into integer kernels (QLinearConv, QLinearAdd) when three
things hold, each arranged here:

- Activations are uint8. TFLite's are int8, and onnxruntime leaves a convolution in float where an
  int8 tensor is shared with a residual Add (benchmarks/README.md, session 11); the same values as
  uint8 (zero point + 128) fuse everywhere.
- Weights of full convolutions and matrix products use 7 of their 8 bits. onnxruntime's uint8 x int8
  kernels on x86 CPUs without VNNI (AVX2 only) add pairs of products in 16 bits, which saturate on
  8-bit weights (2 x 255 x 127 > 32767) and not on 7-bit ones (2 x 255 x 63 < 32767). The QAT
  fine-tune trains those weights on a 7-bit grid (qat.WEIGHT_BITS), which TFLite's converter stores
  scaled to the full int8 range; halving them back puts them on that grid again. Depthwise
  convolutions run in kernels that cannot saturate and keep their 8 bits.
- A convolution's int32 bias has the scale input scale x weight scale, rescaled with its weights.

The file takes float32 pixels 0-255 (`onnx_export.INPUT_NAME`) like every ONNX artifact, cast to the
uint8 input the TFLite file quantizes exactly (1/255 or 1/128 per step, see scaling.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgelesion.errors import EdgelesionError
from edgelesion.export.onnx_export import INPUT_NAME, OPSET

WEIGHT_LEVELS = 63  # the largest 7-bit weight magnitude (qat.WEIGHT_BITS, narrow range)
INT8_LEVELS = 127


def convert_int8_tflite(tflite: Path, target: Path) -> None:
    """Write `target`, the int8.onnx equivalent of the int8 `tflite` file (see the module docstring)."""
    import tf2onnx

    with tempfile.TemporaryDirectory() as scratch:
        converted = Path(scratch) / "converted.onnx"
        tf2onnx.convert.from_tflite(str(tflite), opset=OPSET, output_path=str(converted))
        model = onnx.load(str(converted))
    for_onnxruntime(model)
    onnx.save(model, str(target))


def for_onnxruntime(model: onnx.ModelProto) -> None:
    """Rewrite a converted int8 TFLite model in place as the module docstring says: uint8 activations, 7-bit weights
    (depthwise: 8-bit), rescaled convolution biases, float32 pixels in."""
    graph = model.graph
    _Initializers(graph).rewrite()
    _float_pixel_input(graph)
    del graph.value_info[:]  # shapes inferred before the rewrite name int8 types; onnxruntime infers them again
    onnx.checker.check_model(model)


class _Initializers:
    """The graph's constants, rewritten in place: each rewritten tensor gets a name of its own, so a constant that
    tf2onnx shares between nodes (a zero point of 0, say) keeps its value for the nodes not rewritten."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.tensors = {tensor.name: tensor for tensor in graph.initializer}
        self.producer = {output: node for node in graph.node for output in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.tensors[name])

    def add(self, name: str, value: np.ndarray) -> str:
        """A new constant named after `name`; returns its name."""
        new_name = f"{name}__edgelesion{len(self.graph.initializer)}"
        self.graph.initializer.append(numpy_helper.from_array(value, new_name))
        self.tensors[new_name] = self.graph.initializer[-1]
        return new_name

    def rewrite(self) -> None:
        weights = [node for node in self.graph.node if node.op_type == "DequantizeLinear"
                   and node.input[0] in self.tensors and self.tensors[node.input[0]].data_type == TensorProto.INT8]
        for node in weights:
            shape = self.tensors[node.input[0]].dims
            if not any(_is_depthwise(user, shape) for user in self.consumers.get(node.output[0], [])):
                self._to_seven_bits(node)
        weight_nodes = {id(node) for node in weights}
        uint8_zero_points: dict[str, str] = {}
        for node in self.graph.node:
            if (node.op_type in ("QuantizeLinear", "DequantizeLinear") and id(node) not in weight_nodes
                    and len(node.input) == 3 and node.input[2] in self.tensors
                    and self.tensors[node.input[2]].data_type == TensorProto.INT8):
                zero_point = node.input[2]
                if zero_point not in uint8_zero_points:
                    uint8_zero_points[zero_point] = self.add(zero_point, _as_uint8(self.array(zero_point)))
                node.input[2] = uint8_zero_points[zero_point]

    def _to_seven_bits(self, node: onnx.NodeProto) -> None:
        """A symmetric int8 weight on the 7-bit grid: values x 63/127, scale x 127/63, and each convolution's bias
        (scale = input scale x weight scale) rescaled with it."""
        values, scale, zero_point = (self.array(name) for name in node.input[:3])
        if np.any(zero_point):
            raise EdgelesionError(f"int8 weight {node.input[0]} is not symmetric (zero point not 0): not a file "
                                  "edgelesion's export made")
        ratio = INT8_LEVELS / WEIGHT_LEVELS
        node.input[0] = self.add(node.input[0], np.round(values.astype(np.float64) / ratio).astype(np.int8))
        node.input[1] = self.add(node.input[1], (scale.astype(np.float64) * ratio).astype(np.float32))
        for user in self.consumers.get(node.output[0], []):
            if user.op_type == "Conv" and len(user.input) > 2 and user.input[2] in self.producer:
                bias = self.producer[user.input[2]]
                bias.input[0] = self.add(bias.input[0], np.round(self.array(bias.input[0]) / ratio).astype(np.int32))
                bias.input[1] = self.add(bias.input[1], (self.array(bias.input[1]).astype(np.float64) * ratio
                                                         ).astype(np.float32))


def _is_depthwise(node: onnx.NodeProto, weight_shape: list[int]) -> bool:
    """A convolution with one input channel per group (weights group x 1 x kh x kw): what onnxruntime runs in its
    depthwise kernels."""
    group = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
    return node.op_type == "Conv" and group > 1 and list(weight_shape[:2]) == [group, 1]


def _as_uint8(zero_point: np.ndarray) -> np.ndarray:
    return (zero_point.astype(np.int16) + 128).astype(np.uint8)


def _float_pixel_input(graph: onnx.GraphProto) -> None:
    """Replace the uint8 pixel input by a float32 one (pixels 0-255, as every ONNX artifact takes), cast to uint8."""
    (uint8_input,) = graph.input
    if uint8_input.type.tensor_type.elem_type != TensorProto.UINT8:
        raise EdgelesionError(f"the int8 TFLite file's input {uint8_input.name} is not uint8 pixels: not a file "
                              "edgelesion's export made")
    dims = [dim.dim_param or dim.dim_value for dim in uint8_input.type.tensor_type.shape.dim]
    graph.input.remove(uint8_input)
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims))
    graph.node.insert(0, helper.make_node("Cast", [INPUT_NAME], [uint8_input.name], to=TensorProto.UINT8,
                                          name="pixels_to_uint8"))
