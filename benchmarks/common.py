"""Shared by the benchmark scripts: where the real data is, restartable training, and result records."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgelesion.fileio import read_csv, read_json, write_json, write_text
from edgelesion.infer.runtimes import Runner, predict_in_batches
from edgelesion.metrics import scored_class_indices
from edgelesion.provenance import cpu_flags, int8_cpu_kind, provenance
from edgelesion.train.config import TrainConfig
from edgelesion.train.runs import RunDir, RunInfo

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EDGELESION_BENCH_DATA", REPO.parent / "shared" / "data" / "isic9" / "train"))
RUNS = REPO / "runs" / "benchmarks"  # git-ignored: models trained on the real data are never committed
RESULTS = REPO / "benchmarks" / "results"


def require_data() -> Path:
    """The full ISIC training folder, or exit with where to get it."""
    if not DATA.is_dir():
        sys.exit(
            f"benchmark data {DATA} not found: set EDGELESION_BENCH_DATA to the ISIC 'Train' folder (see README.md)"
        )
    return DATA


def finished_metrics(run_dir: Path, epochs: int) -> dict[str, Any] | None:
    """The validation metrics of a run that finished all `epochs`, else None."""
    run = RunDir(run_dir)
    metrics = run.evaluation / "validation" / "metrics.json"
    if run.state.is_file() and read_json(run.state)["epochs_done"] == epochs and metrics.is_file():
        return read_json(metrics)
    return None


def train_or_resume(data_dir: Path, out: Path, config: TrainConfig) -> dict[str, Any]:
    """Train `config` into `out`, resuming an interrupted run and reusing a finished one."""
    from edgelesion.train.training import resume, train

    done = finished_metrics(out, config.epochs)
    if done is not None:
        print(f"{out}: already finished, reusing its metrics")
        return done
    if RunDir(out).state.is_file():
        return resume(out, data_dir=data_dir)
    return train(data_dir, out, config, force=RunDir(out).is_run())


def training_time(run_dir: Path, head_epochs: int) -> dict[str, float]:
    """Epochs, seconds of training and median epoch times (head epochs apart) from a run's history."""
    seconds = [float(r["seconds"]) for r in read_csv(RunDir(run_dir).history)]
    timing = {
        "epochs": len(seconds),
        "training_seconds": sum(seconds),
        "whole_network_epoch_seconds_median": statistics.median(seconds[head_epochs:]),
    }
    if head_epochs:
        timing["head_epoch_seconds_median"] = statistics.median(seconds[:head_epochs])
    return timing


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures a results table shows, balanced accuracy and melanoma sensitivity first."""
    keep = (
        "balanced_accuracy",
        "melanoma_sensitivity",
        "melanoma_specificity",
        "accuracy",
        "n_images",
        "unscored_classes",
    )
    return {k: metrics[k] for k in keep if k in metrics}


def record(name: str, results: dict[str, Any]) -> Path:
    """Write results with the command, machine and library versions into benchmarks/results/NAME.json."""
    target = RESULTS / f"{name}.json"
    write_json(target, _relative({"provenance": provenance(portable=True), "data": str(DATA), **results}))
    print(f"recorded {target}")
    return target


def _relative(value: Any) -> Any:
    """`value` with every absolute path under the repository's parent folder (the repository, the shared data)
    written relative to the repository: a record names no folder of the machine that made it."""
    if isinstance(value, dict):
        return {key: _relative(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_relative(item) for item in value]
    if isinstance(value, str) and value.startswith(str(REPO.parent) + os.sep):
        return os.path.relpath(value, REPO)
    return value


def cpu_kind_record_name(name: str) -> str:
    """NAME_KIND (KIND from `int8_cpu_kind`: amx, vnni, armdot, avx2, cpu): records of different CPU kinds kept side
    by side (a model trains, and int8 runs, a little differently on each)."""
    return f"{name}_{int8_cpu_kind(cpu_flags())}"


def markdown_table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A markdown table's lines; `align` has one character per column: 'l' left, 'r' right."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(cells) + " |" for cells in (header, rule, *rows)]


def fmt(estimate: dict[str, Any]) -> str:
    """'0.712 [0.640–0.776]' for a markdown table."""
    if not estimate or estimate.get("value") is None:
        return "n/a"
    ci = estimate.get("ci95")
    return f"{estimate['value']:.3f} [{ci[0]:.3f}–{ci[1]:.3f}]" if ci else f"{estimate['value']:.3f}"


def bundle_folders(doc: str) -> list[Path]:
    """The bundle folders named on a per-bundle benchmark script's command line (`doc`: the script's docstring)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("bundles", type=Path, nargs="+", help="bundles made by 'edgelesion export'")
    return parser.parse_args().bundles


def write_table(name: str, lines: list[str]) -> None:
    """benchmarks/results/NAME.md from a table's lines, printed too."""
    write_text(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def runtime_images_per_second(runner: Runner, pixels: np.ndarray, batch_size: int = 32) -> float:
    """The runtime's own batch throughput on images already decoded, on all the cores it uses."""
    start = time.perf_counter()
    predict_in_batches(runner, pixels, batch_size)
    return len(pixels) / (time.perf_counter() - start)


def decode_inference_limit(decode_seconds: float, runtime_ips: float, inferences: float = 1.0) -> float:
    """Images/s that decoding and inference sharing this machine's cores allow: cores / (decode core-seconds +
    inference core-seconds) per image, decode timed on one thread, inference at the runtime's all-core throughput
    (`inferences` runs of the model per image: more where some images are decided again)."""
    cores = os.cpu_count() or 1
    return cores / (decode_seconds + inferences * cores / runtime_ips)


def noisy(images: np.ndarray, amplitude: int, seed: int) -> np.ndarray:
    """`images` with uniform integer noise in [-amplitude, amplitude] added, clipped to 0..255."""
    noise = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, images.shape)
    return np.clip(images.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def scoring(info: RunInfo, labels: np.ndarray) -> tuple[list[int], int]:
    """The classes balanced accuracy scores on `labels` and the melanoma class index, as the run defines them."""
    return (
        scored_class_indices(labels, len(info.classes), info.config.min_support),
        info.classes.index(info.config.positive_class),
    )


def signed_interval(value: float, ci95: list[float]) -> str:
    """'+0.042 [-0.006, +0.091]' for a difference in a markdown table."""
    return f"{value:+.3f} [{ci95[0]:+.3f}, {ci95[1]:+.3f}]"
