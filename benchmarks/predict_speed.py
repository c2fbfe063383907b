"""How light and how fast `edgelesion predict` is, on a bundle (default: export/model3).

    .venv/bin/python -m benchmarks.predict_speed [BUNDLE]

1. Wall time and peak memory (max RSS) of `edgelesion predict BUNDLE one.jpg` in a fresh process,
   against the same command in a process that imports TensorFlow first (5 runs each, median).
2. Images/s of Classifier.predict_many over the 2,241 training images (decode + resize + inference,
   decoding in threads ahead of inference) for int8.tflite and int8.onnx, against the runtime's
   own batch throughput on the same images already decoded, and against the limit that decoding and
   inference sharing the same cores allow: cores / (decode core-seconds + inference core-seconds) per
   image, with decode timed on one thread and inference at the runtime's all-core throughput
   (goal: >= 90% of that limit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    DATA,
    REPO,
    RESULTS,
    cpu_kind_record_name,
    decode_inference_limit,
    record,
    require_data,
    runtime_images_per_second,
)
from edgelesion import Classifier
from edgelesion.fileio import write_text
from edgelesion.images import IMAGE_SUFFIXES

# The child reports its own peak memory (VmHWM of its address space): Linux's ru_maxrss of a child also
# counts the parent's memory it was forked from, this benchmark process's included.
PREDICT = (
    "import sys; from pathlib import Path; from edgelesion.cli import main; "
    "code = main(['predict', {bundle!r}, {image!r}]); "
    "hwm = next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')); "
    "sys.stderr.write('\\nMAXRSS_KB ' + hwm.split()[1]); sys.exit(code)"
)


def one_image_process(bundle: Path, image: str, import_tensorflow: bool, repeats: int = 5) -> dict:
    """Median wall time and max RSS of a fresh process that predicts one image."""
    code = "import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'; import tensorflow; " if import_tensorflow else ""
    code += PREDICT.format(bundle=str(bundle), image=image)
    walls, peaks = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        completed = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        peaks.append(int(completed.stderr.rsplit("MAXRSS_KB ", 1)[1]))
    return {"wall_seconds_median": statistics.median(walls), "wall_seconds": walls, "max_rss_mb": max(peaks) / 1024}


def folder_throughput(bundle: Path, files: list, artifact: str) -> dict:
    """predict_many images/s over `files`, against runner.predict on the same images pre-decoded, and against
    the limit of decoding and inference on the same cores."""
    classifier = Classifier.load(bundle, artifact)
    start = time.perf_counter()
    results = list(classifier.predict_many(files, batch_size=32))
    predict_ips = len(results) / (time.perf_counter() - start)
    start = time.perf_counter()
    pixels = np.stack([classifier.pixels(f) for f in files])  # one thread: core-seconds of decoding
    decode_seconds = (time.perf_counter() - start) / len(files)
    runtime_ips = runtime_images_per_second(classifier.runner, pixels)
    limit = decode_inference_limit(decode_seconds, runtime_ips)
    return {
        "images": len(files),
        "predict_images_per_second": predict_ips,
        "runtime_batch_images_per_second": runtime_ips,
        "ratio": predict_ips / runtime_ips,
        "decode_ms_one_thread": decode_seconds * 1e3,
        "cores": os.cpu_count(),
        "limit_images_per_second": limit,
        "share_of_limit": predict_ips / limit,
        "goal": ">= 0.9 of the limit",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, nargs="?", default=REPO / "export" / "model3", help="a bundle folder")
    bundle = parser.parse_args().bundle
    require_data()
    files = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    image = str(files[0])
    light = one_image_process(bundle, image, import_tensorflow=False)
    heavy = one_image_process(bundle, image, import_tensorflow=True)
    throughput = {artifact: folder_throughput(bundle, files, artifact) for artifact in ("int8.tflite", "int8.onnx")}
    name = cpu_kind_record_name("predict_speed_" + bundle.resolve().name.replace("-", "_"))
    record(
        name,
        {
            "bundle": bundle.name,
            "one_image": {"without_tensorflow": light, "with_tensorflow_imported": heavy},
            "folder_throughput": throughput,
        },
    )
    rows = [
        "| one image, fresh process | wall time (s, median of 5) | peak memory (MB) |",
        "|---|---:|---:|",
        f"| edgelesion predict | {light['wall_seconds_median']:.2f} | {light['max_rss_mb']:.0f} |",
        f"| same, TensorFlow imported first | {heavy['wall_seconds_median']:.2f} | {heavy['max_rss_mb']:.0f} |",
        "",
        "| artifact | predict over 2,241 files (img/s) | runtime batch throughput (img/s) | decode, 1 thread (ms) "
        "| decode + inference limit on these cores (img/s) | share of the limit (goal >= 0.9) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for artifact, t in throughput.items():
        rows.append(
            f"| {artifact} | {t['predict_images_per_second']:.0f} | {t['runtime_batch_images_per_second']:.0f} "
            f"| {t['decode_ms_one_thread']:.2f} | {t['limit_images_per_second']:.0f} | {t['share_of_limit']:.2f} |"
        )
    write_text(RESULTS / f"{name}.md", "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
