"""Keras to ONNX (tf2onnx), and int8 ONNX by onnxruntime's static quantization."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgelesion._tf import keras, tf
from edgelesion.errors import EdgelesionError
from edgelesion.export.calibration import OnnxCalibrationReader
from edgelesion.export.options import OnnxInt8Scheme

OPSET = 17
INPUT_NAME = "pixels"


def convert_float32(model: keras.Model, target: Path) -> None:
    """Float32 ONNX with a dynamic batch dimension: float32 raw pixels (N x H x W x 3, 0-255) in.

    tf2onnx on TensorFlow >= 2.16 needs an explicit input_signature (tensorflow-onnx#2348).
    """
    import tf2onnx

    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)]
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET, output_path=str(target))


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set `metadata` (ModelDescription.onnx_properties) as the ONNX file's metadata_props, replacing any
    earlier ones (onnxruntime reads them as custom metadata)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


HEAD_OPS = ("MatMul", "Gemm", "Add")  # how tf2onnx writes a Dense layer: MatMul then Add of the bias, or one Gemm


def classifier_head_nodes(graph: onnx.GraphProto) -> list[str]:
    """The nodes that compute the logits the Softmax reads: the classifier head, from the Softmax back to its MatMul."""
    producer = {output: node for node in graph.node for output in node.output}
    softmax = [node for node in graph.node if node.op_type == "Softmax"]
    if len(softmax) != 1:
        raise EdgelesionError(
            f"the ONNX graph has {len(softmax)} Softmax nodes: edgelesion's int8 export needs one, "
            "at the end, after the classifier head"
        )
    head, node = [], producer.get(softmax[0].input[0])
    while node is not None and node.op_type in HEAD_OPS:
        head.append(node.name)
        if node.op_type != "Add":
            break
        node = next((producer[name] for name in node.input if name in producer), None)
    return head


def is_depthwise(node: onnx.NodeProto, weight_shape: list[int]) -> bool:
    """A convolution with one input and one output channel per group (weights group x 1 x kh x kw): the only
    grouped convolutions onnxruntime runs in its depthwise kernels."""
    group = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
    return node.op_type == "Conv" and group > 1 and list(weight_shape[:2]) == [group, 1]


def depthwise_conv_weights(graph: onnx.GraphProto) -> list[str]:
    """The weight initializers of the graph's depthwise convolutions (`is_depthwise`)."""
    shapes = {tensor.name: list(tensor.dims) for tensor in graph.initializer}
    return [
        node.input[1]
        for node in graph.node
        if node.input[1:2] and node.input[1] in shapes and is_depthwise(node, shapes[node.input[1]])
    ]


def pixel_conv_weight(graph: onnx.GraphProto) -> str | None:
    """The weight initializer of the graph's first convolution, the one that reads the (scaled) pixels: ONNX
    lists nodes in topological order. None when the graph has no convolution with a constant weight."""
    constants = {tensor.name for tensor in graph.initializer}
    return next((node.input[1] for node in graph.node if node.op_type == "Conv" and node.input[1] in constants), None)


def quantize_static_int8(
    float_onnx: Path, target: Path, calibration: np.ndarray, scheme: OnnxInt8Scheme = OnnxInt8Scheme()
) -> None:
    """Int8 QDQ ONNX from the float32 ONNX, calibrated on the shared calibration sample (onnxruntime), quantized
    as `scheme` says. The default scheme, which the export ships:

    uint8 activations, int8 weights per output channel. On x86 CPUs without VNNI (AVX2 only),
    onnxruntime's int8 matrix kernels (MatMul, full and pointwise convolutions) add pairs of
    uint8 x int8 products in 16 bits (`vpmaddubsw`), which saturate on full-range weights: measured
    on EfficientNet-Lite0 there, 8-bit weights agreed with the float model on 61% of images. Their
    weights keep 7 bits (`reduce_range`: 2 x 255 x 64 fits in 16 bits). Depthwise convolutions run
    in kernels that widen both operands to 16 bits and add in 32 (MLAS's depthwise kernels), so
    their weights keep all 8 bits: on Lite0, 7-bit depthwise weights cost most of int8.onnx's
    agreement, and uint8 activations run 1.6x faster than int8 ones (benchmarks/README.md). The first
    convolution, which reads the pixels (27 products per output on RGB), keeps all 8 bits as uint8
    weights, which onnxruntime runs in its U8U8 kernels: they widen both operands to 16 bits, so they
    cannot saturate. On seed model 1 its seventh bit alone cost int8.onnx the sure predictions (0.9885
    against 0.9973 over 8 orientations; no other layer's mattered).
    The softmax stays in float32 on the dequantized features, and so does the classifier head
    before it (`classifier_head_nodes`): probabilities keep full resolution, and classes whose int8
    logits would be equal do not tie.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(float_onnx), str(prepared))
        graph = onnx.load(str(prepared)).graph
        eight_bit = depthwise_conv_weights(graph) if scheme.eight_bit_weights == "depthwise" else []
        overrides = {name: [{"axis": 0, "reduce_range": False}] for name in eight_bit}
        pixel_conv = pixel_conv_weight(graph) if scheme.pixel_conv_weights == "uint8" else None
        if pixel_conv is not None:
            overrides[pixel_conv] = [
                {"axis": 0, "reduce_range": False, "symmetric": True, "quant_type": QuantType.QUInt8}
            ]
        quantize_static(
            str(prepared),
            str(target),
            OnnxCalibrationReader(calibration, INPUT_NAME),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8 if scheme.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=scheme.eight_bit_weights != "all",
            op_types_to_quantize=sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - {"Softmax"}),
            nodes_to_exclude=classifier_head_nodes(graph),
            extra_options={"TensorQuantOverrides": overrides},
        )
