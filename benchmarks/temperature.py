"""Would temperature scaling calibrate a run's probabilities? Cross-fitted on its validation predictions.

    .venv/bin/python -m benchmarks.temperature runs/benchmarks/cv-lite0/fold-0 \
        runs/benchmarks/model3-seed-dropout-augmentor runs/benchmarks/model1-seed-simple

A temperature T divides the logits before the softmax (softmax(log p / T) from the saved
probabilities). Fitting T and scoring it on the same images flatters it, so the validation split
is halved at random (5 seeded splits): T is fitted (minimum negative log-likelihood, scipy's bounded
scalar search) on one half and scored on the other, both ways round. Reported: T, and the scored
half's negative log-likelihood and expected calibration error before and after. T near 1 and no
better likelihood on held-out images mean the model is already as calibrated as one scalar can make
it. Records benchmarks/results/temperature.{md,json}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from benchmarks.common import markdown_table, record, write_table
from edgelesion.metrics import calibration_bins
from edgelesion.train.evaluation import read_validation_predictions
from edgelesion.train.runs import RunDir

SPLITS = 5
BOUNDS = (0.05, 20.0)


def tempered(log_probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row."""
    z = log_probabilities / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class."""
    return float(-np.log(probabilities[np.arange(len(labels)), labels] + 1e-12).mean())


def fit_temperature(log_probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature of least negative log-likelihood on these images."""
    found = minimize_scalar(lambda t: negative_log_likelihood(tempered(log_probabilities, np.exp(t)), labels),
                            bounds=tuple(np.log(BOUNDS)), method="bounded")
    return float(np.exp(found.x))


def cross_fitted(run_dir: Path) -> dict[str, Any]:
    """T fitted on one random half of the validation split, scored on the other, both ways, SPLITS times."""
    _, probabilities, labels, _ = read_validation_predictions(RunDir(run_dir))
    log_p = np.log(np.clip(probabilities, 1e-12, 1.0))
    halves = []
    for seed in range(SPLITS):
        order = np.random.default_rng(seed).permutation(len(labels))
        first, second = order[: len(labels) // 2], order[len(labels) // 2:]
        for fit, scored in ((first, second), (second, first)):
            temperature = fit_temperature(log_p[fit], labels[fit])
            after = tempered(log_p[scored], temperature)
            halves.append({
                "temperature": temperature,
                "nll_before": negative_log_likelihood(probabilities[scored], labels[scored]),
                "nll_after": negative_log_likelihood(after, labels[scored]),
                "ece_before": calibration_bins(labels[scored], probabilities[scored])["expected_calibration_error"],
                "ece_after": calibration_bins(labels[scored], after)["expected_calibration_error"]})
    mean = {key: float(np.mean([h[key] for h in halves])) for key in halves[0]}
    return {"images": len(labels), "temperature_all_images": fit_temperature(log_p, labels), "mean": mean,
            "temperature_range": [min(h["temperature"] for h in halves), max(h["temperature"] for h in halves)],
            "halves": halves}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished training runs")
    results = {run.name if run.name != "fold-0" else f"{run.parent.name}/fold-0": cross_fitted(run)
               for run in parser.parse_args().runs}
    record("temperature", {"splits": SPLITS, "runs": results})
    rows = [[name, str(r["images"]), f"{r['mean']['temperature']:.3f} ({r['temperature_range'][0]:.2f}–"
             f"{r['temperature_range'][1]:.2f})", f"{r['mean']['nll_before']:.3f} → {r['mean']['nll_after']:.3f}",
             f"{r['mean']['ece_before']:.3f} → {r['mean']['ece_after']:.3f}"] for name, r in results.items()]
    lines = markdown_table(["run", "validation images", f"T, mean (range) over {2 * SPLITS} halves",
                            "held-out NLL, before → after", "held-out ECE, before → after"], rows, "lrrrr")
    write_table("temperature", lines)


if __name__ == "__main__":
    main()
