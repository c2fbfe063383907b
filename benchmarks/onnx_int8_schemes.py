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
from pathlib import Path
from typing import Any


from benchmarks.common import bundle_folders, bundle_run, markdown_table, record, scoring, signed_interval, write_table
from edgelesion.bench.latency import measure_latency
from edgelesion.export.calibration import calibration_sample
from edgelesion.export.onnx_export import OnnxInt8Scheme, quantize_static_int8
from edgelesion.export.parity import compare
from edgelesion.infer.runtimes import open_runner, predict_in_batches
from edgelesion.train.evaluation import predict, recorded_splits

SCHEMES = {
    "shipped: uint8 activations, 8-bit depthwise and first-convolution (uint8) weights, 7-bit others": OnnxInt8Scheme(),
    "sessions 6-11: uint8 activations, 8-bit depthwise weights, 7-bit others": OnnxInt8Scheme(pixel_conv_weights="int8"),
    "session 5: int8 activations, 7-bit weights": OnnxInt8Scheme(activations="int8", eight_bit_weights="none",
                                                                 pixel_conv_weights="int8"),
    "uint8 activations, 7-bit weights": OnnxInt8Scheme(eight_bit_weights="none", pixel_conv_weights="int8"),
    "uint8 activations, 8-bit weights (saturates on AVX2-only CPUs)": OnnxInt8Scheme(eight_bit_weights="all"),
}


def measure(bundle_dir: Path) -> dict[str, Any]:
    """Every scheme's figures for one bundle."""
    from edgelesion._tf import keras

    bundle, run, info = bundle_run(bundle_dir)
    train, val = recorded_splits(run, info, "train", "val")
    calibration = calibration_sample(train.images, n=bundle["calibration"]["images"], seed=info.config.seed)
    reference = predict(keras.models.load_model(run.best_model), val.images)
    scored, positive = scoring(info, val.labels)

    def latency_ms(path: Path) -> float:
        return measure_latency(open_runner(path, threads=1), val.images[0])["median_ms"]

    results = {"float32.onnx": {"latency_ms": latency_ms(bundle_dir / "float32.onnx")}}
    with tempfile.TemporaryDirectory() as scratch:
        for name, scheme in SCHEMES.items():
            target = Path(scratch) / "int8.onnx"
            quantize_static_int8(bundle_dir / "float32.onnx", target, calibration, scheme)
            figures = compare(reference, predict_in_batches(open_runner(target), val.images), val.labels, scored,
                              positive, seed=info.config.seed)
            results[name] = {**figures, "latency_ms": latency_ms(target)}
            print(f"{bundle_dir.name}, {name}: agreement {figures['top1_agreement']:.3f} "
                  f"({figures['sure_top1_agreement']:.3f} sure), balanced accuracy "
                  f"{figures['delta_balanced_accuracy']:+.3f}, {results[name]['latency_ms']:.2f} ms", flush=True)
    return results


def _row(bundle: str, name: str, figures: dict[str, Any], float_ms: float) -> list[str]:
    return [bundle, name, signed_interval(figures["delta_balanced_accuracy"], figures["delta_balanced_accuracy_ci95"]),
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
