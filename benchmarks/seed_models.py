"""Train the seed project's three models on the full ISIC set with a leak-free split and record them.

    .venv/bin/python -m benchmarks.seed_models [--epochs 20]

Model 1: seed-simple; model 2: seed-dropout; model 3: seed-dropout with Augmentor rebalancing of
the training split. Restartable: finished runs are reused, interrupted ones resumed.
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks.common import RESULTS, RUNS, fmt, headline, markdown_table, record, require_data, train_or_resume
from edgelesion.train.config import TrainConfig
from edgelesion.fileio import read_csv, read_json, write_text
from edgelesion.train.runs import RunDir

SEED_EPOCHS = 20  # the seed project's schedule
SEED_MODELS = {
    "model1-seed-simple": {"model": "seed-simple", "rebalance": "none"},
    "model2-seed-dropout": {"model": "seed-dropout", "rebalance": "none"},
    "model3-seed-dropout-augmentor": {"model": "seed-dropout", "rebalance": "augmentor"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=SEED_EPOCHS)
    args = parser.parse_args()
    data = require_data()
    results = {}
    for name, settings in SEED_MODELS.items():
        config = TrainConfig(epochs=args.epochs, **settings)
        metrics = train_or_resume(data, RUNS / name, config)
        history = read_csv(RunDir(RUNS / name).history)
        results[name] = {
            "config": config.to_dict(),
            "validation": headline(metrics),
            "best_epoch": read_json(RunDir(RUNS / name).state)["best_epoch"],
            "seconds_per_epoch_median": statistics.median(float(r["seconds"]) for r in history),
            "train_images_per_second_median": statistics.median(float(r["train_images_per_second"]) for r in history),
        }
    record("seed_models", {"runs": results})
    rows = markdown_table(
        ["model", "val balanced accuracy [95% CI]", "val melanoma sensitivity [95% CI]", "val accuracy [95% CI]",
         "s/epoch", "train img/s"],
        [[name, fmt(r["validation"]["balanced_accuracy"]), fmt(r["validation"]["melanoma_sensitivity"]),
          fmt(r["validation"]["accuracy"]), f"{r['seconds_per_epoch_median']:.1f}",
          f"{r['train_images_per_second_median']:.0f}"] for name, r in results.items()],
        "llllrr")
    write_text(RESULTS / "seed_models.md", "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
