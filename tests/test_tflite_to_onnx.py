"""The converted int8 TFLite graph rewritten for onnxruntime: the same numbers, integer kernels, and no weight that
could saturate onnxruntime's AVX2 kernels."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelesion.errors import EdgelesionError
from edgelesion.export.tflite_to_onnx import for_onnxruntime

RNG = np.random.default_rng(0)
SCALES = {"pixels": 1 / 128, "a1": 0.05, "a2": 0.08, "out": 0.2}


def _constant(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def _tflite_like_graph(pointwise_largest: int = 63) -> onnx.ModelProto:
    """What tf2onnx makes of an int8 TFLite depthwise + pointwise block: uint8 pixels in, int8 activations whose
    zero point constant is shared by every activation, an 8-bit depthwise kernel and a pointwise kernel on the
    7-bit grid (as QAT files hold it), int32 biases."""
    depthwise = RNG.integers(-127, 128, (2, 1, 3, 3)).astype(np.int8)
    pointwise = RNG.integers(-63, 64, (3, 2, 1, 1)).astype(np.int8)
    pointwise[:, 0] = pointwise_largest  # every channel reaches the grid's end, as per-channel scales make it
    dw_scale, pw_scale = np.array([0.01, 0.02], np.float32), np.array([0.01, 0.015, 0.03], np.float32)
    constants = [
        _constant("s_pixels", np.float32(SCALES["pixels"])),
        _constant("zp_pixels", np.uint8(127)),
        _constant("zp_act", np.int8(-3)),  # shared by every activation, as tf2onnx shares equal constants
        *[_constant(f"s_{name}", np.float32(scale)) for name, scale in SCALES.items() if name != "pixels"],
        _constant("w_dw", depthwise),
        _constant("s_dw", dw_scale),
        _constant("zp_dw", np.zeros(2, np.int8)),
        _constant("b_dw", RNG.integers(-500, 500, 2).astype(np.int32)),
        _constant("s_b_dw", (SCALES["a1"] * dw_scale).astype(np.float32)),
        _constant("zp_b_dw", np.zeros(2, np.int32)),
        _constant("w_pw", pointwise),
        _constant("s_pw", pw_scale),
        _constant("zp_pw", np.zeros(3, np.int8)),
        _constant("b_pw", RNG.integers(-500, 500, 3).astype(np.int32)),
        _constant("s_b_pw", (SCALES["a2"] * pw_scale).astype(np.float32)),
        _constant("zp_b_pw", np.zeros(3, np.int32)),
    ]

    def requantized(source: str, name: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node("QuantizeLinear", [source, f"s_{name}", "zp_act"], [f"{name}_q"]),
            helper.make_node("DequantizeLinear", [f"{name}_q", f"s_{name}", "zp_act"], [f"{name}_f"]),
        ]

    def dequantized(name: str, axis: int | None = 0) -> onnx.NodeProto:
        return helper.make_node("DequantizeLinear", [name, f"s_{name}", f"zp_{name}"], [f"{name}_f"], axis=axis)

    nodes = [
        helper.make_node("DequantizeLinear", ["pixels_u8", "s_pixels", "zp_pixels"], ["pixels_f"]),
        *requantized("pixels_f", "a1"),
        dequantized("w_dw"),
        helper.make_node("DequantizeLinear", ["b_dw", "s_b_dw", "zp_b_dw"], ["b_dw_f"], axis=0),
        helper.make_node("Conv", ["a1_f", "w_dw_f", "b_dw_f"], ["dw"], group=2, pads=[1, 1, 1, 1]),
        *requantized("dw", "a2"),
        dequantized("w_pw"),
        helper.make_node("DequantizeLinear", ["b_pw", "s_b_pw", "zp_b_pw"], ["b_pw_f"], axis=0),
        helper.make_node("Conv", ["a2_f", "w_pw_f", "b_pw_f"], ["pw"]),
        *requantized("pw", "out"),
    ]
    for node in nodes:  # the constants' own names: s_w_dw is s_dw, and so on
        node.input[:] = [
            {"s_w_dw": "s_dw", "zp_w_dw": "zp_dw", "s_w_pw": "s_pw", "zp_w_pw": "zp_pw"}.get(name, name)
            for name in node.input
        ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("pixels_u8", TensorProto.UINT8, ["n", 2, 5, 5])],
        [helper.make_tensor_value_info("out_f", TensorProto.FLOAT, ["n", 3, 5, 5])],
        constants,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray], optimized_path=None) -> np.ndarray:
    options = ort.SessionOptions()
    if optimized_path:
        options.optimized_model_filepath = str(optimized_path)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def test_rewrite_keeps_the_numbers_and_runs_integer_kernels(tmp_path):
    model = _tflite_like_graph()
    pixels = RNG.integers(0, 256, (4, 2, 5, 5)).astype(np.uint8)
    before = _run(model, {"pixels_u8": pixels})
    weights_before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.startswith("w_")}

    for_onnxruntime(model)
    (pixels_input,) = model.graph.input
    assert pixels_input.name == "pixels" and pixels_input.type.tensor_type.elem_type == TensorProto.FLOAT
    after = _run(model, {"pixels": pixels.astype(np.float32)}, tmp_path / "optimized.onnx")
    assert np.array_equal(after, before)  # int8 activations as uint8: the same values
    # float pixels with fractions are rounded (not truncated) and saturated, as float32.onnx would take them
    assert np.array_equal(_run(model, {"pixels": pixels.astype(np.float32) - 0.3}), after)
    assert np.array_equal(_run(model, {"pixels": np.where(pixels == 255, 300.0, pixels).astype(np.float32)}), after)
    weights_after = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.startswith("w_")}
    assert weights_after.keys() == weights_before.keys()
    assert all(np.array_equal(weights_after[name], weights_before[name]) for name in weights_before)
    initializers = {t.name: t for t in model.graph.initializer}
    activation_zero_points = {
        initializers[node.input[2]].data_type for node in model.graph.node if node.op_type == "QuantizeLinear"
    }
    assert activation_zero_points == {TensorProto.UINT8}
    assert "zp_act" not in initializers  # the int8 constant no node reads any more is gone

    optimized = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert optimized.count("QLinearConv") == 2 and "Conv" not in optimized


def test_a_pointwise_weight_beyond_seven_bits_is_refused_and_an_eight_bit_depthwise_one_is_not():
    """2 x 255 x 64 still fits 16 bits, so 64 would be safe; the grid QAT trains ends at 63."""
    for_onnxruntime(_tflite_like_graph(pointwise_largest=63))  # the depthwise kernel reaches +-127
    with pytest.raises(EdgelesionError, match="w_pw reaches 64, beyond the 7-bit grid"):
        for_onnxruntime(_tflite_like_graph(pointwise_largest=64))
