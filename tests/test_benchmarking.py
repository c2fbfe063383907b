"""The benchmark harness on a tiny bundle: every field present and sane, charts written, bad bundles refused."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from edgelesion.bench.benchmarking import BenchmarkConfig, run_benchmark
from edgelesion.cli import main
from edgelesion.errors import EdgelesionError
from tests.conftest import rewrite_bundle

QUICK = BenchmarkConfig(warmup=2, runs=10, batch_size=8, resamples=100)


def run_without_keras_model(trained_run, folder):
    """A copy of the run whose best.keras is gone: float32.tflite stands in (quicker: no TensorFlow subprocess)."""
    shutil.copytree(trained_run, folder, ignore=shutil.ignore_patterns("best.keras", "checkpoints", "qat"))
    return folder


@pytest.fixture(scope="module")
def benchmark(bundle_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "result"
    return run_benchmark(bundle_dir, out, config=QUICK, progress=False), out


def test_every_artifact_and_the_baseline_are_measured(benchmark, bundle_dir, trained_run):
    result, out = benchmark
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    assert result["baseline"] == "keras float model"
    assert set(result["artifacts"]) == {"keras float model", *bundle["artifacts"]}
    n_images = len(bundle["source_run"]["validation_files"])
    for name, a in result["artifacts"].items():
        for latency in (a["latency_1_thread"], a[f"latency_{a['all_cores']}_threads"]):
            assert 0 < latency["median_ms"] <= latency["p90_ms"] <= latency["p99_ms"]
            assert len(latency["times_ms"]) == QUICK.runs
        assert a["throughput_images_per_second"] > 0 and a["size_bytes"] > 0 and a["load_seconds"] > 0
        assert a["balanced_accuracy"]["ci95"][0] <= a["balanced_accuracy"]["value"] <= a["balanced_accuracy"]["ci95"][1]
        assert a["accuracy"]["n"] == n_images
        assert set(a["recall_per_class"]) == set(bundle["classes"])
        # calibration per artifact, from that artifact's own answers: its bins hold every image, and the images
        # they count as correct are the artifact's correct top-1s (an int8 file's, not the float model's)
        bins = a["calibration"]["bins"]
        assert sum(b["n"] for b in bins) == n_images
        correct = sum(round(b["n"] * b["accuracy"]) for b in bins if b["n"])
        assert correct == round(a["accuracy"]["value"] * n_images)
        assert 0 <= a["calibration"]["expected_calibration_error"] <= 1
        if name != "keras float model":
            diff = a["difference_from_baseline"]["delta_balanced_accuracy"]
            assert diff["ci95"][0] <= diff["value"] <= diff["ci95"][1]
    assert result["artifacts"]["float32.tflite"]["top1_agreement_with_baseline"] == 1.0
    # memory is measured, not assumed: loading TensorFlow and a Keras model costs more than a LiteRT file
    memory = {name: a["peak_memory_added_mb"] for name, a in result["artifacts"].items()}
    assert memory["keras float model"] > max(memory["float32.tflite"], memory["int8.tflite"]) >= 0
    # the benchmark scores the same validation images as the export: its figures are the bundle's
    recorded = bundle["validation_metrics_float"]["balanced_accuracy"]["value"]
    assert result["artifacts"]["keras float model"]["balanced_accuracy"]["value"] == pytest.approx(recorded)
    for name, entry in bundle["artifacts"].items():
        assert result["artifacts"][name]["top1_agreement_with_baseline"] == pytest.approx(
            entry["parity"]["vs_float"]["as_is"]["top1_agreement"], abs=1 / n_images
        ), name  # one borderline image at most
    # every conv and Dense kernel weight takes part in at least one multiply-add per image
    from edgelesion._tf import keras

    assert result["run"] == str(trained_run.resolve())  # found where bundle.json records it, relative to the bundle
    model = keras.models.load_model(trained_run / "best.keras")
    kernels = sum(
        int(np.prod(l.kernel.shape)) for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))
    )
    assert result["model_flops_per_image"] >= 2 * kernels > 0
    assert result["machine_peak"]["1_thread_gflops"] > 0 and result["machine_peak"]["int8"]["1_thread_gops"] > 0
    assert result["provenance"]["machine"]["cpu"] and result["provenance"]["versions"]["onnxruntime"]
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["artifacts"].keys() == result["artifacts"].keys()
    for chart in ("accuracy_vs_latency.png", "latency_distribution.png", "reliability.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "benchmark.md").read_text()
    assert "| int8.tflite |" in report and "| expected calibration error |" in report
    from edgelesion.provenance import int8_instructions

    assert f"CPU int8 instructions: {int8_instructions(result['provenance']['machine']['cpu_flags'])}." in report
    assert "int8.tflite is " in report and "x the speed of float32.tflite at 1 thread" in report
    # the sources the export recorded for its validation files: every artifact is also read within each source
    for name, a in result["artifacts"].items():
        assert a["within_source"]["pooled"]["n_positive"] == a["melanoma_sensitivity"]["n"], name
        assert set(a["within_source"]["not_scored"]) == {"clinic-a", "clinic-b"}
    assert "## Within each source" in report


def test_each_onnx_artifact_says_where_its_time_goes_by_operator(benchmark):
    result, out = benchmark
    onnx = {name: a for name, a in result["artifacts"].items() if name.endswith(".onnx")}
    assert set(onnx) == {"float32.onnx", "int8.onnx"}
    for name, a in onnx.items():
        shares = a["op_time_shares_1_thread"]
        assert sum(shares.values()) == pytest.approx(1.0) and all(share > 0 for share in shares.values()), name
        assert list(shares.values()) == sorted(shares.values(), reverse=True), name
    # the float file runs float convolutions; the int8 file's time goes to quantized kernels and conversions
    assert not any(
        op.startswith("QLinear") or "Quantize" in op for op in onnx["float32.onnx"]["op_time_shares_1_thread"]
    )
    assert any(op.startswith("QLinear") for op in onnx["int8.onnx"]["op_time_shares_1_thread"])
    assert "op_time_shares_1_thread" not in result["artifacts"]["int8.tflite"]
    report = (out / "benchmark.md").read_text()
    top_op = next(iter(onnx["int8.onnx"]["op_time_shares_1_thread"]))
    assert f"- int8.onnx: {top_op} " in report
    assert "LiteRT runs the whole graph as one XNNPACK node" in report


def test_a_moved_bundle_names_its_run_with_run_and_float32_tflite_stands_in_for_a_gone_model(
    bundle_dir, trained_run, tmp_path, capsys
):
    copy = tmp_path / "moved" / "bundle"  # elsewhere: the run is no longer where bundle.json says, relative to it
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["artifacts"] = {"float32.tflite": manifest["artifacts"]["float32.tflite"]}
    rewrite_bundle(copy, manifest)
    with pytest.raises(
        EdgelesionError, match=f"the run '{trained_run.name}' this bundle was exported from is not at .*pass --run RUN"
    ):
        run_benchmark(copy, tmp_path / "out", config=QUICK, progress=False)
    other = tmp_path / "retrained"
    shutil.copytree(trained_run, other, ignore=shutil.ignore_patterns("checkpoints", "qat"))
    (other / "best.keras").write_bytes((other / "best.keras").read_bytes() + b"\0")  # another model
    assert main(["benchmark", str(copy), "--run", str(other), "--out", str(tmp_path / "out")]) == 2
    assert "is not the model" in capsys.readouterr().err
    (other / "best.keras").unlink()  # without its model, a run is still checked by the data it was trained on
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "data_fingerprint": "0" * 64}))
    assert main(["benchmark", str(copy), "--run", str(other), "--out", str(tmp_path / "out")]) == 2
    assert "was trained on other data" in capsys.readouterr().err
    result = run_benchmark(
        copy,
        tmp_path / "out",
        run_dir=run_without_keras_model(trained_run, tmp_path / "run"),
        config=QUICK,
        progress=False,
    )
    assert result["baseline"].startswith("float32.tflite (standing in")
    assert result["model_flops_per_image"] is None
    report = (tmp_path / "out" / "benchmark.md").read_text()  # without FLOPs, the report still says where time goes
    assert "FLOPs or the machine peak are unavailable" in report and "LiteRT runs the whole graph" in report


def test_speed_records_are_named_by_what_decides_int8_speed_on_the_cpu():
    from edgelesion.provenance import int8_cpu_kind

    assert int8_cpu_kind(["avx2", "avx512_vnni"]) == int8_cpu_kind(["avx2", "avx_vnni"]) == "vnni"
    assert int8_cpu_kind(["avx2", "avx512_vnni", "amx_int8"]) == "amx"
    assert int8_cpu_kind(["asimd", "asimddp"]) == "armdot"
    assert int8_cpu_kind(["sse4_2", "avx", "avx2", "fma"]) == "avx2" and int8_cpu_kind(["sse4_2"]) == "cpu"


def test_missing_or_corrupted_artifacts_are_refused(bundle_dir, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    (copy / "int8.onnx").write_bytes(b"corrupted")
    with pytest.raises(EdgelesionError, match="int8.onnx does not match its sha256"):
        run_benchmark(copy, tmp_path / "out", config=QUICK, progress=False)
    (copy / "int8.onnx").unlink()
    assert main(["benchmark", str(copy), "--out", str(tmp_path / "out2")]) == 2
    assert "int8.onnx is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_several_bundles_share_one_table_and_chart(bundle_dir, trained_run, tmp_path):
    from edgelesion.bench.benchmarking import compare_bundles

    run = run_without_keras_model(trained_run, tmp_path / "run")
    for name in ("float", "quantized"):
        copy = tmp_path / name
        shutil.copytree(bundle_dir, copy)
        manifest = json.loads((copy / "bundle.json").read_text())
        keep = "float32.tflite" if name == "float" else "int8.tflite"
        manifest["artifacts"] = {kept: manifest["artifacts"][kept] for kept in ("float32.tflite", keep)}
        manifest["source_run"]["relative_path"] = os.path.relpath(run, copy)  # the run without its Keras model
        rewrite_bundle(copy, manifest)
    results = compare_bundles(
        [tmp_path / "float", tmp_path / "quantized"], tmp_path / "cmp", config=QUICK, progress=False
    )
    assert set(results) == {"float", "quantized"}
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| float float32.tflite |" in table and "| quantized int8.tflite |" in table
    assert (tmp_path / "cmp" / "comparison_accuracy_vs_latency.png").stat().st_size > 0
    assert (tmp_path / "cmp" / "float" / "benchmark.json").is_file()


def test_benchmark_of_an_external_folder_names_its_gap_and_never_replaces_results_without_force(
    bundle_dir, trained_run, tmp_path, capsys
):
    from tests.conftest import write_dataset

    copy = tmp_path / "bundle"  # quicker: two artifacts, float32.tflite standing in for the Keras model
    shutil.copytree(bundle_dir, copy)
    bundle = json.loads((copy / "bundle.json").read_text())
    bundle["artifacts"] = {name: bundle["artifacts"][name] for name in ("float32.tflite", "int8.onnx")}
    rewrite_bundle(copy, bundle)
    run = run_without_keras_model(trained_run, tmp_path / "run")
    external = write_dataset(tmp_path / "external", per_class=6, seed=7)
    out = tmp_path / "bench"
    args = [
        "benchmark",
        str(copy),
        "--run",
        str(run),
        "--data",
        str(external),
        "--out",
        str(out),
        "--runs",
        "3",
        "--warmup",
        "1",
    ]
    assert main(args) == 0
    result = json.loads((out / "benchmark.json").read_text())
    assert result["external_data"] and str(external) in result["evaluation_set"]
    assert (
        result["artifacts"][result["baseline"]]["validation_balanced_accuracy"]
        == bundle["validation_metrics_float"]["balanced_accuracy"]["value"]
    )
    for name, a in result["artifacts"].items():
        if name in bundle["artifacts"]:
            as_is = bundle["artifacts"][name]["parity"]["vs_float"]["as_is"]
            assert a["validation_balanced_accuracy"] == as_is["artifact"]["balanced_accuracy"]
        assert a["gap_to_validation"] == pytest.approx(
            a["balanced_accuracy"]["value"] - a["validation_balanced_accuracy"]
        )
    assert "## External folder against the validation split" in (out / "benchmark.md").read_text()
    before = (out / "benchmark.json").read_bytes()
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert (out / "benchmark.json").read_bytes() == before
    assert main(args + ["--force"]) == 0 and (out / "benchmark.json").read_bytes() != before  # new timings


def test_a_changed_validation_image_is_refused(bundle_dir, trained_run, tmp_path):
    from PIL import Image

    run, data = run_without_keras_model(trained_run, tmp_path / "run"), tmp_path / "data"
    config = json.loads((run / "config.json").read_text())
    shutil.copytree(config["data_dir"], data)
    (run / "config.json").write_text(json.dumps({**config, "data_dir": str(data)}))  # the run finds the data
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    first = data / manifest["source_run"]["validation_files"][0][0]
    pixels = np.asarray(Image.open(first)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(first, quality=95)
    with pytest.raises(EdgelesionError, match=f"validation image {first} changed since export"):
        run_benchmark(bundle_dir, tmp_path / "out", run_dir=run, config=QUICK, progress=False)
    assert not (tmp_path / "out").exists()


def test_model_flops_counts_every_multiply_add_depthwise_convolutions_included(tmp_path):
    """Lite0's 16 depthwise convolutions (34.5M multiply-adds) were once left out: 699 MFLOPs reported, not 768."""
    from edgelesion._tf import keras
    from edgelesion.bench.benchmarking import model_flops

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = keras.layers.Conv2D(6, 1, groups=2)(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "m.keras")
    multiply_adds = 8 * 8 * 4 * 9 * 3 + 4 * 4 * 4 * 9 + 4 * 4 * 6 * 2 + 6 * 2
    assert model_flops(tmp_path / "m.keras") == 2 * multiply_adds


def test_one_thread_latency_is_the_median_of_fresh_processes(bundle_dir, tmp_path):
    from edgelesion.bench.benchmarking import measure_in_subprocess

    pixels = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    config = BenchmarkConfig(warmup=2, runs=10, batch_size=4, latency_processes=3)
    timings, probabilities = measure_in_subprocess(
        bundle_dir / "float32.tflite", tmp_path / "pixels.npy", tmp_path, config
    )
    medians = timings["latency_1_thread"]["process_medians_ms"]
    assert len(medians) == 3 and all(m > 0 for m in medians)
    assert timings["latency_1_thread"]["median_ms"] == sorted(medians)[1]
    assert len(timings["latency_1_thread"]["times_ms"]) == 10  # the median process's own timings, for the chart
    assert sorted(f.name for f in tmp_path.glob("*.npy")) == [
        "float32.tflite.1.npy",
        "float32.tflite.2.npy",
        "pixels.npy",
    ]  # the extra processes only timed
    assert probabilities.shape == (9, len(json.loads((bundle_dir / "bundle.json").read_text())["classes"]))
    with pytest.raises(ValueError, match="latency_processes"):
        BenchmarkConfig(latency_processes=0)
