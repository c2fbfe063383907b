"""int8.onnx quantization schemes against the float model, per bundle: which weights keep 8 bits, which activation type.

    .venv/bin/python -m benchmarks.onnx_int8_schemes export/lite0-fold0 export/model3

For each bundle, its float32.onnx is quantized as `onnx_export.quantize_static_int8` does, with each
scheme of SCHEMES, on the export's calibration sample (same images, same seed), and scored on the
export's validation split against the float model: top-1 agreement (all / sure images), the paired
balanced-accuracy difference, and 1-thread latency (onnxruntime, median of 200 runs on one image).
The CPU computes exactly here only where it has VNNI: on AVX2-only CPUs the "all 8-bit" scheme
saturates (it is listed as the reference the shipped scheme is measured against, never shipped).
Records benchmarks/results/onnx_int8_schemes.{md,json}.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import bundle_folders, markdown_table, probabilities, record, write_table
from edgelesion.bench.benchmarking import source_run, verified_bundle
from edgelesion.export.calibration import calibration_sample
from edgelesion.export.onnx_export import INPUT_NAME, OnnxInt8Scheme, quantize_static_int8
from edgelesion.export.parity import compare
from edgelesion.metrics import scored_class_indices
from edgelesion.train.evaluation import predict, recorded_splits
from edgelesion.train.runs import RunDir, read_run

SCHEMES = {
    "shipped: uint8 activations, 8-bit depthwise weights, 7-bit others": OnnxInt8Scheme(),
    "session 5: int8 activations, 7-bit weights": OnnxInt8Scheme(activations="int8", eight_bit_weights="none"),
    "uint8 activations, 7-bit weights": OnnxInt8Scheme(eight_bit_weights="none"),
    "uint8 activations, 8-bit weights (saturates on AVX2-only CPUs)": OnnxInt8Scheme(eight_bit_weights="all"),
}


def latency_ms(path: Path, image: np.ndarray, runs: int = 200) -> float:
    """Median 1-thread latency of one image, after 20 warm-up runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {INPUT_NAME: image[None].astype(np.float32)}
    for _ in range(20):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def measure(bundle_dir: Path) -> dict[str, Any]:
    """Every scheme's figures for one bundle."""
    from edgelesion._tf import keras

    bundle = verified_bundle(bundle_dir)
    run = RunDir(source_run(bundle, bundle_dir, None))
    info = read_run(run.root)
    train, val = recorded_splits(run, info, "train", "val")
    calibration = calibration_sample(train.images, n=bundle["calibration"]["images"], seed=info.config.seed)
    reference = predict(keras.models.load_model(run.best_model), val.images)
    scored = scored_class_indices(val.labels, len(info.classes), info.config.min_support)
    positive = info.classes.index(info.config.positive_class)
    results = {"float32.onnx": {"latency_ms": latency_ms(bundle_dir / "float32.onnx", val.images[0])}}
    with tempfile.TemporaryDirectory() as scratch:
        for name, scheme in SCHEMES.items():
            target = Path(scratch) / "int8.onnx"
            quantize_static_int8(bundle_dir / "float32.onnx", target, calibration, scheme)
            figures = compare(reference, probabilities(target, val.images), val.labels, scored, positive,
                              seed=info.config.seed)
            results[name] = {**figures, "latency_ms": latency_ms(target, val.images[0])}
            print(f"{bundle_dir.name}, {name}: agreement {figures['top1_agreement']:.3f} "
                  f"({figures['sure_top1_agreement']:.3f} sure), balanced accuracy "
                  f"{figures['delta_balanced_accuracy']:+.3f}, {results[name]['latency_ms']:.2f} ms", flush=True)
    return results


def _row(bundle: str, name: str, figures: dict[str, Any], float_ms: float) -> list[str]:
    low, high = figures["delta_balanced_accuracy_ci95"]
    return [bundle, name, f"{figures['delta_balanced_accuracy']:+.3f} [{low:+.3f}, {high:+.3f}]",
            f"{figures['sure_top1_agreement']:.3f} of {figures['sure_images']}", f"{figures['top1_agreement']:.3f}",
            f"{figures['max_abs_prob_diff']:.3f}", f"{figures['latency_ms']:.2f}", f"{float_ms / figures['latency_ms']:.2f}×"]


def main() -> None:
    bundles = {bundle.name: measure(bundle) for bundle in bundle_folders(__doc__)}
    record("onnx_int8_schemes", {"bundles": bundles})
    lines = markdown_table(
        ["bundle", "int8.onnx scheme", "Δ balanced accuracy vs float [paired 95% CI]", "top-1 agreement on sure images",
         "top-1 agreement, all", "max prob diff", "ms, 1 thread", "speed-up vs float32.onnx"],
        [_row(bundle, name, figures, results["float32.onnx"]["latency_ms"])
         for bundle, results in bundles.items() for name, figures in results.items() if name in SCHEMES],
        "llrrrrrr")
    write_table("onnx_int8_schemes", lines)


if __name__ == "__main__":
    main()
