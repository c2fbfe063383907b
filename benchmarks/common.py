"""Shared by the benchmark scripts: where the real data is, restartable training, and result records."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgelesion.train.config import TrainConfig
from edgelesion.fileio import read_csv, read_json, write_json, write_text
from edgelesion.provenance import provenance
from edgelesion.train.runs import RunDir, read_run

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("EDGELESION_BENCH_DATA", REPO.parent / "shared" / "data" / "isic9" / "train"))
RUNS = REPO / "runs" / "benchmarks"  # git-ignored: models trained on the real data are never committed
RESULTS = REPO / "benchmarks" / "results"


def require_data() -> Path:
    """The full ISIC training folder, or exit with where to get it."""
    if not DATA.is_dir():
        sys.exit(f"benchmark data {DATA} not found: set EDGELESION_BENCH_DATA to the ISIC 'Train' folder (see README.md)")
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


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures a results table shows, balanced accuracy and melanoma sensitivity first."""
    keep = ("balanced_accuracy", "melanoma_sensitivity", "melanoma_specificity", "accuracy", "n_images",
            "unscored_classes")
    return {k: metrics[k] for k in keep if k in metrics}


def record(name: str, results: dict[str, Any]) -> Path:
    """Write results with the command, machine and library versions into benchmarks/results/NAME.json."""
    target = RESULTS / f"{name}.json"
    write_json(target, {"provenance": provenance(), "data": str(DATA), **results})
    print(f"recorded {target}")
    return target


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


def probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    """onnxruntime's probabilities for `images`, in batches of 32."""
    import onnxruntime as ort

    from edgelesion.export.onnx_export import INPUT_NAME

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {INPUT_NAME: images[i:i + 32].astype(np.float32)})[0]
                           for i in range(0, len(images), 32)])


def noisy(images: np.ndarray, amplitude: int, seed: int) -> np.ndarray:
    """`images` with uniform integer noise in [-amplitude, amplitude] added, clipped to 0..255."""
    noise = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, images.shape)
    return np.clip(images.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def validation_probabilities(run_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """A finished run's validation predictions: image paths, label indices, probabilities, class names."""
    classes = read_run(run_dir, need_model=False).classes
    rows = read_csv(RunDir(run_dir).evaluation / "validation" / "predictions.csv")
    return ([r["path"] for r in rows], np.array([classes.index(r["label"]) for r in rows]),
            np.array([[float(r[c]) for c in classes] for r in rows]), classes)
