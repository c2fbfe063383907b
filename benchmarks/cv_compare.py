"""Two cross-validated recipes, fold by fold, paired on the same validation images.

    .venv/bin/python -m benchmarks.cv_compare lite0-20ep lite0-20ep-mixup

Reads the folds both recipes have finished on this machine (`benchmarks.cv RECIPE --only-folds ...`, in
runs/benchmarks/cv-RECIPE) and records, per fold and as the mean over those folds, each recipe's balanced
accuracy and arg-max melanoma sensitivity (best epoch), the second recipe's paired bootstrap difference
from the first, melanoma's ROC AUC and how many answers each model keeps under +-1 grey level of input
noise (the floor under its int8 files' agreement), in
benchmarks/results/cv_compare_BASELINE__RECIPE_KIND.{md,json}. Folds trained on another machine are not
compared: the same recipe's fold differs by a point or more from one CPU to another.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.common import (
    RUNS,
    cpu_kind_record_name,
    finished_metrics,
    markdown_table,
    noisy,
    record,
    scoring,
    signed_interval,
    training_time,
    write_table,
)
from benchmarks.cv import RECIPES
from edgelesion.export.parity import compare
from edgelesion.metrics import paired_difference
from edgelesion.train.config import TrainConfig
from edgelesion.train.cross_validation import CvDir
from edgelesion.train.evaluation import predict, read_validation_predictions, recorded_splits
from edgelesion.train.runs import RunDir, read_run

# the columns of comparison_row, after the run's name
COMPARISON_COLUMNS = [
    "balanced accuracy",
    "Δ vs recipe [paired 95% CI]",
    "melanoma sensitivity (arg-max)",
    "Δ vs recipe [paired 95% CI]",
    "melanoma AUC",
    "answers kept under ±1 grey level (all / sure)",
    "s per whole-network epoch",
]


def noise_agreement(run_dir: Path, scored: list[int], positive: int) -> dict[str, float]:
    """Top-1 agreement of the run's model with itself when +-1 grey level of noise is added (one seeded draw)."""
    from edgelesion._tf import keras

    run = RunDir(run_dir)
    (val,) = recorded_splits(run, read_run(run.root), "val")
    model = keras.models.load_model(run.best_model)
    figures = compare(predict(model, val.images), predict(model, noisy(val.images, 1, 0)), val.labels, scored, positive)
    return {key: figures[key] for key in ("top1_agreement", "sure_top1_agreement", "sure_images")}


def compared(run_dir: Path, config: TrainConfig, baseline_dir: Path) -> dict[str, Any]:
    """A finished run's figures against a baseline run of the same fold, paired on the same validation images."""
    rows, probabilities, labels, _classes = read_validation_predictions(RunDir(run_dir))
    base_rows, baseline, base_labels, _ = read_validation_predictions(RunDir(baseline_dir))
    if [r["path"] for r in rows] != [r["path"] for r in base_rows] or not np.array_equal(labels, base_labels):
        raise SystemExit(f"{run_dir} was validated on other images than {baseline_dir}: same fold and seed expected")
    scored, positive = scoring(read_run(run_dir, need_model=False), labels)
    metrics = finished_metrics(run_dir, config.epochs)
    return {
        "balanced_accuracy": metrics["balanced_accuracy"],
        "melanoma_sensitivity": metrics["melanoma_sensitivity"],
        "melanoma_auc": float(roc_auc_score(labels == positive, probabilities[:, positive])),
        "vs_recipe": paired_difference(labels, baseline, probabilities, scored, positive, seed=config.seed),
        "noise_pm1": noise_agreement(run_dir, scored, positive),
        "timing": training_time(run_dir, config.head_epochs),
        "images": len(labels),
    }


def comparison_row(name: str, result: dict[str, Any]) -> list[str]:
    """A table row of `compared`'s figures for the run `name`."""

    def delta(key: str) -> str:
        estimate = result["vs_recipe"][key]
        return signed_interval(estimate["value"], estimate["ci95"])

    return [
        name,
        f"{result['balanced_accuracy']['value']:.3f}",
        delta("delta_balanced_accuracy"),
        f"{result['melanoma_sensitivity']['value']:.3f}",
        delta("delta_melanoma_sensitivity"),
        f"{result['melanoma_auc']:.3f}",
        f"{result['noise_pm1']['top1_agreement']:.3f} / {result['noise_pm1']['sure_top1_agreement']:.3f}",
        f"{result['timing']['whole_network_epoch_seconds_median']:.0f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("baseline", choices=RECIPES)
    parser.add_argument("recipe", choices=RECIPES)
    args = parser.parse_args()
    if args.baseline == args.recipe:
        parser.error("name two different recipes")
    recipes = {name: (RECIPES[name], CvDir(RUNS / f"cv-{name}")) for name in (args.baseline, args.recipe)}
    folds = [
        k
        for k in range(RECIPES[args.recipe].folds)
        if all(finished_metrics(cv.fold(k).root, config.epochs) for config, cv in recipes.values())
    ]
    if not folds:
        raise SystemExit(f"no fold is finished in both {' and '.join(str(cv.root) for _, cv in recipes.values())}")
    base_cv = recipes[args.baseline][1]
    per_fold = {
        k: {name: compared(cv.fold(k).root, config, base_cv.fold(k).root) for name, (config, cv) in recipes.items()}
        for k in folds
    }
    means = {
        name: {
            key: float(np.mean([per_fold[k][name][key]["value"] for k in folds]))
            for key in ("balanced_accuracy", "melanoma_sensitivity")
        }
        for name in recipes
    }
    name = cpu_kind_record_name(f"cv_compare_{args.baseline}__{args.recipe}".replace("-", "_"))
    record(
        name,
        {
            "baseline": args.baseline,
            "recipe": args.recipe,
            "folds": folds,
            "configs": {n: config.to_dict() for n, (config, _) in recipes.items()},
            "per_fold": per_fold,
            "mean_over_folds": means,
        },
    )
    rows = [[str(k), *comparison_row(recipe, per_fold[k][recipe])] for k in folds for recipe in recipes]
    rows += [
        [
            f"mean of {len(folds)}",
            recipe,
            f"{means[recipe]['balanced_accuracy']:.3f}",
            "",
            f"{means[recipe]['melanoma_sensitivity']:.3f}",
            "",
            "",
            "",
            "",
        ]
        for recipe in recipes
    ]
    columns = [column.replace("vs recipe", f"vs {args.baseline}") for column in COMPARISON_COLUMNS]
    write_table(name, markdown_table(["fold", "recipe", *columns], rows, "llrrrrrrr"))


if __name__ == "__main__":
    main()
