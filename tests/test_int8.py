"""int8 artifacts judged against the float model: QAT or post-training, the closer one shipped, full-resolution
probabilities, and tolerances on the images the float model is sure of and on balanced accuracy."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from functools import partial

import numpy as np
import pytest

from edgelesion.export.exporting import _closeness, export_run
from edgelesion.export.options import INT8_ARTIFACTS, ExportOptions, OnnxInt8Scheme
from edgelesion.export.parity import (
    INT8_TOLERANCE,
    ORIENTATIONS,
    compare,
    failures,
    oriented,
    predict_oriented,
    top1_tie_rate,
)


@pytest.mark.parametrize("artifact", INT8_ARTIFACTS)
def test_auto_builds_both_int8_files_and_ships_the_one_closer_to_the_float_model(bundle_dir, artifact):
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    entry = bundle["artifacts"][artifact]
    candidates = entry["int8_candidates"]
    assert bundle["int8_method"] == "auto" and set(candidates) == {"qat", "ptq"}
    ranked = sorted(
        candidates,
        key=lambda method: _closeness(  # the figures bundle.json records for each
            {"parity": {"vs_float": candidates[method]["vs_float"]}}, candidates[method]["problems"], method
        ),
    )
    assert entry["int8_method"] == ranked[0]
    assert entry["parity"]["vs_float"]["top1_agreement"] == candidates[ranked[0]]["vs_float"]["top1_agreement"]
    if artifact == "int8.onnx":  # onnxruntime's quantization settings are recorded when its file ships
        assert entry.get("onnx_int8_scheme") == (asdict(OnnxInt8Scheme()) if entry["int8_method"] == "ptq" else None)
    assert [p.name for p in bundle_dir.iterdir() if p.name.startswith(".")] == []  # the other candidate is gone


def test_post_training_int8_tflite_takes_pinned_uint8_pixels_and_ends_in_a_float_softmax(trained_run, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgelesion.train.evaluation import recorded_splits
    from edgelesion.train.runs import RunDir, read_run

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("qat"))
    options = ExportOptions(artifacts=("int8.tflite",), int8="ptq", calibration_images=16)
    entry = export_run(run, tmp_path / "bundle", options, progress=False)["artifacts"]["int8.tflite"]
    assert entry["int8_method"] == "ptq" and set(entry["int8_candidates"]) == {"ptq"}
    assert not (run / "qat").exists()  # no quantization-aware fine-tune was run

    interpreter = Interpreter(model_path=str(tmp_path / "bundle" / "int8.tflite"))
    details = interpreter.get_input_details()[0]
    assert details["dtype"] == np.uint8 and details["quantization"][1] == 0
    assert details["quantization"][0] == pytest.approx(1 / 255)  # the scaling's own, not calibrated from data
    # int8 up to the features; the classifier head (float weights) and its softmax in float32
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    producer = {index: op for op in ops for index in op["outputs"]}
    (softmax,) = [op for op in ops if op["op_name"] == "SOFTMAX"]
    head = producer[softmax["inputs"][0]]
    assert head["op_name"] == "FULLY_CONNECTED" and producer[head["inputs"][0]]["op_name"] == "DEQUANTIZE"
    head_tensors = {i for i in (*head["inputs"], *head["outputs"], *softmax["outputs"]) if i >= 0}
    float_tensors = {i for i, t in tensors.items() if t["dtype"] == np.float32}
    assert float_tensors == head_tensors, "every other tensor is integer"

    # probabilities at full resolution: not on an int8 softmax's grid of 1/256
    (val,) = recorded_splits(RunDir(run), read_run(run), "val")
    interpreter.resize_tensor_input(details["index"], val.images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(details["index"], val.images)
    interpreter.invoke()
    probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    steps = probabilities * 256
    assert not np.allclose(steps, np.round(steps), atol=1e-3)
    assert top1_tie_rate(probabilities) == 0.0  # int8 logits would tie classes less than one step apart


def test_onnxruntimes_int8_onnx_has_uint8_activations_seven_bit_weights_but_the_first_convolution_and_a_float_head(
    bundle_dir, tmp_path
):
    """8-bit int8 weights saturate onnxruntime's 16-bit pair sums on AVX2-only CPUs (61% agreement on Lite0 there)
    in every op of this model (no depthwise convolution) but the first convolution, whose 8-bit uint8 weights
    run in kernels that cannot saturate; uint8 activations are what those kernels run fastest."""
    import onnx
    from onnx import numpy_helper

    from edgelesion.export.onnx_export import quantize_static_int8

    calibration = np.random.default_rng(0).integers(0, 256, (16, *_input_shape(bundle_dir)), dtype=np.uint8)
    quantize_static_int8(bundle_dir / "float32.onnx", tmp_path / "int8.onnx", calibration)
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    initializers = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    conv_weights = [initializers[producer[node.input[1]].input[0]] for node in graph.node if node.op_type == "Conv"]
    pixel_conv, *others = [(t.data_type, numpy_helper.to_array(t).astype(int)) for t in conv_weights]
    assert pixel_conv[0] == onnx.TensorProto.UINT8 and np.ptp(pixel_conv[1]) > 128  # all 8 bits in use
    weights = [
        numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2
    ]
    assert others and {data_type for data_type, _ in others} == {onnx.TensorProto.INT8}
    assert weights and max(int(np.abs(w.astype(int)).max()) for w in weights) <= 64
    activation_zero_points = {
        initializers[node.input[2]].data_type for node in graph.node if node.op_type == "QuantizeLinear"
    }
    assert activation_zero_points == {onnx.TensorProto.UINT8}
    (softmax,) = [node for node in graph.node if node.op_type == "Softmax"]
    assert softmax.output[0] == graph.output[0].name  # probabilities come straight from the float softmax
    # the classifier head before it is float too (float weights), reading the dequantized int8 features
    head = producer[softmax.input[0]]
    while head.op_type == "Add":
        head = next(producer[name] for name in head.input if name in producer)
    assert head.op_type in ("MatMul", "Gemm")
    features, weights = (producer.get(name) for name in head.input[:2])
    assert features.op_type == "DequantizeLinear" and weights is None  # a float initializer, not dequantized int8


def _input_shape(bundle_dir) -> tuple[int, int, int]:
    size = json.loads((bundle_dir / "bundle.json").read_text())["artifacts"]["float32.onnx"]["input"]["shape"][1]
    return size, size, 3


def test_int8_onnx_from_the_qat_file_runs_fused_uint8_activations_and_seven_bit_weights_as_its_tflite_does(
    bundle_dir, trained_run, tmp_path
):
    """The QAT int8.tflite, its weights on the 7-bit grid QAT trained, converted: every convolution and the hidden
    Dense fused into onnxruntime's integer kernels, no weight that could saturate them, the tflite file's answers."""
    import onnx
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter
    from onnx import numpy_helper

    from edgelesion._tf import keras
    from edgelesion.export.calibration import calibration_sample
    from edgelesion.export.qat import _dense_kernels_on_grid, load_quantized_core
    from edgelesion.export.tflite_export import convert_int8_qat
    from edgelesion.export.tflite_to_onnx import convert_int8_tflite
    from edgelesion.infer.runtimes import open_runner, predict_in_batches
    from edgelesion.train.evaluation import recorded_splits
    from edgelesion.train.models import HEAD
    from edgelesion.train.runs import RunDir, read_run

    run, info = RunDir(trained_run), read_run(trained_run)
    train, val = recorded_splits(run, info, "train", "val")
    float_model = keras.models.load_model(run.best_model)
    quantized_core = load_quantized_core(float_model, trained_run / "qat")
    qat_file = tmp_path / "qat.tflite"
    qat_file.write_bytes(
        convert_int8_qat(
            float_model, quantized_core, calibration_sample(train.images, n=16, seed=0), info.config.preprocessing
        )
    )
    convert_int8_tflite(qat_file, tmp_path / "int8.onnx")

    # the file's hidden Dense kernel is exactly the one the QAT model computes with: 7-bit, per output unit
    interpreter = Interpreter(model_path=str(qat_file))
    (hidden,) = [
        op
        for op in interpreter._get_ops_details()
        if op["op_name"] == "FULLY_CONNECTED" and interpreter.get_tensor_details()[op["inputs"][1]]["dtype"] == np.int8
    ]
    details = interpreter.get_tensor_details()[hidden["inputs"][1]]
    values = interpreter.get_tensor(details["index"]).astype(np.float64)  # output units x inputs
    assert np.abs(values).max(axis=1).tolist() == [63.0] * len(values)
    in_file = values * details["quantization_parameters"]["scales"][:, None]
    (wrapper,) = [
        layer
        for layer in quantized_core.layers
        if isinstance(getattr(layer, "layer", None), keras.layers.Dense) and layer.layer.name != HEAD
    ]
    np.testing.assert_allclose(in_file, _dense_kernels_on_grid(wrapper)["kernel:0"].T, rtol=1e-5, atol=1e-7)

    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    (pixels,) = graph.input
    assert pixels.name == "pixels" and pixels.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    initializers = {t.name: t for t in graph.initializer}
    weights = [
        numpy_helper.to_array(initializers[node.input[0]])
        for node in graph.node
        if node.op_type == "DequantizeLinear"
        and node.input[0] in initializers
        and initializers[node.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert len(weights) >= 3 and max(int(np.abs(w.astype(int)).max()) for w in weights) == 63
    assert {initializers[node.input[2]].data_type for node in graph.node if node.op_type == "QuantizeLinear"} == {
        onnx.TensorProto.UINT8
    }

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "int8.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "QLinearConv" in optimized and "Conv" not in optimized and "FusedConv" not in optimized
    assert optimized.count("DequantizeLinear") == 1  # one, before the float head: nothing else in float

    tflite, onnx_file = (
        predict_oriented(partial(predict_in_batches, open_runner(path)), val.images)
        for path in (qat_file, tmp_path / "int8.onnx")
    )
    assert (tflite.argmax(axis=1) == onnx_file.argmax(axis=1)).all()  # one integer model, two runtimes
    assert np.abs(tflite - onnx_file).max() < 0.02


def _three_class_case() -> tuple[np.ndarray, np.ndarray]:
    """100 images of class 0 the model is sure of, 100 of class 1 it is not (top-1 probability 0.45)."""
    labels = np.repeat([0, 1], 100)
    reference = np.array([[0.8, 0.1, 0.1]] * 100 + [[0.3, 0.45, 0.25]] * 100)
    return labels, reference


def test_flipping_two_sure_images_fails_an_int8_artifact_on_its_sure_agreement_alone():
    labels, reference = _three_class_case()
    candidate = reference.copy()
    candidate[:2] = [0.1, 0.8, 0.1]  # 2 of the 100 sure images change class
    figures = compare(reference, candidate, labels, scored=[0, 1], positive=None)
    assert figures["sure_images"] == 100 and figures["sure_top1_agreement"] == pytest.approx(0.98)
    assert figures["top1_agreement"] == pytest.approx(0.99) and figures["delta_balanced_accuracy"] == pytest.approx(
        -0.01
    )
    assert failures("int8.tflite", figures, INT8_TOLERANCE, "float") == [
        "int8.tflite: top-1 agreement with the float model on the 100 images it is sure of (probability >= 0.5) "
        "0.9800 < 0.99"
    ]


def test_flipping_unsure_images_fails_an_int8_artifact_on_balanced_accuracy_alone():
    labels, reference = _three_class_case()
    candidate = reference.copy()
    candidate[100:103] = [0.45, 0.3, 0.25]  # 3 unsure, correct images become wrong
    figures = compare(reference, candidate, labels, scored=[0, 1], positive=None)
    assert figures["sure_top1_agreement"] == 1.0 and figures["top1_agreement"] == pytest.approx(0.985)
    low, high = figures["delta_balanced_accuracy_ci95"]
    assert figures["delta_balanced_accuracy"] == pytest.approx(-0.015) and low <= -0.015 <= high
    assert failures("int8.tflite", figures, INT8_TOLERANCE, "float") == [
        "int8.tflite: balanced accuracy moved -0.0150 from the float model (more than ±0.01)"
    ]


def test_the_eight_orientations_are_each_image_flipped_and_turned_the_images_as_they_are_first():
    images = np.arange(2 * 3 * 3).reshape(2, 3, 3, 1)  # no symmetry: its 8 orientations all differ
    views = list(oriented(images))
    assert len(views) == ORIENTATIONS and np.array_equal(views[0], images)
    dihedral = {np.rot90(turned, k, axes=(1, 2)).tobytes() for turned in (images, images[:, ::-1]) for k in range(4)}
    assert {view.tobytes() for view in views} == dihedral and len(dihedral) == ORIENTATIONS


def test_parity_over_orientations_counts_a_flip_in_one_orientation_as_an_eighth_of_an_image():
    labels, reference = _three_class_case()
    references = np.tile(reference, (ORIENTATIONS, 1))  # orientation after orientation
    candidate = references.copy()
    candidate[100] = [0.45, 0.3, 0.25]  # an unsure, correct image turns wrong in its first orientation only
    figures = compare(references, candidate, labels, scored=[0, 1], positive=None, views=ORIENTATIONS)
    assert figures["images"] == 200 and figures["views"] == ORIENTATIONS
    assert figures["top1_agreement"] == pytest.approx(1 - 1 / 1600) and figures["sure_images"] == 800
    assert figures["delta_balanced_accuracy"] == pytest.approx(-1 / 8 / 100 / 2)
    assert figures["as_is"]["top1_agreement"] == pytest.approx(1 - 1 / 200)  # the first orientation alone
    assert figures["as_is"]["artifact"]["balanced_accuracy"] == pytest.approx(1 - 1 / 100 / 2)
    low, high = figures["delta_balanced_accuracy_ci95"]  # resampling images: one image's eighth, or none
    assert -1 / 8 / 100 / 2 * 4 <= low <= high <= 0.0


def test_oriented_predictions_come_orientation_after_orientation():
    images = np.random.default_rng(0).integers(0, 255, (3, 4, 4, 3), dtype=np.uint8)
    rows = predict_oriented(lambda view: view.reshape(len(view), -1).astype(float), images)
    views = list(oriented(images))
    for v in range(ORIENTATIONS):
        for i in range(3):  # row v * N + i is image i in orientation v
            assert np.array_equal(rows[v * 3 + i], views[v][i].ravel())


def test_an_image_wrong_in_every_orientation_counts_as_one_whole_image():
    """Had the views of one image been taken for different images, the loss would spread thin and its interval with it."""
    labels, reference = _three_class_case()
    references = np.tile(reference, (ORIENTATIONS, 1))
    candidate = references.copy()
    candidate[100::200] = [0.45, 0.3, 0.25]  # image 100, unsure and right, turns wrong in all 8 orientations
    figures = compare(references, candidate, labels, scored=[0, 1], positive=None, views=ORIENTATIONS)
    assert figures["delta_balanced_accuracy"] == pytest.approx(-1 / 100 / 2)
    assert figures["as_is"]["delta_balanced_accuracy"] == pytest.approx(-1 / 100 / 2)
    assert (
        figures["delta_balanced_accuracy_ci95"][0] <= -2 / 100 / 2
    )  # one image, drawn twice or more in 26% of resamples
    with pytest.raises(ValueError, match="for 8 views of 200 images"):
        compare(references, candidate[:-1], labels, scored=[0, 1], positive=None, views=ORIENTATIONS)


def test_top1_ties_are_counted():
    assert top1_tie_rate(np.array([[0.5, 0.5, 0.0], [0.6, 0.3, 0.1], [0.25, 0.375, 0.375], [1.0, 0.0, 0.0]])) == 0.5


def test_ties_on_more_than_one_image_in_a_hundred_fail_an_int8_artifact_on_ties_alone():
    """An int8 softmax (steps of 1/256) tied the top two classes of seed model 3 on 36% of an independent set."""
    labels, reference = _three_class_case()
    candidate = reference.copy()
    candidate[100:102] = [0.2, 0.4, 0.4]  # 2 of 200 unsure images: their top two become equal, arg-max unchanged
    figures = compare(reference, candidate, labels, scored=[0, 1], positive=None)
    assert figures["top1_ties"] == pytest.approx(0.01) and figures["top1_agreement"] == 1.0
    assert failures("int8.tflite", figures, INT8_TOLERANCE, "float") == []
    candidate[102] = [0.2, 0.4, 0.4]
    figures = compare(reference, candidate, labels, scored=[0, 1], positive=None)
    assert failures("int8.tflite", figures, INT8_TOLERANCE, "float") == [
        "int8.tflite: its top two probabilities are tied on 0.0150 of the images (more than 0.01): "
        "arg-max then decides by class order"
    ]


def test_qat_int8_tflite_has_per_channel_dense_kernels_and_a_float_head_on_the_grid_it_trained_on():
    """tfmot's default scheme gives a Dense kernel one scale; the seed models' 30,976 x 128 layer suffered most."""
    from ai_edge_litert.interpreter import Interpreter

    from edgelesion._tf import keras
    from edgelesion.export.qat import calibrate_activation_ranges, quantize_core
    from edgelesion.export.scaling import core_model, input_range, with_scaling
    from edgelesion.export.tflite_export import convert_int8_qat
    from edgelesion.preprocessing import Preprocessing
    from edgelesion.train.models import create_model

    preprocessing = Preprocessing(image_size=32)
    keras.utils.set_random_seed(0)
    model = create_model("seed-simple", 3, preprocessing)
    quantized = quantize_core(core_model(model), input_range(model))
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3)).astype(np.float32)
    # activation ranges from the float model, then a QAT step at rate 0 sets each kernel's ranges from its weights,
    # as a fine-tune's first step does: the file must carry both over (qat.for_conversion copies them)
    calibrate_activation_ranges(quantized, model, pixels)
    quantized.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    quantized.fit(pixels / 255, np.zeros(len(pixels)), batch_size=len(pixels), verbose=0)
    interpreter = Interpreter(model_content=convert_int8_qat(model, quantized, pixels, preprocessing))

    tensors = interpreter.get_tensor_details()
    ops = interpreter._get_ops_details()
    dense_kernels = [tensors[op["inputs"][1]] for op in ops if op["op_name"] == "FULLY_CONNECTED"]
    assert [k["shape"][0] for k in dense_kernels] == [128, 3]
    hidden, head = dense_kernels
    parameters = hidden["quantization_parameters"]
    assert hidden["dtype"] == np.int8 and parameters["quantized_dimension"] == 0
    assert len(parameters["scales"]) == hidden["shape"][0] and len(set(parameters["scales"])) > 1
    # the classifier head runs in float32, its weights the values of their per-output-channel int8 grid
    weights = interpreter.get_tensor(head["index"])
    assert head["dtype"] == np.float32
    steps = weights / (np.abs(weights).max(axis=1, keepdims=True) / 127)
    assert np.allclose(steps, np.round(steps), atol=1e-3) and len(np.unique(np.round(steps))) > 3

    # int8 up to the features, which are dequantized for the float32 head and softmax (the converter's are int8)
    assert [op["op_name"] for op in ops[-3:]] == ["DEQUANTIZE", "FULLY_CONNECTED", "SOFTMAX"]
    assert tensors[ops[-3]["inputs"][0]]["dtype"] == np.int8
    head_constants = [i for i in ops[-2]["inputs"][1:] if i >= 0]  # kernel (and bias, unless all zero)
    float_tensors = {t["index"] for t in tensors if t["dtype"] == np.float32}
    assert float_tensors == {*head_constants, *(op["outputs"][0] for op in ops[-3:])}, "every other tensor is integer"
    assert ops[-1]["outputs"][0] == interpreter.get_output_details()[0]["index"]

    # the file computes what the QAT model computes with float logits (the reference the export checks the
    # conversion against), its probabilities at full resolution: not on the 1/256 grid of an int8 softmax
    details = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(details["index"], pixels.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(details["index"], pixels.astype(np.uint8))
    interpreter.invoke()
    from_file = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    from_keras = with_scaling(model, quantized).predict(pixels, verbose=0)
    assert np.abs(from_file - from_keras).max() <= 1 / 256
    steps = from_file * 256
    assert not np.allclose(steps, np.round(steps), atol=1e-3)


def test_a_file_whose_head_is_not_an_int8_dense_and_softmax_is_refused_by_the_float_head_rewrite():
    from edgelesion._tf import keras
    from edgelesion.errors import EdgelesionError
    from edgelesion.export.tflite_export import convert_float32, float_head_tail
    from edgelesion.preprocessing import Preprocessing
    from edgelesion.train.models import create_model

    keras.utils.set_random_seed(0)
    float_file = convert_float32(create_model("seed-simple", 3, Preprocessing(image_size=32)))
    with pytest.raises(EdgelesionError, match="cannot be moved to float"):
        float_head_tail(float_file)  # ends FULLY_CONNECTED -> SOFTMAX in float32, no int8 softmax and dequantize


def test_qat_ranges_start_at_the_float_activations_and_the_logits_stay_float(trained_run):
    """Left at tfmot's [-6, 6], ranges clip (seed model 1's clipped logits: 81% agreement with its float model);
    the classifier head's logits are not fake-quantized at all, as its int8 file computes them in float."""
    from edgelesion._tf import keras
    from edgelesion.export.qat import calibrate_activation_ranges, quantize_core
    from edgelesion.export.scaling import core_model, input_range, with_scaling
    from edgelesion.train.evaluation import predict, recorded_splits
    from edgelesion.train.models import HEAD
    from edgelesion.train.runs import RunDir, read_run

    run = RunDir(trained_run)
    float_model = keras.models.load_model(run.best_model)
    (val,) = recorded_splits(run, read_run(trained_run), "val")
    quantized = quantize_core(core_model(float_model), input_range(float_model))
    calibrate_activation_ranges(quantized, float_model, val.images)

    def ranges(name: str) -> dict[str, float]:
        (wrapper,) = [
            layer for layer in quantized.layers if getattr(getattr(layer, "layer", None), "name", None) == name
        ]
        return {w.name.split("/")[-1]: float(w.numpy()) for w in wrapper.weights if w.shape.rank == 0}

    assert not any("activation_m" in key for key in ranges(HEAD)), "the logits are fake-quantized"
    (hidden,) = [layer for layer in float_model.layers if isinstance(layer, keras.layers.Dense) and layer.name != HEAD]
    observed = keras.Model(float_model.input, hidden.output).predict(val.images.astype(np.float32), verbose=0)
    assert ranges(hidden.name)["post_activation_min:0"] == 0.0  # ReLU
    assert ranges(hidden.name)["post_activation_max:0"] == pytest.approx(observed.max(), rel=1e-5)

    # every range calibrated, no weight changed (beyond their 7-bit grid): the QAT model keeps the float model's answers
    float_probs, qat_probs = predict(float_model, val.images), predict(with_scaling(float_model, quantized), val.images)
    assert (float_probs.argmax(axis=1) == qat_probs.argmax(axis=1)).all()
    assert np.abs(float_probs - qat_probs).max() < 0.15


def test_qat_distillation_fits_the_float_models_answers_not_the_training_labels(trained_run, tmp_path):
    """--qat-target float-model: the int8 model is taught the float model's probabilities, the answers it is judged
    against; with the training labels as target, wrong labels pull it away from the float model."""
    from edgelesion._tf import keras
    from edgelesion.export.options import QATConfig
    from edgelesion.export.qat import qat_finetune
    from edgelesion.export.scaling import with_scaling
    from edgelesion.train.evaluation import predict, recorded_splits
    from edgelesion.train.runs import RunDir, read_run

    run, info = RunDir(trained_run), read_run(trained_run)
    float_model = keras.models.load_model(run.best_model)
    train, val = recorded_splits(run, info, "train", "val")
    wrong = np.zeros(len(train.labels), np.int64)  # every training image labelled class 0
    reference = predict(float_model, val.images).argmax(1)
    agreement = {}
    for target in ("labels", "float-model"):
        config = QATConfig(epochs=3, learning_rate=1e-3, batch_size=8, target=target)
        core = qat_finetune(
            float_model, train.images, wrong, None, train.images, tmp_path / target, config, info.config, progress=False
        )
        answers = predict(with_scaling(float_model, core), val.images).argmax(1)
        agreement[target] = (answers == reference).mean()
    assert agreement["float-model"] >= 0.9
    assert agreement["labels"] <= agreement["float-model"] - 0.2
