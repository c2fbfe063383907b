"""EfficientNet-Lite0's recipe cross-validated on the real data, fold by fold, resumable.

    .venv/bin/python -m benchmarks.cv_lite0 --folds 0,1   # the folds to run now; finished ones are kept

Runs `edgelesion cv` into runs/benchmarks/cv-lite0 (git-ignored) and records the merged summary of
whichever folds are finished, with each finished fold's training time, in
benchmarks/results/cv_lite0.{md,json}.
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks.common import RESULTS, RUNS, record, require_data
from edgelesion.fileio import read_csv, write_text
from edgelesion.train.config import TrainConfig
from edgelesion.train.cross_validation import CvDir, cross_validate, fold_finished

OUT = RUNS / "cv-lite0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", default="0", help="comma-separated folds to run now (default 0)")
    args = parser.parse_args()
    config = TrainConfig.for_model("efficientnet-lite0")
    result = cross_validate(require_data(), OUT, config, folds=[int(k) for k in args.folds.split(",")])
    cv = CvDir(OUT)
    timing = {}
    for k in result["finished_folds"]:
        if fold_finished(cv.fold(k)):
            history = read_csv(cv.fold(k).history)
            seconds = [float(r["seconds"]) for r in history]
            timing[k] = {"epochs": len(history), "training_seconds": sum(seconds),
                         "whole_network_epoch_seconds_median": statistics.median(seconds[config.head_epochs:]),
                         "head_epoch_seconds_median": statistics.median(seconds[:config.head_epochs])}
    record("cv_lite0", {"config": config.to_dict(), "cv": result, "timing": timing})
    write_text(RESULTS / "cv_lite0.md", cv.table.read_text())


if __name__ == "__main__":
    main()
