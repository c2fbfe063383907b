"""Export: every artifact is checked against the Keras models, the bundle describes itself, writes are atomic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgelesion.errors import CheckFailed, EdgelesionError
from edgelesion.export.bundle import model_card
from edgelesion.export.exporting import export_run
from edgelesion.export.options import ARTIFACTS, ExportOptions
from edgelesion.export.parity import DEFAULT_TOLERANCES, ORIENTATIONS, Tolerance
from edgelesion.fileio import sha256_file
from tests.conftest import fast_export_options, interrupted_at

FAST = fast_export_options()


def test_every_artifact_meets_its_parity_tolerance(bundle_dir):
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    assert sorted(bundle["artifacts"]) == sorted(ARTIFACTS)
    for name, entry in bundle["artifacts"].items():
        assert entry["reference"] == "float"  # every artifact is judged against the model the user trained
        judged = entry["parity"]["vs_float"]
        assert entry["passed"] and judged["top1_agreement"] >= DEFAULT_TOLERANCES[name].min_top1_agreement, name
        assert judged["images"] == len(bundle["source_run"]["validation_files"])
        # over every orientation of every image; the images as they are beside it
        n = judged["images"]
        assert judged["views"] == ORIENTATIONS and judged["as_is"]["images"] == n and judged["as_is"]["views"] == 1
        assert judged["as_is"]["top1_agreement"] >= DEFAULT_TOLERANCES[name].min_top1_agreement - 1 / n
    for name in ("float32.tflite", "float32.onnx"):
        assert bundle["artifacts"][name]["parity"]["vs_float"]["max_abs_prob_diff"] <= 1e-4


def test_sources_travel_from_the_metadata_csv_into_the_bundle_and_its_model_card(bundle_dir, trained_run):
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    source = bundle["source_run"]
    expected = [f"clinic-{'ab'[int(path[-7:-4]) % 2]}" for path, _, _ in source["validation_files"]]
    assert source["validation_sources"] == expected
    within = bundle["validation_metrics_float"]["within_source"]
    # the tiny validation split holds under MIN_PER_SOURCE melanomas in each source: named, not scored
    assert set(within["not_scored"]) == {"clinic-a", "clinic-b"} and within["pooled"]["lookalikes"]["nevus"]["auc"]
    for entry in bundle["artifacts"].values():
        assert entry["melanoma_alert"]["rule"] == "pooled" and "no source holds" in entry["melanoma_alert"]["rule_text"]
    card = (bundle_dir / "MODEL_CARD.md").read_text()
    assert "## Within each source" in card and "not scored alone: clinic-a" in card


def test_the_model_card_says_when_the_model_sees_only_the_centre_of_an_image(bundle_dir):
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    validation = bundle["validation_metrics_float"]
    card = model_card(bundle, validation)
    assert card == (bundle_dir / "MODEL_CARD.md").read_text() and "sees only the centre" not in card
    for entry in bundle["artifacts"].values():
        entry["input"]["resize"]["centre_crop"] = 0.6
    assert "The model sees only the centre 60% of each side, resized" in model_card(bundle, validation)


def _tflite_input_description(tflite: bytes) -> str:
    """The image input's description in a .tflite file's metadata, as MediaPipe and the Task Library read it."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta
    from mediapipe.tasks.metadata import schema_py_generated as schema

    from edgelesion.export.tflite_metadata import METADATA_NAME

    model = schema.Model.GetRootAs(tflite, 0)
    (entry,) = [model.Metadata(i) for i in range(model.MetadataLength()) if model.Metadata(i).Name() == METADATA_NAME]
    metadata = meta.ModelMetadata.GetRootAs(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes(), 0)
    return metadata.SubgraphMetadata(0).InputTensorMetadata(0).Description().decode()


def test_tflite_metadata_says_what_part_of_the_image_the_model_sees(bundle_dir):
    from dataclasses import replace

    from edgelesion.export.bundle import ModelDescription
    from edgelesion.export.tflite_metadata import with_metadata
    from edgelesion.infer import Classifier

    names = [name for name in json.loads((bundle_dir / "bundle.json").read_text())["artifacts"] if "tflite" in name]
    assert len(names) == 3
    for name in names:
        description = _tflite_input_description((bundle_dir / name).read_bytes())
        assert description.startswith("RGB pixels 0-255: the whole image, resized to 32x32 "), name
    # the writer names the crop of a model that sees only the centre
    whole = Classifier.load(bundle_dir, "int8.tflite").preprocessing
    tflite = (bundle_dir / "int8.tflite").read_bytes()
    cropped = ModelDescription("int8.tflite", ["a", "b", "c"], replace(whole, centre_crop=0.6), "x")
    assert _tflite_input_description(with_metadata(tflite, cropped)).startswith(
        "RGB pixels 0-255: only the centre 60% of each side, resized to "
    )


def test_bundle_describes_its_artifacts_and_source(bundle_dir, trained_run):
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    assert bundle["schema_version"] == 4
    assert (bundle_dir / "labels.txt").read_text().splitlines() == bundle["classes"] == bundle["output"]["classes"]
    for name, entry in bundle["artifacts"].items():
        assert entry["sha256"] == sha256_file(bundle_dir / name)
        assert entry["size_bytes"] == (bundle_dir / name).stat().st_size
        assert entry["input"]["dtype"] == ("uint8" if name == "int8.tflite" else "float32")
        assert entry["input"]["shape"] == [-1, 32, 32, 3] and entry["input"]["color_order"] == "RGB"
    # no path of the exporting machine: names, fingerprints, and the run's place relative to the bundle
    source = bundle["source_run"]
    assert (bundle_dir / source["relative_path"]).resolve() == trained_run.resolve()
    assert source["name"] == trained_run.name and source["best_model_sha256"] == sha256_file(trained_run / "best.keras")
    text = (bundle_dir / "bundle.json").read_text() + (bundle_dir / "MODEL_CARD.md").read_text()
    data_dir = json.loads((trained_run / "config.json").read_text())["data_dir"]
    assert str(trained_run.parent) not in text and data_dir not in text and '"/' not in text
    assert bundle["source_run"]["data_fingerprint"] and bundle["source_run"]["validation_fingerprint"]
    assert bundle["provenance"]["versions"]["tf2onnx"].startswith("1.17")
    card = (bundle_dir / "MODEL_CARD.md").read_text()
    assert "Not a medical device" in card and "balanced accuracy" in card
    for name in ("int8.tflite", "int8.onnx"):  # both candidates of each int8 file, the shipped one marked
        int8 = bundle["artifacts"][name]
        assert (
            f"| {name} | {int8['int8_method'].upper()} (shipped) | {int8['parity']['vs_float']['top1_agreement']:.3f} |"
            in card
        )
        (other,) = set(int8["int8_candidates"]) - {int8["int8_method"]}
        assert card.count(f"| {name} | ") == 2 and f"| {name} | {other.upper()} (not shipped) |" in card


def test_int8_tflite_takes_camera_pixels_as_they_are(bundle_dir):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(bundle_dir / "int8.tflite"))
    details = interpreter.get_input_details()[0]
    assert details["dtype"] == np.uint8
    scale, zero_point = details["quantization"]
    assert zero_point == 0 and scale == pytest.approx(1 / 255)


def test_existing_bundle_is_not_overwritten_without_force(bundle_dir, trained_run):
    before = sha256_file(bundle_dir / "bundle.json")
    with pytest.raises(EdgelesionError, match="already exists"):
        export_run(trained_run, bundle_dir, FAST, progress=False)
    assert sha256_file(bundle_dir / "bundle.json") == before


def test_an_interrupted_forced_export_leaves_the_old_bundle_whole_and_force_never_replaces_other_folders(
    trained_run, bundle_dir, tmp_path, monkeypatch
):
    """Interrupted after its staging folder holds a converted artifact: the bundle being replaced is untouched."""
    import shutil

    from edgelesion.export import exporting

    target = tmp_path / "bundle"
    shutil.copytree(bundle_dir, target)
    before = {p.name: sha256_file(p) for p in target.iterdir()}
    validate, staged = exporting.validate_artifact, []

    def interrupted(name, path, *args, **kwargs):
        staged.append(sorted(p.name for p in path.parent.iterdir()))
        if len(staged) == 2:
            raise KeyboardInterrupt
        return validate(name, path, *args, **kwargs)

    monkeypatch.setattr(exporting, "validate_artifact", interrupted)
    options = ExportOptions(artifacts=("float32.tflite", "float16.tflite"))
    with pytest.raises(KeyboardInterrupt):
        export_run(trained_run, target, options, force=True, progress=False)
    assert staged[1] == ["float16.tflite", "float32.tflite"]  # the staging folder was well under way
    assert {p.name: sha256_file(p) for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # and it is gone
    monkeypatch.setattr(exporting, "validate_artifact", validate)

    export_run(trained_run, target, ExportOptions(artifacts=("float32.tflite",)), force=True, progress=False)
    assert sorted(p.name for p in target.iterdir()) == ["MODEL_CARD.md", "bundle.json", "float32.tflite", "labels.txt"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(EdgelesionError, match="not an edgelesion bundle, so --force will not replace it"):
        export_run(trained_run, mine, ExportOptions(artifacts=("float32.tflite",)), force=True, progress=False)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_qat_starts_again_for_a_changed_float_model_and_refuses_other_settings(trained_run, bundle_dir, tmp_path):
    """bundle_dir's export left a finished 1-epoch fine-tune in trained_run/qat."""
    import shutil

    from edgelesion._tf import keras
    from edgelesion.export.options import QATConfig
    from edgelesion.export.qat import qat_finetune, weights_fingerprint
    from edgelesion.fileio import read_json, write_json
    from edgelesion.train.evaluation import recorded_splits
    from edgelesion.train.runs import RunDir, read_run

    run = RunDir(tmp_path / "run")
    shutil.copytree(trained_run, run.root)
    info = read_run(run.root)
    (train,) = recorded_splits(run, info, "train")
    model = keras.models.load_model(run.best_model)
    state = run.root / "qat" / "checkpoint" / "state.json"
    assert read_json(state)["float_weights_sha256"] == weights_fingerprint(model)
    finetune = lambda config: qat_finetune(
        model,
        train.images[:16],
        train.labels[:16],
        None,
        train.images[:8],
        run.root / "qat",
        config,
        info.config,
        progress=False,
    )
    with pytest.raises(EdgelesionError, match="other settings"):
        finetune(QATConfig(epochs=2))
    with pytest.raises(EdgelesionError, match="other settings"):
        finetune(QATConfig(epochs=1, target="labels"))
    # a fine-tune recorded before QATConfig.target existed fitted the labels: reused as such
    recorded = read_json(state)
    del recorded["config"]["target"]
    write_json(state, recorded)
    finetune(QATConfig(epochs=1, target="labels"))
    assert "target" not in read_json(state)["config"]  # reused, not fine-tuned again
    with pytest.raises(EdgelesionError, match="other settings"):
        finetune(QATConfig(epochs=1))
    model.layers[-1].kernel.assign(model.layers[-1].kernel * 1.01)  # the run was resumed to a new best model
    finetune(QATConfig(epochs=1))
    assert (
        read_json(state)["float_weights_sha256"] == weights_fingerprint(model) and read_json(state)["epochs_done"] == 1
    )


def test_failed_parity_fails_the_export_and_leaves_nothing(trained_run, tmp_path):
    strict = ExportOptions(
        artifacts=("float16.tflite",), tolerances={**DEFAULT_TOLERANCES, "float16.tflite": Tolerance(1.0, 1e-12)}
    )
    with pytest.raises(CheckFailed, match=r"float16.tflite: max probability difference"):
        export_run(trained_run, tmp_path / "b", strict, progress=False)
    assert list(tmp_path.iterdir()) == []
    kept = export_run(
        trained_run,
        tmp_path / "b",
        ExportOptions(artifacts=strict.artifacts, tolerances=strict.tolerances, keep_failed=True),
        progress=False,
    )
    assert kept["artifacts"]["float16.tflite"]["passed"] is False
    assert (tmp_path / "b" / "float16.tflite").is_file()


def test_incomplete_run_is_refused_clearly(trained_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    (broken / "best.keras").unlink()
    with pytest.raises(EdgelesionError, match="no trained model yet"):
        export_run(broken, tmp_path / "b", FAST, progress=False)
    with pytest.raises(EdgelesionError, match="does not exist"):
        export_run(tmp_path / "missing", tmp_path / "b", FAST, progress=False)
    assert not (tmp_path / "b").exists()


def test_int8_tflite_gives_litert_top1_in_mediapipe_image_classifier(bundle_dir):
    entry = json.loads((bundle_dir / "bundle.json").read_text())["artifacts"]["int8.tflite"]
    assert "skipped" not in entry["mediapipe"], entry["mediapipe"]
    assert entry["mediapipe"]["top1_agreement_with_litert"] == 1.0
    assert entry["mediapipe"]["images"] == entry["parity"]["vs_float"]["images"]


def test_cli_export_exit_codes_and_messages(trained_run, tmp_path, capsys):
    from edgelesion.cli import main

    out = tmp_path / "cli-bundle"
    assert main(["export", str(trained_run), "--out", str(out), "--artifacts", "float32.tflite"]) == 0
    assert json.loads((out / "bundle.json").read_text())["artifacts"].keys() == {"float32.tflite"}
    assert main(["export", str(trained_run), "--out", str(out), "--artifacts", "float32.tflite"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                str(trained_run),
                "--out",
                str(tmp_path / "x"),
                "--artifacts",
                "float32.tflite,float32.onnx",
                "--tolerance",
                "float32.tflite=1.0,1e-12",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "float32.tflite: max probability difference" in err and "--keep-failed" in err
    assert "--artifacts float32.onnx" in err and not (tmp_path / "x").exists()  # the way out that passes, nothing left
    assert (
        main(
            [
                "export",
                str(trained_run),
                "--out",
                str(tmp_path / "x"),
                "--artifacts",
                "float32.tflite",
                "--tolerance",
                "float32.tflite=1.0,1e-12",
                "--keep-failed",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "x" / "bundle.json").read_text())["artifacts"]["float32.tflite"]["passed"] is False
    assert main(["export", str(trained_run), "--out", str(tmp_path / "y"), "--artifacts", "int4.tflite"]) == 2
    assert "unknown artifact" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--out", str(tmp_path / "y"), "--tolerance", "int8.tflite=high"]) == 2
    assert "--tolerance 'int8.tflite=high'" in capsys.readouterr().err


def test_interrupted_qat_resumes_to_the_uninterrupted_result(trained_run, tmp_path):
    import shutil

    from edgelesion.export import qat

    # kept even if it misses a tolerance (2 QAT epochs on the tiny fixture need not pass): resuming is tested
    options = ExportOptions(
        artifacts=("int8.tflite",), int8="qat", qat=qat.QATConfig(epochs=2), calibration_images=16, keep_failed=True
    )
    for name in ("full", "cut"):
        shutil.copytree(trained_run, tmp_path / name, ignore=shutil.ignore_patterns("qat"))
    full = export_run(tmp_path / "full", tmp_path / "full-bundle", options, progress=False)

    with interrupted_at(qat, epoch=1), pytest.raises(KeyboardInterrupt):
        export_run(tmp_path / "cut", tmp_path / "cut-bundle", options, progress=False)
    assert not (tmp_path / "cut-bundle").exists()
    assert json.loads((tmp_path / "cut" / "qat" / "checkpoint" / "state.json").read_text())["epochs_done"] == 1
    resumed = export_run(tmp_path / "cut", tmp_path / "cut-bundle", options, progress=False)
    # the converter's bytes differ from run to run (same predictions), so compare what the model predicts
    assert resumed["artifacts"]["int8.tflite"]["parity"] == full["artifacts"]["int8.tflite"]["parity"]


def test_a_lite0_run_exports_int8_with_its_own_input_quantization_and_8_bit_depthwise_onnx_weights(lite0_run, tmp_path):
    """Lite0 takes (p - 127) / 128: its uint8 input is pinned to scale 1/128 and zero point 127. Its int8.onnx
    keeps 8-bit weights where onnxruntime's kernels cannot saturate (depthwise convolutions; the stem's, as
    uint8) and 7 bits elsewhere."""
    import shutil

    import onnx
    from ai_edge_litert.interpreter import Interpreter
    from onnx import numpy_helper

    shutil.copytree(lite0_run, tmp_path / "run")
    # post-training only: converting Lite0's QAT graph takes TFLite 2 minutes (its QAT core: test_efficientnet_lite)
    options = ExportOptions(artifacts=("int8.tflite", "int8.onnx"), int8="ptq", calibration_images=16, keep_failed=True)
    bundle = export_run(tmp_path / "run", tmp_path / "bundle", options, progress=False)
    entry = bundle["artifacts"]["int8.tflite"]
    assert entry["input"]["quantization"] == {"scale": 1 / 128, "zero_point": 127} and entry["int8_method"] == "ptq"
    details = Interpreter(model_path=str(tmp_path / "bundle" / "int8.tflite")).get_input_details()[0]
    assert details["quantization"][1] == 127 and details["quantization"][0] == pytest.approx(1 / 128)
    # the int8 file answers like the float model through the raw-pixel path: the images it is sure of keep their
    # answer (this 2-epoch, 32 px model is unsure of most images, whose top-1 flips between CPUs' int8 kernels)
    judged = entry["parity"]["vs_float"]
    assert judged["sure_images"] >= 1 and judged["sure_top1_agreement"] == 1.0 and judged["max_abs_prob_diff"] < 0.1

    graph = onnx.load(str(tmp_path / "bundle" / "int8.onnx")).graph
    initializers = {t.name: t for t in graph.initializer}
    int8_weights = {
        t.name: numpy_helper.to_array(t)
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4
    }
    dequantized = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    convolutions = {
        node.name: (dequantized.get(node.input[1]), any(a.name == "group" and a.i > 1 for a in node.attribute))
        for node in graph.node
        if node.op_type == "Conv"
    }
    (stem, _), *rest = convolutions.values()  # nodes in topological order: the stem reads the pixels
    stem_weights = numpy_helper.to_array(initializers[stem]).astype(int)
    assert initializers[stem].data_type == onnx.TensorProto.UINT8 and np.ptp(stem_weights) > 128  # all 8 bits
    assert len(convolutions) == 49 and all(weight in int8_weights for weight, _ in rest)
    peaks = {weight: np.abs(int8_weights[weight].astype(int)).max(axis=(1, 2, 3)) for weight in int8_weights}
    depthwise = [weight for weight, grouped in convolutions.values() if grouped]
    assert len(depthwise) == 16  # Lite0's depthwise convolutions, on the full int8 grid (7 bits would stop at 64)
    assert all(peaks[weight].max() == 127 for weight in depthwise)
    assert all(peaks[weight].max() <= 64 for weight, grouped in rest if not grouped)


def test_low_top1_agreement_alone_fails_an_artifact():
    """The branch int8 artifacts trip: every probability close, but arg-max flipped on borderline images."""
    from edgelesion.export.parity import compare, failures

    reference = np.array([[0.51, 0.49]] * 90 + [[0.9, 0.1]] * 10)
    candidate = reference.copy()
    candidate[:3] = [0.49, 0.51]  # 3 of 100 flip by 0.02
    labels = np.zeros(100, dtype=int)
    figures = compare(reference, candidate, labels, scored=[0], positive=None)
    assert figures["top1_agreement"] == pytest.approx(0.97) and figures["max_abs_prob_diff"] == pytest.approx(0.02)
    problems = failures("int8.onnx", figures, Tolerance(min_top1_agreement=0.98, max_prob_diff=0.05), "float")
    assert problems == ["int8.onnx: top-1 agreement with the float model 0.9700 < 0.98"]
    assert failures("int8.onnx", figures, Tolerance(min_top1_agreement=0.97, max_prob_diff=0.05), "float") == []


def test_float16_tolerance_gates_the_bulk_of_probability_differences_not_one_outlier():
    """float16 weights move a few borderline predictions more than the rest: one outlier among thousands passes
    (the largest is gated loosely), a bulk of moved probabilities or a flipped sure answer fails."""
    from edgelesion.export.parity import compare, failures

    rng = np.random.default_rng(0)
    first = rng.uniform(0.55, 0.95, 1000)
    reference = np.stack([first, 1 - first], axis=1)
    labels = np.zeros(1000, dtype=int)
    float16 = DEFAULT_TOLERANCES["float16.tflite"]

    def moved(shift: np.ndarray) -> list[str]:
        candidate = reference + np.stack([shift, -shift], axis=1)
        return failures(
            "float16.tflite", compare(reference, candidate, labels, scored=[0], positive=None), float16, "float"
        )

    small = rng.normal(0, 1e-3, 1000)
    assert moved(small) == []
    one_outlier = small.copy()
    one_outlier[7] = 0.02  # past the old 1e-2 bound on the largest difference
    assert moved(one_outlier) == []
    bulk = small.copy()
    bulk[:50] = 0.015  # 5% of predictions move by 1.5e-2
    assert moved(bulk) == [
        "float16.tflite: 99th percentile of each prediction's largest probability difference from the float model "
        "1.50e-02 > 1e-02"
    ]
    first[:2] = 0.505  # two sure answers (p >= 0.5) turn by 1e-2: 99.8% of them kept
    reference[:] = np.stack([first, 1 - first], axis=1)
    flipped = small.copy()
    flipped[:2] = -0.01
    (problem,) = moved(flipped)
    assert "sure of" in problem and "0.9980 < 0.999" in problem
