"""The benchmark harness: for every artifact of a bundle, size, load time, memory, latency, throughput
and accuracy against the float model, on the same evaluation images the export validated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from edgelesion.bench.op_profile import onnx_op_time_shares
from edgelesion.data.array_files import create_array, write_at
from edgelesion.data.audit import ConflictPolicy, prepare_test_set
from edgelesion.data.dataset import load_dataset
from edgelesion.data.image_rows import ImageRows
from edgelesion.data.metadata import MetadataSpec
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import read_csv, read_json, replace_dir, sha256_file, staging_dir, write_json
from edgelesion.images import UnreadableImage, read_image, to_model_input
from edgelesion.infer.bundle_reader import bundle_preprocessing, read_bundle, verified_artifact
from edgelesion.metrics import LOOKALIKES, classification_metrics, paired_difference, scored_class_indices
from edgelesion.provenance import provenance
from edgelesion.source_figures import within_source_figures
from edgelesion.thresholds import alert_figures

if TYPE_CHECKING:  # TensorFlow is imported only where a Keras model is read
    from edgelesion._tf import keras


@dataclass(frozen=True)
class BenchmarkConfig:
    """How long to time, and how to state uncertainty."""

    warmup: int = 20  # untimed batch-1 calls before timing
    runs: int = 200  # timed batch-1 calls per thread setting
    batch_size: int = 32  # throughput batches
    resamples: int = 2000  # paired bootstrap of the accuracy differences
    seed: int = 0
    # fresh processes the 1-thread latency is measured in, the median process reported: one process's median
    # can be off by +-15% (Lite0's int8.onnx on a 2-core AMD EPYC: 4.22-5.73 ms in four processes)
    latency_processes: int = 1

    def __post_init__(self) -> None:
        if self.latency_processes < 1:
            raise ValueError(f"latency_processes must be at least 1, not {self.latency_processes}")


def verified_bundle(bundle_dir: Path) -> dict[str, Any]:
    """bundle.json, after checking that every listed artifact exists and matches its sha256."""
    bundle = read_bundle(bundle_dir)
    for name in bundle["artifacts"]:
        verified_artifact(bundle_dir, bundle, name)
    return bundle


def source_run(bundle: dict[str, Any], bundle_dir: Path, run_dir: Path | None) -> Path:
    """The training run the bundle was exported from: `run_dir`, or where bundle.json says it lies relative to the
    bundle (bundles record no absolute paths). Refused when its best.keras is not the exported model."""
    source = bundle["source_run"]
    run = Path(run_dir) if run_dir is not None else (bundle_dir / source["relative_path"]).resolve()
    if not (run / "config.json").is_file():
        raise EdgelesionError(
            f"the run {source['name']!r} this bundle was exported from is not at {run}: pass "
            "--run RUN (its folder holds the validation images' location and the float model)"
        )
    if read_json(run / "config.json").get("data_fingerprint") != source["data_fingerprint"]:
        raise EdgelesionError(
            f"{run} was trained on other data than {bundle_dir} (data fingerprints differ): pass "
            "--run with the run that made this bundle"
        )
    best = run / "best.keras"
    if best.is_file() and sha256_file(best) != source["best_model_sha256"]:
        raise EdgelesionError(
            f"{best} is not the model {bundle_dir} was exported from (its sha256 differs): pass "
            "--run with the run that made this bundle"
        )
    return run


@dataclass(frozen=True)
class EvaluationSet:
    """The images every artifact is scored on, with each image's source where known."""

    pixels: np.ndarray | ImageRows  # cache rows for a --data folder
    labels: np.ndarray
    described: str
    sources: list[str] | None


def save_in_batches(pixels: np.ndarray | ImageRows, target: Path, batch: int = 256) -> None:
    """Write images to an .npy file the worker processes read, `batch` at a time (cache rows are never all in
    memory at once)."""
    offset = create_array(target, tuple(pixels.shape))
    with open(target, "r+b") as handle:
        for start in range(0, len(pixels), batch):
            images = np.ascontiguousarray(pixels[start : start + batch])
            write_at(handle.fileno(), images.tobytes(), offset + start * images[0].nbytes)


def evaluation_images(
    bundle: dict[str, Any], run: Path, data_dir: Path | None, metadata: MetadataSpec | None = None
) -> EvaluationSet:
    """Pixels and labels of the evaluation set: the export's validation files (checked by sha256), or `data_dir`
    (described by `metadata`, if given)."""
    classes, preprocessing = bundle["classes"], bundle_preprocessing(bundle)
    source = bundle["source_run"]
    if data_dir is not None:
        data = load_dataset(data_dir, preprocessing, classes=classes, min_classes=1, metadata=metadata)
        index = run / "data_index.csv"
        if not index.is_file():
            raise EdgelesionError(
                f"--data {data_dir}: the run's {index} is gone, so images shared with the training "
                "folder cannot be removed; benchmark on the run's validation split instead"
            )
        config = source["config"]
        test = prepare_test_set(
            data, read_csv(index), ConflictPolicy(config["conflict_policy"]), config["near_duplicate_max_distance"]
        )
        print(test.summary())
        return EvaluationSet(
            test.clean.images,
            test.clean.labels,
            f"{data_dir} ({len(test.clean.records)} images; {len(test.overlaps)} shared with the "
            "training folder removed)",
            test.clean.sources,
        )
    root = Path(read_json(run / "config.json")["data_dir"])  # the run keeps the data's path; the bundle does not
    pixels, labels = [], []
    for relpath, label, sha in source["validation_files"]:
        try:
            decoded = read_image(root / relpath, preprocessing.draft_side)
        except UnreadableImage as exc:
            raise EdgelesionError(
                f"validation image {root / relpath}: {exc}; pass --data DIR to benchmark on another folder"
            ) from exc
        if decoded.sha256 != sha:
            raise EdgelesionError(f"validation image {root / relpath} changed since export; pass --data DIR")
        pixels.append(to_model_input(decoded.image, preprocessing))
        labels.append(classes.index(label))
    return EvaluationSet(
        np.stack(pixels),
        np.array(labels),
        f"the run's validation split ({len(labels)} images)",
        source.get("validation_sources"),
    )


def _worker(
    artifact: Path, pixels_file: Path, result: Path, threads: int, config: BenchmarkConfig, latency_only: bool = False
) -> dict[str, Any]:
    """edgelesion.bench.worker's measurements of `artifact` in a fresh process (its probabilities beside `result`,
    unless `latency_only`)."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgelesion.bench.worker",
            str(artifact),
            str(pixels_file),
            str(result),
            str(threads),
            str(config.warmup),
            str(config.runs),
            str(config.batch_size),
            *(["latency-only"] if latency_only else []),
        ],
        capture_output=True,
        check=False,
        text=True,
    )
    if completed.returncode != 0:
        raise EdgelesionError(f"benchmarking {artifact} failed:\n{completed.stderr.strip()[-2000:]}")
    return json.loads(result.read_text())


def measure_in_subprocess(
    artifact: Path, pixels_file: Path, scratch: Path, config: BenchmarkConfig
) -> tuple[dict[str, Any], np.ndarray]:
    """Run edgelesion.bench.worker on one artifact, at 1 thread (in config.latency_processes fresh processes) and
    at all cores, each in a fresh process.

    Load time and memory come from the first 1-thread process, the 1-thread latency from the process with the
    median median (every process's median recorded beside it), throughput from the all-cores one.
    """
    cores = os.cpu_count() or 1
    first = scratch / f"{artifact.name}.1.json"
    singles = [_worker(artifact, pixels_file, first, 1, config)]
    singles += [
        _worker(artifact, pixels_file, scratch / f"{artifact.name}.1.{k}.json", 1, config, latency_only=True)
        for k in range(1, config.latency_processes)
    ]
    multi = _worker(artifact, pixels_file, scratch / f"{artifact.name}.{cores}.json", cores, config)
    medians = [single["latency"]["median_ms"] for single in singles]
    latency = {
        **sorted(singles, key=lambda single: single["latency"]["median_ms"])[(len(singles) - 1) // 2]["latency"],
        "process_medians_ms": medians,
    }
    timings = {
        "load_seconds": singles[0]["load_seconds"],
        "peak_memory_added_mb": singles[0]["peak_memory_added_mb"],
        "latency_1_thread": latency,
        f"latency_{cores}_threads": multi["latency"],
        "all_cores": cores,
        "batch_size": multi["batch_size"],
        "throughput_images_per_second": multi["throughput_images_per_second"],
    }
    return timings, np.load(first.with_suffix(".npy"))


def baseline_entry(bundle: dict[str, Any], bundle_dir: Path, run: Path) -> tuple[str, Path]:
    """The float Keras model of the source run, or float32.tflite standing in when the run's model is gone."""
    keras_model = run / "best.keras"
    if keras_model.is_file():
        return "keras float model", keras_model
    if "float32.tflite" in bundle["artifacts"]:
        return "float32.tflite (standing in: the run's Keras model is gone)", bundle_dir / "float32.tflite"
    raise EdgelesionError(f"no float baseline: {keras_model} is gone and the bundle has no float32.tflite")


def run_benchmark(
    bundle_dir: str | Path,
    out: str | Path,
    *,
    run_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    metadata: MetadataSpec | None = None,
    config: BenchmarkConfig = BenchmarkConfig(),
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark every artifact of a bundle and the float baseline; write benchmark.json, benchmark.md and charts.

    `run_dir`: the training run the bundle came from (default: where bundle.json says it lies relative to the bundle).
    `metadata` describes `data_dir`; with sources known (there, or recorded by the export for its validation split),
    each artifact is also scored within every source.
    """
    from edgelesion.bench.report import write_report

    bundle_dir, out = Path(bundle_dir), Path(out)
    bundle = verified_bundle(bundle_dir)
    run = source_run(bundle, bundle_dir, Path(run_dir) if run_dir else None)
    evaluation = evaluation_images(bundle, run, Path(data_dir) if data_dir else None, metadata)
    pixels, labels = evaluation.pixels, evaluation.labels
    classes = bundle["classes"]
    lookalikes = bundle["source_run"]["config"].get("lookalikes", LOOKALIKES)
    scored = scored_class_indices(labels, len(classes), bundle["source_run"]["config"]["min_support"])
    positive_class = bundle["source_run"]["config"]["positive_class"]
    positive = classes.index(positive_class) if positive_class in classes else None
    baseline_name, baseline_path = baseline_entry(bundle, bundle_dir, run)
    targets = [(baseline_name, baseline_path), *[(name, bundle_dir / name) for name in bundle["artifacts"]]]
    # each artifact's own alert threshold; the float baseline takes float32.tflite's (the same model)
    thresholds = {
        name: (entry.get("melanoma_alert") or {}).get("threshold") for name, entry in bundle["artifacts"].items()
    }
    thresholds.setdefault(baseline_name, thresholds.get("float32.tflite"))
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        pixels_file = Path(scratch) / "pixels.npy"
        save_in_batches(pixels, pixels_file)
        probabilities = {}
        for name, path in tqdm(targets, desc="benchmarking", unit="artifact", disable=not progress):
            timings, probabilities[name] = measure_in_subprocess(path, pixels_file, Path(scratch), config)
            metrics = classification_metrics(
                labels,
                probabilities[name],
                classes,
                positive_class=positive_class,
                scored_classes=[classes[c] for c in scored],
                seed=config.seed,
            )
            rows[name] = {
                "file": str(path),
                "runtime": _runtime(path),
                "size_bytes": path.stat().st_size,
                **timings,
                "balanced_accuracy": metrics["balanced_accuracy"],
                "accuracy": metrics["accuracy"],
                "melanoma_sensitivity": metrics.get(f"{positive_class}_sensitivity"),
                "melanoma_alert": alert_figures(probabilities[name], labels, positive, thresholds.get(name)),
                "recall_per_class": {c: m["recall"] for c, m in metrics["per_class"].items()},
                "calibration": metrics["calibration"],
            }
            if evaluation.sources is not None:
                rows[name]["within_source"] = within_source_figures(
                    probabilities[name],
                    labels,
                    classes,
                    evaluation.sources,
                    positive_class,
                    lookalikes,
                    thresholds.get(name),
                )
            if path.suffix == ".onnx":
                rows[name]["op_time_shares_1_thread"] = onnx_op_time_shares(path, pixels[0])
        for name, row in rows.items():
            row["top1_agreement_with_baseline"] = float(
                (probabilities[name].argmax(1) == probabilities[baseline_name].argmax(1)).mean()
            )
            if name != baseline_name:
                row["difference_from_baseline"] = paired_difference(
                    labels,
                    probabilities[baseline_name],
                    probabilities[name],
                    scored,
                    positive,
                    resamples=config.resamples,
                    seed=config.seed,
                )
    if data_dir is not None:
        add_validation_gap(bundle, baseline_name, rows)
    result = {
        "bundle": str(bundle_dir.resolve()),
        "run": str(run),
        "evaluation_set": evaluation.described,
        "external_data": data_dir is not None,
        "baseline": baseline_name,
        "scored_classes": [classes[c] for c in scored],
        "config": vars(config),
        "machine_peak": machine_peak(),
        "model_flops_per_image": model_flops(run / "best.keras"),
        "artifacts": rows,
        "provenance": provenance(),
    }
    staging = staging_dir(out)  # a rerun with --force replaces the old results whole
    try:
        write_json(staging / "benchmark.json", result)
        write_report(result, staging)
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def as_is_parity(entry: dict[str, Any]) -> dict[str, Any]:
    """An artifact's export figures against the float model on the validation images as they are (bundles made
    before parity over orientations hold only those)."""
    judged = entry["parity"]["vs_float"]
    return judged.get("as_is", judged)


def add_validation_gap(bundle: dict[str, Any], baseline_name: str, rows: dict[str, Any]) -> None:
    """Put each model's balanced accuracy on its export's validation split beside the external figure, and the gap.

    A folder from another source or period of the archive shows shifts that no same-distribution split can.
    """
    for name, row in rows.items():
        entry = bundle["artifacts"].get(name)
        validation = (
            as_is_parity(entry)["artifact"]["balanced_accuracy"]
            if entry
            else bundle["validation_metrics_float"]["balanced_accuracy"]["value"]
        )
        external = row["balanced_accuracy"]["value"]
        row["validation_balanced_accuracy"] = validation
        row["gap_to_validation"] = None if validation is None or external is None else external - validation


def _runtime(path: Path) -> str:
    return {".tflite": "LiteRT (XNNPACK)", ".onnx": "onnxruntime (CPU)", ".keras": "TensorFlow"}[path.suffix]


def model_flops(path: Path) -> int | None:
    """Floating-point operations per image of the .keras model at `path` (see `keras_model_flops`); None when it is
    gone."""
    if not path.is_file():
        return None
    from edgelesion._tf import keras

    return keras_model_flops(keras.models.load_model(path))


def keras_model_flops(model: keras.Model) -> int:
    """Floating-point operations per image: 2 x the multiply-accumulates of a Keras model's convolution, depthwise
    convolution and dense layers."""
    from edgelesion._tf import keras

    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # not a Conv2D in tf-keras: one filter per channel
            _, height, width, channels_out = layer.output_shape
            flops += 2 * height * width * channels_out * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels_out = layer.output_shape
            kh, kw = layer.kernel_size
            flops += 2 * height * width * channels_out * kh * kw * layer.input_shape[-1] // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input_shape[-1] * layer.units
    return int(flops)


def machine_peak(size: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """Measured float32 matrix-multiply peak of this machine (numpy), one thread and all cores.

    OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for this measurement only (on these machines
    they halve numpy's speed); it runs in a subprocess so the setting stays there.
    """
    code = f"""
import json, time, numpy as np
from threadpoolctl import threadpool_limits, threadpool_info
a = np.random.default_rng(0).random(({size}, {size}), dtype=np.float32); b = a.copy()
result = {{"matrix": {size}, "blas": [i.get("internal_api") + " " + str(i.get("architecture")) for i in threadpool_info()]}}
for label, threads in (("1_thread", 1), ("all_cores", None)):
    with threadpool_limits(threads):
        a @ b
        best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range({repeats}))
    result[label + "_gflops"] = 2 * {size} ** 3 / best / 1e9
print(json.dumps(result))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=False, text=True, env=env, timeout=300
    )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip()[-500:]}
    peak = json.loads(completed.stdout)
    peak["int8"] = int8_peak(size, repeats)
    return peak


def _matmul_integer_model(size: int) -> bytes:
    """An ONNX model of one uint8 x int8 MatMulInteger (int32 out): onnxruntime's int8 GEMM, as int8 models use it."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).integers(-128, 128, (size, size), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])],
        [numpy_helper.from_array(weights, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def int8_peak(size: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """Measured int8 matrix-multiply peak (onnxruntime MatMulInteger, best of `repeats`), one thread and all cores,
    in GOP/s (a multiply and an add count as two operations, as for the float32 peak)."""
    import onnxruntime as ort

    try:
        model = _matmul_integer_model(size)
    except ImportError:
        return {"error": "onnx is not installed (pip install -e '.[train]')"}
    a = np.random.default_rng(1).integers(0, 256, (size, size), dtype=np.uint8)
    result: dict[str, Any] = {"matrix": size, "runtime": f"onnxruntime {ort.__version__} MatMulInteger (uint8 x int8)"}
    for label, threads in (("1_thread", 1), ("all_cores", 0)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        session.run(None, {"a": a})
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            session.run(None, {"a": a})
            times.append(time.perf_counter() - start)
        result[f"{label}_gops"] = 2 * size**3 / min(times) / 1e9
        result[f"{label}_spread"] = max(times) / min(times)  # run-to-run stability: slowest over fastest
    return result


def compare_bundles(
    bundle_dirs: list[str | Path],
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    metadata: MetadataSpec | None = None,
    config: BenchmarkConfig = BenchmarkConfig(),
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark each bundle into out/NAME, then one comparison table and chart in `out`."""
    from edgelesion.bench.report import write_comparison

    out = Path(out)
    names = [Path(b).name for b in bundle_dirs]
    if len(set(names)) != len(names):
        raise EdgelesionError(f"bundles to compare need distinct folder names, got {names}")
    results = {
        name: run_benchmark(b, out / name, data_dir=data_dir, metadata=metadata, config=config, progress=progress)
        for name, b in zip(names, bundle_dirs)
    }
    write_comparison(results, out)
    return results
