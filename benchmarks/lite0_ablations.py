"""EfficientNet-Lite0's 12-epoch recipe (the recipe until session 8), one choice changed at a time, on fold 0.

    .venv/bin/python -m benchmarks.lite0_ablations 180px bn-trainable   # variants to run now, in order
    .venv/bin/python -m benchmarks.lite0_ablations                      # only re-record the finished ones

The baseline stays the 12-epoch recipe (`benchmarks.cv lite0`, pinned), so every variant, 30 epochs
included, is compared with it; compare with 20 epochs through its own row. Each variant trains fold 0 (same
split) into runs/benchmarks/lite0-ablations/NAME (git-ignored,
resumable: run the command again after an interruption) and is compared with the recipe's own fold-0 run
(`benchmarks.cv lite0`, runs/benchmarks/cv-lite0/fold-0) on the same validation images: the paired
bootstrap difference in balanced accuracy and melanoma sensitivity, melanoma's ROC AUC (the alert's
quality, threshold-free), and how many answers the model keeps under +-1 grey level of input noise
(`benchmarks.noise_floor`: the floor under its int8 files' agreement). Records benchmarks/results/lite0_ablations.{md,json}. One fold cannot resolve
differences under about 3 points: the intervals say which differences are real.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.common import (RUNS, finished_metrics, markdown_table, noisy, record, require_data, scoring,
                               signed_interval, train_or_resume, training_time, write_table)
from benchmarks.cv import RECIPES
from edgelesion.data.rebalance import RebalanceMethod
from edgelesion.export.parity import compare
from edgelesion.metrics import paired_difference
from edgelesion.train.config import TrainConfig
from edgelesion.train.evaluation import predict, read_validation_predictions, recorded_splits
from edgelesion.train.online_augment import OnlineAugment
from edgelesion.train.runs import RunDir, read_run

RECIPE = RECIPES["lite0"]
BASELINE = RUNS / "cv-lite0" / "fold-0"
OUT = RUNS / "lite0-ablations"
# one change from the recipe each (TrainConfig fields)
VARIANTS: dict[str, dict[str, Any]] = {
    "180px": {"preprocessing": replace(RECIPE.preprocessing, image_size=180)},
    "bn-trainable": {"freeze_batchnorm": False},
    "no-label-smoothing": {"label_smoothing": 0.0},
    "no-class-weights": {"rebalance": RebalanceMethod.NONE},
    "no-online-augment": {"online_augment": OnlineAugment(enabled=False)},
    "no-head-epochs": {"head_epochs": 0},
    "20-epochs": {"epochs": 20},
    # no change but the training's randomness (initialisation of the head, augmentation draws, batch order): the
    # run-to-run spread every other variant's difference has to clear
    **{f"replicate-seed-{n}": {"seed": RECIPE.seed + n, "split_seed": RECIPE.seed} for n in (1, 2)},
    "30-epochs": {"epochs": 30},  # 20 epochs' best epochs came late (17-19 of 20): does longer still help?
    # the float model's answers flip under +-1 grey level (benchmarks.noise_floor): does training under noise help?
    "pixel-noise-3": {"online_augment": replace(RECIPE.online_augment, pixel_noise=3.0)},
}


def noise_agreement(run_dir: Path, scored: list[int], positive: int) -> dict[str, float]:
    """Top-1 agreement of the run's model with itself when +-1 grey level of noise is added (one seeded draw)."""
    from edgelesion._tf import keras

    run = RunDir(run_dir)
    (val,) = recorded_splits(run, read_run(run.root), "val")
    model = keras.models.load_model(run.best_model)
    figures = compare(predict(model, val.images), predict(model, noisy(val.images, 1, 0)), val.labels, scored, positive)
    return {key: figures[key] for key in ("top1_agreement", "sure_top1_agreement", "sure_images")}


def compared(run_dir: Path, config: TrainConfig, baseline_dir: Path = BASELINE) -> dict[str, Any]:
    """A finished run's figures against a baseline run (the recipe's fold 0), paired on the same validation images."""
    rows, probabilities, labels, classes = read_validation_predictions(RunDir(run_dir))
    base_rows, baseline, base_labels, _ = read_validation_predictions(RunDir(baseline_dir))
    if [r["path"] for r in rows] != [r["path"] for r in base_rows] or not np.array_equal(labels, base_labels):
        raise SystemExit(f"{run_dir} was validated on other images than {baseline_dir}: same fold and seed expected")
    scored, positive = scoring(read_run(run_dir, need_model=False), labels)
    metrics = finished_metrics(run_dir, config.epochs)
    return {"balanced_accuracy": metrics["balanced_accuracy"], "melanoma_sensitivity": metrics["melanoma_sensitivity"],
            "melanoma_auc": float(roc_auc_score(labels == positive, probabilities[:, positive])),
            "vs_recipe": paired_difference(labels, baseline, probabilities, scored, positive, seed=config.seed),
            "noise_pm1": noise_agreement(run_dir, scored, positive), "timing": training_time(run_dir, config.head_epochs),
            "images": len(labels)}


# the columns of comparison_row, after the run's name
COMPARISON_COLUMNS = ["balanced accuracy", "Δ vs recipe [paired 95% CI]", "melanoma sensitivity (arg-max)",
                      "Δ vs recipe [paired 95% CI]", "melanoma AUC", "answers kept under ±1 grey level (all / sure)",
                      "s per whole-network epoch"]


def comparison_row(name: str, result: dict[str, Any]) -> list[str]:
    """A table row of `compared`'s figures for the run `name`."""
    def delta(key: str) -> str:
        estimate = result["vs_recipe"][key]
        return signed_interval(estimate["value"], estimate["ci95"])

    return [name, f"{result['balanced_accuracy']['value']:.3f}", delta("delta_balanced_accuracy"),
            f"{result['melanoma_sensitivity']['value']:.3f}", delta("delta_melanoma_sensitivity"),
            f"{result['melanoma_auc']:.3f}",
            f"{result['noise_pm1']['top1_agreement']:.3f} / {result['noise_pm1']['sure_top1_agreement']:.3f}",
            f"{result['timing']['whole_network_epoch_seconds_median']:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="*", help=f"variants to train now, in this order: {', '.join(VARIANTS)}")
    args = parser.parse_args()
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if finished_metrics(BASELINE, RECIPE.epochs) is None:
        raise SystemExit(f"the recipe's fold-0 run {BASELINE} is not finished: run benchmarks.cv lite0 --folds 0 first")
    data = require_data()
    for name in args.variants:
        train_or_resume(data, OUT / name, RECIPE.with_changes(**VARIANTS[name]))
    results = {"recipe (fold 0)": compared(BASELINE, RECIPE)}
    for name, changes in VARIANTS.items():
        config = RECIPE.with_changes(**changes)
        if finished_metrics(OUT / name, config.epochs) is not None:
            results[name] = {"changes": {k: str(v) for k, v in changes.items()}, **compared(OUT / name, config)}
    record("lite0_ablations", {"recipe": RECIPE.to_dict(), "results": results})
    lines = markdown_table(["variant (one change from the recipe)", *COMPARISON_COLUMNS],
                           [comparison_row(name, result) for name, result in results.items()], "lrrrrrrr")
    write_table("lite0_ablations", lines)


if __name__ == "__main__":
    main()
