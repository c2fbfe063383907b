"""Two cross-validated recipes, fold by fold, paired on the same validation images.

    .venv/bin/python -m benchmarks.cv_compare lite0-20ep lite0-20ep-mixup

Reads the folds both recipes have finished on this machine (`benchmarks.cv RECIPE --folds ...`, in
runs/benchmarks/cv-RECIPE) and records, per fold and as the mean over those folds, each recipe's balanced
accuracy and arg-max melanoma sensitivity (best epoch), the second recipe's paired bootstrap difference
from the first, melanoma's ROC AUC and how many answers each model keeps under +-1 grey level of input
noise (the floor under its int8 files' agreement; `benchmarks.lite0_ablations`), in
benchmarks/results/cv_compare_BASELINE__RECIPE.{md,json}. Folds trained on another machine are not
compared: the same recipe's fold differs by a point or more from one CPU to another.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import RUNS, finished_metrics, markdown_table, record, write_table
from benchmarks.cv import RECIPES
from benchmarks.lite0_ablations import COMPARISON_COLUMNS, compared, comparison_row
from edgelesion.train.cross_validation import CvDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("baseline", choices=RECIPES)
    parser.add_argument("recipe", choices=RECIPES)
    args = parser.parse_args()
    if args.baseline == args.recipe:
        parser.error("name two different recipes")
    recipes = {name: (RECIPES[name], CvDir(RUNS / f"cv-{name}")) for name in (args.baseline, args.recipe)}
    folds = [k for k in range(RECIPES[args.recipe].folds)
             if all(finished_metrics(cv.fold(k).root, config.epochs) for config, cv in recipes.values())]
    if not folds:
        raise SystemExit(f"no fold is finished in both {' and '.join(str(cv.root) for _, cv in recipes.values())}")
    base_cv = recipes[args.baseline][1]
    per_fold = {k: {name: compared(cv.fold(k).root, config, base_cv.fold(k).root)
                    for name, (config, cv) in recipes.items()} for k in folds}
    means = {name: {key: float(np.mean([per_fold[k][name][key]["value"] for k in folds]))
                    for key in ("balanced_accuracy", "melanoma_sensitivity")} for name in recipes}
    name = f"cv_compare_{args.baseline}__{args.recipe}".replace("-", "_")
    record(name, {"baseline": args.baseline, "recipe": args.recipe, "folds": folds,
                  "configs": {n: config.to_dict() for n, (config, _) in recipes.items()},
                  "per_fold": per_fold, "mean_over_folds": means})
    rows = [[str(k), *comparison_row(recipe, per_fold[k][recipe])] for k in folds for recipe in recipes]
    rows += [[f"mean of {len(folds)}", recipe, f"{means[recipe]['balanced_accuracy']:.3f}", "",
              f"{means[recipe]['melanoma_sensitivity']:.3f}", "", "", "", ""] for recipe in recipes]
    columns = [column.replace("vs recipe", f"vs {args.baseline}") for column in COMPARISON_COLUMNS]
    write_table(name, markdown_table(["fold", "recipe", *columns], rows, "llrrrrrrr"))


if __name__ == "__main__":
    main()
