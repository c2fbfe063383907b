"""A recipe cross-validated on the real data, fold by fold, resumable.

    .venv/bin/python -m benchmarks.cv lite0 --only-folds 0,1   # the folds to run now; finished ones are kept
    .venv/bin/python -m benchmarks.cv model3 --only-folds none  # train nothing: record the folds finished so far

Runs `edgelesion cv` into runs/benchmarks/cv-RECIPE (git-ignored) and records the merged summary of
whichever folds are finished, with each finished fold's training time, in
benchmarks/results/cv_RECIPE_KIND.{md,json} and its charts in cv_RECIPE_KIND/ (dashes become underscores; KIND
names the CPU kind, see benchmarks.common.cpu_kind_record_name).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace

from benchmarks.common import RESULTS, RUNS, cpu_kind_record_name, record, require_data, training_time
from edgelesion.cli import RenamedOption
from edgelesion.fileio import read_json, write_text
from edgelesion.preprocessing import LEGACY_DRAFT_MARGIN
from edgelesion.train.config import OnlineAugment, TrainConfig
from edgelesion.train.cross_validation import CvDir, cross_validate
from edgelesion.train.recipes import recipe_config


def as_recorded(config: TrainConfig) -> TrainConfig:
    """`config` with the reduced-JPEG-decode margin its records were trained with: no less than 4 input sides
    (`LEGACY_DRAFT_MARGIN`), so a rerun reproduces them (the 180 px images never engage it)."""
    return config.with_changes(preprocessing=replace(config.preprocessing, jpeg_draft_margin=LEGACY_DRAFT_MARGIN))


# the recipes recorded in benchmarks/results/cv_RECIPE_KIND.*; those that were not adopted are in docs/experiments.md
RECIPES = {
    name: as_recorded(config)
    for name, config in {
        "lite0-20ep": recipe_config("lite0-20ep"),  # the recipe
        "lite0": TrainConfig.for_model("efficientnet-lite0", epochs=12),  # fewer epochs
        # stronger zoom (more distinct views of 1,800 training images) and colour jitter (against the look of an
        # archive period)
        "lite0-20ep-strong-aug": TrainConfig.for_model(
            "efficientnet-lite0",
            epochs=20,
            online_augment=OnlineAugment(enabled=True, min_crop=0.6, brightness=0.15, contrast=0.3, saturation=0.3),
        ),
        # seed model 3: seed-dropout with Augmentor rebalancing, the seed project's 20 epochs
        "model3": recipe_config("seed-dropout-augmentor"),
    }.items()
}
# mixup (alpha 0.2): smoother class boundaries, meant to lift balanced accuracy and to make the answers less
# fragile under the small input changes of int8 rounding and reduced JPEG decoding
RECIPES["lite0-20ep-mixup"] = TrainConfig.for_model(
    "efficientnet-lite0", epochs=20, online_augment=OnlineAugment(enabled=True, mixup=0.2)
)
# 260 px: the 180 px images upscaled further (224 px beats their own 180 px by about 2 points)
RECIPES["lite0-20ep-260px"] = TrainConfig.for_model(
    "efficientnet-lite0",
    epochs=20,
    preprocessing=replace(TrainConfig.for_model("efficientnet-lite0").preprocessing, image_size=260),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", choices=RECIPES)
    parser.add_argument("--only-folds", default="0", help="comma-separated folds to run now (default 0), or 'none'")
    parser.add_argument(
        "--folds", action=RenamedOption, new="--only-folds", why="the folds to run now, as in edgelesion cv"
    )
    parser.add_argument(
        "--force", action="store_true", help="record even when this machine has fewer finished folds than the record"
    )
    args = parser.parse_args()
    config, cv = RECIPES[args.recipe], CvDir(RUNS / f"cv-{args.recipe}")
    folds = [] if args.only_folds == "none" else [int(k) for k in args.only_folds.split(",")]
    result = cross_validate(require_data(), cv.root, config, folds=folds)
    timing = {k: training_time(cv.fold(k).root, config.head_epochs) for k in result["finished_folds"]}
    name = cpu_kind_record_name("cv_" + args.recipe.replace("-", "_"))
    recorded = RESULTS / f"{name}.json"
    if recorded.is_file() and not args.force:
        before = read_json(recorded)["cv"]["finished_folds"]
        if missing := sorted(set(before) - set(result["finished_folds"])):
            sys.exit(
                f"{recorded} holds folds {missing} that {cv.root} lacks (trained on another machine?): "
                "not overwritten; record anyway with --force"
            )
    record(name, {"config": config.to_dict(), "cv": result, "timing": timing})
    write_text(RESULTS / f"{name}.md", cv.table.read_text())
    (RESULTS / name).mkdir(exist_ok=True)
    for chart in (cv.chart, cv.roc):
        shutil.copyfile(chart, RESULTS / name / chart.name)


if __name__ == "__main__":
    main()
