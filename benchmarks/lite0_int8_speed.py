"""EfficientNet-Lite0's int8 files against its float32 files: 1-thread and all-core latency on this CPU.

    .venv/bin/python -m benchmarks.lite0_int8_speed [--runs 200]

Latency does not depend on what the weights learned, so no fine-tuned run is needed: the ImageNet
backbone with a 9-class head goes through the export's own converters (float32.tflite, post-training
int8.tflite with its float softmax, float32.onnx, int8.onnx), calibrated on 200 training images at
224 px. Each file is timed at batch 1 in rounds that alternate between the files (best median of
3 rounds), so a slower moment of the machine falls on every file alike. Records
benchmarks/results/lite0_int8_speed_KIND.{md,json} with the CPU and its int8
instructions (KIND: amx, vnni, armdot, avx2 or cpu; see provenance.int8_cpu_kind).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, cpu_kind_record_name, markdown_table, record, require_data
from edgelesion.bench.latency import measure_latency
from edgelesion.data.dataset import load_dataset
from edgelesion.export import onnx_export, tflite_export
from edgelesion.export.calibration import calibration_sample
from edgelesion.fileio import write_text
from edgelesion.infer.runtimes import open_runner
from edgelesion.provenance import cpu_flags, int8_instructions
from edgelesion.train.config import MODEL_INPUTS
from edgelesion.train.models import create_model

ROUNDS = 3


def build_files(folder: Path, calibration: np.ndarray) -> list[Path]:
    """The four files the export makes of Lite0, written into `folder`."""
    preprocessing = MODEL_INPUTS["efficientnet-lite0"]
    model = create_model("efficientnet-lite0", 9, preprocessing, pretrained=True)
    (folder / "float32.tflite").write_bytes(tflite_export.convert_float32(model))
    (folder / "int8.tflite").write_bytes(tflite_export.convert_int8_ptq(model, calibration, preprocessing))
    onnx_export.convert_float32(model, folder / "float32.onnx")
    onnx_export.quantize_static_int8(folder / "float32.onnx", folder / "int8.onnx", calibration)
    return [folder / name for name in ("float32.tflite", "int8.tflite", "float32.onnx", "int8.onnx")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per file and round")
    runs = parser.parse_args().runs
    preprocessing = MODEL_INPUTS["efficientnet-lite0"]
    images = load_dataset(require_data(), preprocessing).images
    calibration = calibration_sample(images, n=200, seed=0)
    image = images[0]
    medians: dict[str, dict[int, list[float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        files = build_files(Path(scratch), calibration)
        for _ in range(ROUNDS):
            for path in files:
                for threads in (1, 2):
                    latency = measure_latency(open_runner(path, threads=threads), image, runs=runs)
                    medians.setdefault(path.name, {}).setdefault(threads, []).append(latency["median_ms"])
        sizes = {path.name: path.stat().st_size for path in files}
    best = {
        name: {threads: min(values) for threads, values in by_threads.items()} for name, by_threads in medians.items()
    }
    flags = cpu_flags()
    result = {
        "int8_instructions": int8_instructions(flags),
        "rounds": ROUNDS,
        "runs": runs,
        "median_ms_per_round": medians,
        "best_median_ms": best,
        "size_bytes": sizes,
        "int8_speedup_1_thread": {
            "tflite": best["float32.tflite"][1] / best["int8.tflite"][1],
            "onnx": best["float32.onnx"][1] / best["int8.onnx"][1],
        },
    }
    name = cpu_kind_record_name("lite0_int8_speed")
    record(name, result)
    rows = [
        [
            name,
            f"{best[name][1]:.2f}",
            f"{best[name][2]:.2f}",
            f"{best[name.replace('int8', 'float32')][1] / best[name][1]:.2f}x",
            f"{sizes[name] / 1e6:.2f}",
        ]
        for name in best
    ]
    lines = [
        f"EfficientNet-Lite0, 224 px, batch 1; CPU int8 instructions: {result['int8_instructions']}",
        "",
        *markdown_table(
            [
                "file",
                "ms, 1 thread (best median of 3 rounds)",
                "ms, 2 threads",
                "speed vs its float32 file, 1 thread",
                "MB",
            ],
            rows,
            "lrrrr",
        ),
    ]
    write_text(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
