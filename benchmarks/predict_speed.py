"""How light and how fast `edgelesion predict` is, on the model-3 bundle (benchmarks/export_model3.py).

    .venv/bin/python -m benchmarks.predict_speed

1. Wall time and peak memory (max RSS) of `edgelesion predict BUNDLE one.jpg` in a fresh process,
   against the same command in a process that imports TensorFlow first (5 runs each, median).
2. Images/s of Classifier.predict_many over the 2,241 training images (decode + resize + inference,
   decoding in threads ahead of inference) for int8.tflite and int8.onnx, against the runtime's
   own batch throughput on the same images already decoded (goal: >= 80% of it).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import DATA, REPO, record, require_data
from edgelesion import Classifier
from edgelesion.fileio import write_text
from edgelesion.images import IMAGE_SUFFIXES

BUNDLE = REPO / "export" / "model3"
PREDICT = "from edgelesion.cli import main; import sys; sys.exit(main(['predict', {bundle!r}, {image!r}]))"


def one_image_process(image: str, import_tensorflow: bool, repeats: int = 5) -> dict:
    """Median wall time and max RSS of a fresh process that predicts one image."""
    code = ("import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'; import tensorflow; " if import_tensorflow else "")
    code += PREDICT.format(bundle=str(BUNDLE), image=image)
    walls, peaks = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        peaks.append(max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
    # ru_maxrss of children is the largest child so far: run the light case first
    return {"wall_seconds_median": statistics.median(walls), "wall_seconds": walls, "max_rss_mb": max(peaks) / 1024}


def folder_throughput(files: list, artifact: str) -> dict:
    """predict_many images/s over `files`, against runner.predict on the same images pre-decoded."""
    classifier = Classifier.load(BUNDLE, artifact)
    start = time.perf_counter()
    results = list(classifier.predict_many(files, batch_size=32))
    predict_ips = len(results) / (time.perf_counter() - start)
    pixels = np.stack([classifier.pixels(f) for f in files])
    start = time.perf_counter()
    for i in range(0, len(pixels), 32):
        classifier.runner.predict(pixels[i : i + 32])
    runtime_ips = len(pixels) / (time.perf_counter() - start)
    return {"images": len(files), "predict_images_per_second": predict_ips,
            "runtime_batch_images_per_second": runtime_ips, "ratio": predict_ips / runtime_ips, "goal": ">= 0.8"}


def main() -> None:
    require_data()
    files = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    image = str(files[0])
    light = one_image_process(image, import_tensorflow=False)
    heavy = one_image_process(image, import_tensorflow=True)
    throughput = {artifact: folder_throughput(files, artifact) for artifact in ("int8.tflite", "int8.onnx")}
    record("predict_speed", {"bundle": str(BUNDLE), "one_image": {"without_tensorflow": light,
                                                                  "with_tensorflow_imported": heavy},
                             "folder_throughput": throughput})
    rows = ["| one image, fresh process | wall time (s, median of 5) | peak memory (MB) |", "|---|---:|---:|",
            f"| edgelesion predict | {light['wall_seconds_median']:.2f} | {light['max_rss_mb']:.0f} |",
            f"| same, TensorFlow imported first | {heavy['wall_seconds_median']:.2f} | {heavy['max_rss_mb']:.0f} |", "",
            "| artifact | predict over 2,241 files (img/s) | runtime batch throughput (img/s) | ratio (goal >= 0.8) |",
            "|---|---:|---:|---:|"]
    for artifact, t in throughput.items():
        rows.append(f"| {artifact} | {t['predict_images_per_second']:.0f} | {t['runtime_batch_images_per_second']:.0f} "
                    f"| {t['ratio']:.2f} |")
    write_text(REPO / "benchmarks" / "results" / "predict_speed.md", "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
