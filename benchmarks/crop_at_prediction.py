"""The recipe's own models, trained on whole images, shown only the centre of each image when they predict: is the
centre crop's held-out gain in what the model sees, or in what it learned from crops, and what does each view cost
on the sources the model has seen?

    .venv/bin/python -m benchmarks.crop_at_prediction               # the centre 80% and 60%, each also averaged
    .venv/bin/python -m benchmarks.crop_at_prediction --crops 0.6   # with the whole image's probabilities

Reads the recipe's runs of `benchmarks.source_holdout` on disk: the run trained without ISIC block 0000100-0000999
(runs/benchmarks/holdout-recipe, trained by `python -m benchmarks.source_holdout recipe`) and each finished fold of
its 5-fold CV with sources (holdout-recipe-kfold). Each model predicts the images its own evaluation scored (the
held-out block; each fold's validation split), decoded and resized as training does it but keeping only the centre
`crop` of each side (`Preprocessing.centre_crop`), and the mean of that view's probabilities and the whole image's.
Each view is paired with the whole image on the same images: melanoma-against-nevus AUC inside the block (held out;
and out of fold in the CV, where the block is trained on), and the CV's balanced accuracy and melanoma sensitivity,
per fold and out of fold. Nothing is trained. Records benchmarks/results/crop_at_prediction_KIND.{json,md}.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.common import RUNS, cpu_kind_record_name, markdown_table, record, signed_interval, write_table
from benchmarks.source_holdout import HELD_OUT, LOOKALIKE, in_block, paired_auc_difference, run_name
from edgelesion._tf import keras
from edgelesion.data.dataset import LoadedDataset, load_dataset
from edgelesion.metrics import balanced_accuracy, paired_difference, scored_class_indices
from edgelesion.train.cross_validation import CvDir, fold_finished
from edgelesion.train.evaluation import predict, read_predictions
from edgelesion.train.leave_source_out import fold_dir
from edgelesion.train.runs import RunDir, RunInfo, read_run

WHOLE = "whole image"
RECORDED_TOLERANCE = 1e-3  # predictions.csv keeps 6 significant digits


class Views:
    """The dataset decoded once per crop, shared by every run (they all read the same folder and metadata)."""

    def __init__(self, info: RunInfo, crops: list[float]) -> None:
        self.crops, self.classes = crops, info.classes
        self.datasets: dict[float, LoadedDataset] = {
            crop: load_dataset(
                info.data_dir,
                replace(info.config.preprocessing, centre_crop=crop),
                classes=info.classes,
                metadata=info.metadata,
                progress=False,
            )
            for crop in (1.0, *crops)
        }
        self.position = {r.relpath: i for i, r in enumerate(self.datasets[1.0].records)}

    def probabilities(
        self, run: RunDir, scored: Path
    ) -> tuple[list[dict[str, str]], np.ndarray, list[str], dict[str, np.ndarray]]:
        """Rows, labels, class names and each view's probabilities for the images of `run`'s evaluation folder
        `scored`; the whole image's must be the ones recorded there (the same model, decoded the same way)."""
        rows, recorded, labels, classes = read_predictions(scored)
        if classes != self.classes:  # the folds' figures are pooled over one class list
            raise SystemExit(f"{scored} scored other classes than the recipe's run without the block")
        model = keras.models.load_model(run.best_model)
        indices = np.array([self.position[r["path"]] for r in rows])
        by_crop = {crop: predict(model, data.images.take(indices)) for crop, data in self.datasets.items()}
        if np.abs(by_crop[1.0] - recorded).max() > RECORDED_TOLERANCE:
            raise SystemExit(f"{run.root}'s whole-image predictions differ from those recorded in {scored}")
        views = {WHOLE: by_crop[1.0]}
        for crop in self.crops:
            views[f"centre {crop:.0%}"] = by_crop[crop]
            views[f"whole + centre {crop:.0%}"] = (by_crop[1.0] + by_crop[crop]) / 2
        return rows, labels, classes, views


def in_block_auc(
    rows: list[dict[str, str]], labels: np.ndarray, classes: list[str], views: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Melanoma against nevus inside the block: each view's AUC and its paired difference from the whole image's."""
    inside = in_block(rows)
    melanoma = classes.index("melanoma")
    truth = labels[inside] == melanoma
    whole = views[WHOLE][inside, melanoma]
    return {
        name: {
            "auc": float(roc_auc_score(truth, p[inside, melanoma])),
            "vs_whole": paired_auc_difference(truth, whole, p[inside, melanoma]),
            "melanomas": int(truth.sum()),
            "nevi": int((~truth).sum()),
        }
        for name, p in views.items()
    }


def pooled_figures(
    labels: np.ndarray, classes: list[str], views: dict[str, np.ndarray], min_support: int
) -> dict[str, Any]:
    """Each view's balanced accuracy, and its paired difference from the whole image's in balanced accuracy and
    melanoma sensitivity."""
    scored = scored_class_indices(labels, len(classes), min_support)
    positive = classes.index("melanoma")
    return {
        name: {
            "balanced_accuracy": balanced_accuracy(labels, p.argmax(1), scored),
            "vs_whole": paired_difference(labels, views[WHOLE], p, scored, positive),
        }
        for name, p in views.items()
    }


def measure(crops: list[float]) -> dict[str, Any]:
    """The held-out run's and each finished CV fold's figures per view."""
    held_root, cv = RUNS / run_name("recipe", 0), CvDir(RUNS / f"{run_name('recipe', 0)}-kfold")
    held_run = fold_dir(CvDir(held_root), HELD_OUT)
    folds = [fold for fold in range(5) if fold_finished(cv.fold(fold))]
    if not (held_run.evaluation / "held_out_source" / "predictions.csv").is_file() or not folds:
        raise SystemExit(
            f"needs the recipe's run without the block ({held_root}) and at least one finished fold of its CV "
            f"({cv.root}): python -m benchmarks.source_holdout recipe --folds 0"
        )
    info = read_run(held_run.root)
    views = Views(info, crops)
    rows, labels, classes, held = views.probabilities(held_run, held_run.evaluation / "held_out_source")
    result: dict[str, Any] = {"held_out": in_block_auc(rows, labels, classes, held), "folds": {}}
    together: list[tuple[list[dict[str, str]], np.ndarray, dict[str, np.ndarray]]] = []
    for fold in folds:
        run = cv.fold(fold)
        rows, labels, classes, fold_views = views.probabilities(run, run.evaluation / "validation")
        result["folds"][str(fold)] = pooled_figures(labels, classes, fold_views, info.config.min_support)
        together.append((rows, labels, fold_views))
    rows = [row for part in together for row in part[0]]
    labels = np.concatenate([part[1] for part in together])
    pooled = {name: np.concatenate([part[2][name] for part in together]) for name in together[0][2]}
    result["out_of_fold"] = {
        "folds": [str(fold) for fold in folds],
        "pooled": pooled_figures(labels, classes, pooled, info.config.min_support),
        "in_block": in_block_auc(rows, labels, classes, pooled),
    }
    return result


def table(result: dict[str, Any]) -> list[str]:
    """One row per view, each paired with the whole image."""
    oof = result["out_of_fold"]
    header = [
        "view at prediction",
        "held out: AUC melanoma vs nevus",
        "Δ vs whole [paired 95% CI]",
        f"CV folds {', '.join(oof['folds'])}: balanced accuracy out of fold",
        "Δ [paired 95% CI]",
        "Δ per fold",
        "Δ melanoma sensitivity",
        "inside the block, out of fold: AUC",
        "Δ AUC [paired 95% CI]",
    ]
    rows = []
    for name in result["held_out"]:  # the whole image first, as the views were made
        held, pooled, block = result["held_out"][name], oof["pooled"][name], oof["in_block"][name]
        bal, sens = pooled["vs_whole"]["delta_balanced_accuracy"], pooled["vs_whole"]["delta_melanoma_sensitivity"]
        per_fold = [f[name]["vs_whole"]["delta_balanced_accuracy"]["value"] for f in result["folds"].values()]
        rows.append(
            [
                name,
                f"{held['auc']:.3f}",
                signed_interval(held["vs_whole"]["value"], held["vs_whole"]["ci95"]),
                f"{pooled['balanced_accuracy']:.3f}",
                signed_interval(bal["value"], bal["ci95"]),
                ", ".join(f"{d:+.3f}" for d in per_fold),
                signed_interval(sens["value"], sens["ci95"]),
                f"{block['auc']:.3f}",
                signed_interval(block["vs_whole"]["value"], block["vs_whole"]["ci95"]),
            ]
        )
    return markdown_table(header, rows, "l" + "r" * (len(header) - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=float, nargs="+", default=[0.8, 0.6], help="shares of each side kept")
    args = parser.parse_args()
    if not all(0.2 <= crop < 1 for crop in args.crops):
        parser.error("--crops: each a share of the side between 0.2 and 1 (1 is the whole image, always scored)")
    result = measure(args.crops)
    name = cpu_kind_record_name("crop_at_prediction")
    record(name, {"held_out_source": HELD_OUT, "lookalike": LOOKALIKE, "crops": args.crops, **result})
    held = result["held_out"][WHOLE]
    write_table(
        name,
        [
            "# The recipe's models shown only the centre of each image when they predict",
            "",
            f"Command: `python -m benchmarks.crop_at_prediction --crops {' '.join(map(str, args.crops))}`. The recipe's "
            f"models, trained on whole images, predict each view; every view is paired with the whole image on the "
            f"same images. Held out: the run trained without {HELD_OUT}, scored inside it ({held['melanomas']} "
            f"melanomas, {held['nevi']} nevi). CV: the recipe's folds of the 5-fold CV with sources, their "
            "validation splits pooled; inside the block the block is trained on. Nothing is trained.",
            "",
            *table(result),
        ],
    )


if __name__ == "__main__":
    main()
