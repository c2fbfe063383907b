"""Where a model's int8 time goes: each stage's 1-thread latency as float32.tflite and as int8.tflite.

    .venv/bin/python -m benchmarks.int8_stages efficientnet-lite0 [--runs 200]
    .venv/bin/python -m benchmarks.int8_stages seed-dropout      # seed models 2 and 3

LiteRT's Python interpreter has no op profiler and XNNPACK runs the whole graph as one delegate node, so the
network is cut after each stage (Lite0: the stem, its 7 stages, the head convolution; the seed CNNs: each conv
block with its pooling, then the 128-unit dense layer); each cut, with a 9-class softmax head (pooled first
where the cut is an image), goes through the export's converters (float32.tflite; post-training int8.tflite,
calibrated on 200 training images) and is timed at batch 1, 1 thread, in rounds alternating over every file
(best median of 3 rounds). A stage's time is the difference between its cut and the one before. Latency does
not depend on what the weights learned: Lite0 has its ImageNet weights, the seed CNNs their initial ones.
Records benchmarks/results/int8_stages_MODEL_KIND.{md,json} with the CPU and its int8
instructions (KIND: amx, vnni, armdot, avx2 or cpu; see provenance.int8_cpu_kind).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, cpu_kind_record_name, markdown_table, record, require_data
from edgelesion._tf import keras
from edgelesion.bench.benchmarking import keras_model_flops
from edgelesion.bench.latency import measure_latency
from edgelesion.data.dataset import load_dataset
from edgelesion.export import tflite_export
from edgelesion.export.calibration import calibration_sample
from edgelesion.fileio import write_text
from edgelesion.infer.runtimes import open_runner
from edgelesion.provenance import cpu_flags, int8_instructions
from edgelesion.train.config import TrainConfig
from edgelesion.train.models import create_model

ROUNDS = 3
FORMATS = ("float32", "int8")


def cut_points(model: keras.Model) -> list[tuple[str, str]]:
    """(stage name, the layer that ends it) in order. Lite0: the stem, the 7 stages (their last block), the head
    conv; the seed CNNs: each conv block (ending in its pooling), then the 128-unit dense layer."""
    names = [layer.name for layer in model.layers]
    if "stem_relu" in names:
        stages = sorted({name[:6] for name in names if name.startswith("block")})  # 'block1' .. 'block7'
        ends = [("stem", "stem_relu")]
        ends += [(stage, [name for name in names if name.startswith(stage)][-1]) for stage in stages]
        return ends + [("head conv", "head_relu")]
    pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    return [
        (f"conv block {i} ({model.get_layer(pool).input_shape[-1]} filters)", pool)
        for i, pool in enumerate(pools, start=1)
    ] + [(f"flatten + dense {dense.units}", dense.name)]


def prefix_model(model: keras.Model, layer: str) -> keras.Model:
    """The network up to `layer`, then (for an image) average pooling, a 9-class Dense and its softmax."""
    x = model.get_layer(layer).output
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="cut_pool")(x)
    x = keras.layers.Dense(9, name="cut_logits")(x)
    return keras.Model(model.input, keras.layers.Softmax(name="cut_probabilities")(x), name=f"to_{layer}")


def build_files(folder: Path, name: str, calibration: np.ndarray) -> tuple[dict[str, dict[str, Path]], dict[str, int]]:
    """float32.tflite and int8.tflite of every cut of model `name`, and each cut's FLOPs (as the harness counts them)."""
    preprocessing = TrainConfig.for_model(name).preprocessing
    model = create_model(name, 9, preprocessing, pretrained=name == "efficientnet-lite0")
    files, flops = {}, {}
    for stage, layer in cut_points(model):
        prefix = prefix_model(model, layer)
        flops[stage] = keras_model_flops(prefix)
        files[stage] = {"float32": folder / f"{layer}.float32.tflite", "int8": folder / f"{layer}.int8.tflite"}
        files[stage]["float32"].write_bytes(tflite_export.convert_float32(prefix))
        files[stage]["int8"].write_bytes(tflite_export.convert_int8_ptq(prefix, calibration, preprocessing))
    return files, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=("efficientnet-lite0", "seed-simple", "seed-dropout"))
    parser.add_argument("--runs", type=int, default=200, help="timed runs per file and round")
    args = parser.parse_args()
    preprocessing = TrainConfig.for_model(args.model).preprocessing
    images = load_dataset(require_data(), preprocessing).images
    calibration = calibration_sample(images, n=200, seed=0)
    medians: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        files, flops = build_files(Path(scratch), args.model, calibration)
        for _ in range(ROUNDS):
            for stage, paths in files.items():
                for kind in FORMATS:
                    latency = measure_latency(open_runner(paths[kind], threads=1), images[0], runs=args.runs)
                    medians.setdefault(stage, {}).setdefault(kind, []).append(latency["median_ms"])
    cumulative = {stage: {kind: min(values) for kind, values in by_kind.items()} for stage, by_kind in medians.items()}
    stages, rows, per_stage = list(cumulative), [], {}
    for i, stage in enumerate(stages):
        before = cumulative[stages[i - 1]] if i else {kind: 0.0 for kind in FORMATS}
        ms = {kind: cumulative[stage][kind] - before[kind] for kind in FORMATS}
        # the same difference within each round: how far apart the rounds put this stage
        rounds = {
            kind: [m - (medians[stages[i - 1]][kind][r] if i else 0.0) for r, m in enumerate(medians[stage][kind])]
            for kind in FORMATS
        }
        stage_flops = flops[stage] - (flops[stages[i - 1]] if i else 0)
        per_stage[stage] = {"ms": ms, "ms_per_round": rounds, "mflops": stage_flops / 1e6}
        rows.append(
            [
                stage,
                f"{stage_flops / 1e6:.0f}",
                *(f"{ms[kind]:.2f} ({min(rounds[kind]):.2f}–{max(rounds[kind]):.2f})" for kind in FORMATS),
                f"{ms['float32'] / ms['int8']:.2f}x" if ms["int8"] > 0 else "n/a",
                f"{ms['int8'] / cumulative[stages[-1]]['int8']:.0%}",
            ]
        )
    total = cumulative[stages[-1]]
    rows.append(
        [
            f"whole network (to {stages[-1]})",
            f"{flops[stages[-1]] / 1e6:.0f}",
            f"{total['float32']:.2f}",
            f"{total['int8']:.2f}",
            f"{total['float32'] / total['int8']:.2f}x",
            "100%",
        ]
    )
    result = {
        "model": args.model,
        "int8_instructions": int8_instructions(cpu_flags()),
        "rounds": ROUNDS,
        "runs": args.runs,
        "image_size": preprocessing.image_size,
        "median_ms_per_round": medians,
        "cumulative_best_median_ms": cumulative,
        "per_stage": per_stage,
    }
    name = cpu_kind_record_name("int8_stages_" + args.model.replace("-", "_"))
    record(name, result)
    lines = [
        f"{args.model}, {preprocessing.image_size} px, batch 1, 1 thread; "
        f"CPU int8 instructions: {result['int8_instructions']}",
        "",
        *markdown_table(
            [
                "stage",
                "MFLOPs",
                "float32.tflite ms (rounds' range)",
                "int8.tflite ms (rounds' range)",
                "int8 speed-up",
                "share of int8 time",
            ],
            rows,
            "lrrrrr",
        ),
        "",
        "A stage's time is its cut's best median less the previous cut's; in brackets, the same difference "
        "within each round: stages that differ by less than that range are not told apart.",
    ]
    write_text(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
