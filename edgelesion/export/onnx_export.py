"""Keras to ONNX (tf2onnx), and int8 ONNX by onnxruntime's static quantization."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgelesion._tf import keras, tf
from edgelesion.errors import EdgelesionError
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
        raise EdgelesionError(f"the ONNX graph has {len(softmax)} Softmax nodes: edgelesion's int8 export needs one, "
                              "at the end, after the classifier head")
    head, node = [], producer.get(softmax[0].input[0])
    while node is not None and node.op_type in HEAD_OPS:
        head.append(node.name)
        if node.op_type != "Add":
            break
        node = next((producer[name] for name in node.input if name in producer), None)
    return head


def quantize_static_int8(float_onnx: Path, target: Path, calibration: np.ndarray) -> None:
    """Int8 QDQ ONNX from the float32 ONNX, calibrated on the shared calibration sample (onnxruntime).

    Weights per channel with a 7-bit range (`reduce_range`): on x86 CPUs without VNNI (AVX2 only),
    onnxruntime's int8 kernels add pairs of 8-bit products in 16 bits, which saturate on full-range
    weights; measured on EfficientNet-Lite0 there, full-range weights agreed with the float model on
    61% of images and 7-bit ones on 96% (benchmarks/README.md). The softmax stays in float32 on the
    dequantized features, and so does the classifier head before it (`classifier_head_nodes`):
    probabilities keep full resolution, and classes whose int8 logits would be equal do not tie.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(float_onnx), str(prepared))
        quantize_static(str(prepared), str(target), OnnxCalibrationReader(calibration, INPUT_NAME),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                        op_types_to_quantize=sorted((set(QLinearOpsRegistry) | set(QDQRegistry)) - {"Softmax"}),
                        nodes_to_exclude=classifier_head_nodes(onnx.load(str(prepared)).graph))
