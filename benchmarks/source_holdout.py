"""Candidate recipes against the recommended one where the images come from a source the model never saw.

    .venv/bin/python -m benchmarks.source_holdout colour             # trains what is missing (resumable), records
    .venv/bin/python -m benchmarks.source_holdout colour --folds 0   # also fold 0 of the 5-fold CV with sources
    .venv/bin/python -m benchmarks.source_holdout colour --seed 1    # another training seed, the same splits
    .venv/bin/python -m benchmarks.source_holdout colour --folds 1 --folds-only  # fold 1 only, no run without the block
    .venv/bin/python -m benchmarks.source_holdout --record-only      # records what is finished, trains nothing

Each candidate is the recipe (`TrainConfig.for_model`) with some changes. It is trained without ISIC block
0000100-0000999 (`edgelesion cv --leave-source-out`) and scored inside that block, the one source that holds
melanomas and nevi; with --folds it also trains those folds of the 5-fold CV with sources. Both are paired with the
recipe's own runs on the same images: held-out melanoma-vs-nevus AUC difference (stratified paired bootstrap), and
each finished fold's balanced accuracy difference, per fold and over the finished folds' validation images together
(with melanoma against nevus inside the block, out of fold). Runs go to runs/benchmarks/holdout-NAME[-seedS][-kfold]
(git-ignored); the record is benchmarks/results/source_holdout_KIND.{json,md} (KIND: the CPU kind), one row per run,
and a chart, source_holdout_KIND/held_out_and_folds.png. Each finished fold's validation predictions are archived
beside it (source_holdout_KIND/folds/NAME/fold-F/), and a run no longer on disk keeps the earlier record's figures:
a rerun on a fresh machine of the same kind adds to the record instead of dropping what earlier machines trained.
The recipe's own runs are `recipe` (`python -m benchmarks.source_holdout recipe --folds 0 1 2 3 4`), or links to the
same recipe's runs made elsewhere (runs/benchmarks/holdout-recipe-kfold -> a `python -m benchmarks.sources` cv folder).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks.common import (
    RESULTS,
    RUNS,
    cpu_kind_record_name,
    markdown_table,
    record,
    require_data,
    signed_interval,
    training_time,
    write_table,
)
from edgelesion.data.metadata import MetadataSpec
from edgelesion.fileio import read_csv, read_json, write_json, write_text
from edgelesion.metrics import (
    BOOTSTRAP_RESAMPLES,
    format_estimate,
    paired_difference,
    scored_class_indices,
)
from edgelesion.train.config import OnlineAugment, TrainConfig
from edgelesion.train.cross_validation import CvDir, cross_validate, fold_finished, recipe_of
from edgelesion.train.evaluation import read_predictions
from edgelesion.train.leave_source_out import cross_validate_sources, fold_dir
from edgelesion.train.runs import read_run

HELD_OUT = "isic-0000100-0000999"
AUC_GOAL = 0.75  # held-out melanoma-vs-nevus AUC a kept recipe should reach
LOOKALIKE = "nevus"
RECIPE = TrainConfig.for_model("efficientnet-lite0")
CANDIDATES: dict[str, TrainConfig] = {
    "recipe": RECIPE,
    # less drift from ImageNet: the whole network moves a quarter as far after the head epochs
    "backbone-lr-5e-5": RECIPE.with_changes(learning_rate=5e-5),
    # illumination and camera colour varied so the look of a source cannot stand in for the lesion
    "colour": RECIPE.with_changes(
        online_augment=OnlineAugment(
            enabled=True,
            brightness=0.2,
            contrast=0.3,
            saturation=0.4,
            hue=0.06,
            gamma=0.3,
            white_balance=0.15,
            grayscale=0.2,
        )
    ),
    # a dark dermoscope frame drawn at random on half the images, so the frame cannot stand in for the source
    "frame": RECIPE.with_changes(online_augment=OnlineAugment(enabled=True, frame=0.5)),
    # less frame and surround: only the centre of each image, in training and wherever the model is used (the
    # frozen-feature screen, benchmarks/source_probe.py, rose steadily as less of the image was kept)
    "centre-60": RECIPE.with_changes(preprocessing=replace(RECIPE.preprocessing, centre_crop=0.6)),
    "centre-45": RECIPE.with_changes(preprocessing=replace(RECIPE.preprocessing, centre_crop=0.45)),
}


RUN_NAME = re.compile(r"holdout-(?P<candidate>.+?)(?:-seed(?P<seed>\d+))?")


def run_name(candidate: str, seed: int) -> str:
    """The folder name of a candidate's runs with a training seed (the splits stay seed 0's)."""
    return f"holdout-{candidate}" + (f"-seed{seed}" if seed else "")


def seeded(config: TrainConfig, seed: int) -> TrainConfig:
    """`config` trained with `seed` on seed 0's splits."""
    return config if not seed else config.with_changes(seed=seed, split_seed=0)


def held_out_scores(cv_root: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Paths, melanoma scores and is-melanoma of the held-out block's melanomas and nevi."""
    rows = read_csv(fold_dir(CvDir(cv_root), HELD_OUT).evaluation / "held_out_source" / "predictions.csv")
    rows = [r for r in rows if r["label"] in ("melanoma", LOOKALIKE)]
    rows.sort(key=lambda r: r["path"])
    return (
        [r["path"] for r in rows],
        np.array([float(r["melanoma"]) for r in rows]),
        np.array([r["label"] == "melanoma" for r in rows]),
    )


def in_block(rows: list[dict[str, str]]) -> np.ndarray:
    """Which prediction rows are the held-out block's melanomas and nevi (the pair its AUC is about)."""
    return np.array([r["source"] == HELD_OUT and r["label"] in ("melanoma", LOOKALIKE) for r in rows])


def paired_auc_difference(
    truth: np.ndarray, baseline: np.ndarray, candidate: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES
) -> dict[str, Any]:
    """Candidate minus baseline AUC on the same images, with a class-stratified paired bootstrap 95% interval."""
    rng = np.random.default_rng(0)
    positives, negatives = np.flatnonzero(truth), np.flatnonzero(~truth)
    differences = []
    for _ in range(resamples):
        pick = np.r_[rng.choice(positives, len(positives)), rng.choice(negatives, len(negatives))]
        differences.append(roc_auc_score(truth[pick], candidate[pick]) - roc_auc_score(truth[pick], baseline[pick]))
    value = roc_auc_score(truth, candidate) - roc_auc_score(truth, baseline)
    return {"value": float(value), "ci95": [float(q) for q in np.percentile(differences, [2.5, 97.5])]}


def baseline_name(name: str) -> str:
    """The recipe's run a candidate's run is paired with: the same training seed where it has one, else seed 0's
    (a seed replicate of the recipe itself: seed 0's, the spread a change must clear)."""
    match = RUN_NAME.fullmatch(name)
    seeded_recipe = RUNS / run_name("recipe", int(match["seed"] or 0))
    if match["candidate"] == "recipe" or not seeded_recipe.exists():
        return run_name("recipe", 0)
    return seeded_recipe.name


def held_out_figures(name: str, config: TrainConfig) -> dict[str, Any] | None:
    """A finished leave-source-out run's figures on the held-out block, paired with the recipe's run."""
    cv_root, base_root = RUNS / name, RUNS / baseline_name(name)
    summary = cv_root / "cv_summary.json"
    if not summary.is_file() or HELD_OUT not in read_json(summary)["finished"]:
        return None
    row = read_json(summary)["per_source"][HELD_OUT]
    if not (base_root / "cv_summary.json").is_file():
        raise SystemExit(
            f"{cv_root} is paired with the recipe's run trained without the block, which is not on this machine: "
            f"train it first (python -m benchmarks.source_holdout recipe)"
        )
    paths, scores, truth = held_out_scores(cv_root)
    base_paths, base_scores, _ = held_out_scores(base_root)
    if paths != base_paths:
        raise SystemExit(f"{cv_root} held out other images than {base_root}")
    return {
        "held_out": row["held_out"],
        "validation": row["validation"],
        "alert_threshold": row["alert_threshold"],
        "paired_with": base_root.name,
        "auc_vs_recipe": paired_auc_difference(truth, base_scores, scores),
        "timing": training_time(fold_dir(CvDir(cv_root), HELD_OUT).root, config.head_epochs),
    }


def archive_folds(name: str, config: TrainConfig, archive: Path) -> None:
    """Copy each finished fold of runs/benchmarks/NAME-kfold into the record's folder: its validation predictions,
    balanced accuracy, config and provenance. runs/ does not outlive the machine; a fold trained later on another
    machine of the same kind is paired with these. A fold trained with other settings than `config` is refused."""
    root = CvDir(RUNS / f"{name}-kfold")
    for fold in range(5):
        run = root.fold(fold)
        if not fold_finished(run):
            continue
        trained = read_run(run.root, need_model=False).config
        if recipe_of(trained) != recipe_of(config):
            raise SystemExit(f"{run.root} was trained with other settings than {name}: move it aside")
        source, target = run.evaluation / "validation", archive / short_name(name) / f"fold-{fold}"
        metrics = read_json(source / "metrics.json")
        predictions = (source / "predictions.csv").read_text()
        if (target / "predictions.csv").is_file() and (target / "predictions.csv").read_text() != predictions:
            print(f"replacing the archived {target} with the predictions of {run.root}")
        write_text(target / "predictions.csv", predictions)
        write_json(
            target / "metrics.json",
            {
                "class_names": metrics["class_names"],
                "balanced_accuracy": metrics["balanced_accuracy"],
                "config": trained.to_dict(),
                "recorded_by": recorded_by(metrics["provenance"]),
            },
        )


def recorded_by(provenance: dict[str, Any]) -> dict[str, Any]:
    """The part of a provenance that says which commit and machine made a figure, and when."""
    return {
        "git_commit": provenance["git_commit"],
        "created": provenance["created"],
        "cpu": provenance["machine"]["cpu"],
    }


def short_name(name: str) -> str:
    """A run's name in the record: its folder name less `holdout-`."""
    return name.removeprefix("holdout-")


def archived_fold(folder: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The metrics of the fold archived in `folder` if it was trained with `config`, else None (a fold of settings
    since changed is ignored, and said so)."""
    if not (folder / "metrics.json").is_file():
        return None
    metrics = read_json(folder / "metrics.json")
    if recipe_of(TrainConfig.from_dict(metrics["config"])) != recipe_of(config):
        print(f"ignoring {folder}: trained with settings that are no longer its candidate's")
        return None
    return metrics


def kfold_figures(name: str, config: TrainConfig, archive: Path, earlier: dict[str, Any]) -> dict[str, Any] | None:
    """The folds of a candidate's 5-fold CV with sources archived in the record's folder, each paired with the
    recipe's same fold: pooled balanced accuracy per fold, and over those folds' validation images together (out of
    fold) with melanoma against nevus inside the held-out block. A fold of the earlier record's `earlier` figures that
    is not archived with its recipe fold (recorded before folds were archived) keeps those figures, marked
    `archived: false`, and stays out of the pooled ones; an archived fold whose recipe fold is not is `unpaired`."""
    per_fold, together, unpaired = {}, [], []
    for fold in range(5):
        run, base = archive / name / f"fold-{fold}", archive / "recipe" / f"fold-{fold}"
        base_metrics = archived_fold(base, RECIPE)
        if (metrics := archived_fold(run, config)) and base_metrics:
            rows, probabilities, labels, classes = read_predictions(run)
            base_rows, baseline, _, _ = read_predictions(base)
            if [r["path"] for r in rows] != [r["path"] for r in base_rows]:
                raise SystemExit(f"{run} was validated on other images than {base}")
            scored = scored_class_indices(labels, len(classes), config.min_support)
            positive = classes.index(config.positive_class)
            per_fold[str(fold)] = {
                "balanced_accuracy": metrics["balanced_accuracy"],
                "recipe_balanced_accuracy": base_metrics["balanced_accuracy"],
                "vs_recipe": paired_difference(labels, baseline, probabilities, scored, positive),
                "archived": True,
            }
            together.append((rows, probabilities, baseline, labels, scored, positive, classes))
        elif str(fold) in earlier.get("folds", {}):
            per_fold[str(fold)] = {**earlier["folds"][str(fold)], "archived": False}
        elif (run / "metrics.json").is_file() and not base_metrics:
            unpaired.append(str(fold))
    if not per_fold:
        return {"folds": {}, "unpaired": unpaired, "out_of_fold": None} if unpaired else None
    if not together:
        return {"folds": dict(sorted(per_fold.items())), "unpaired": unpaired, "out_of_fold": earlier["out_of_fold"]}
    rows = [row for part in together for row in part[0]]
    probabilities, baseline = np.concatenate([p[1] for p in together]), np.concatenate([p[2] for p in together])
    labels, (scored, positive, classes) = np.concatenate([p[3] for p in together]), together[0][4:]
    melanoma = classes.index("melanoma")
    inside = in_block(rows)
    truth = labels[inside] == melanoma
    return {
        "folds": dict(sorted(per_fold.items())),
        "unpaired": unpaired,
        "out_of_fold": {
            "folds": [fold for fold, figures in sorted(per_fold.items()) if figures["archived"]],
            "vs_recipe": paired_difference(labels, baseline, probabilities, scored, positive),
            "auc_in_block": float(roc_auc_score(truth, probabilities[inside, melanoma])),
            "recipe_auc_in_block": float(roc_auc_score(truth, baseline[inside, melanoma])),
            "auc_in_block_vs_recipe": paired_auc_difference(
                truth, baseline[inside, melanoma], probabilities[inside, melanoma]
            ),
        },
    }


def collect(record_folder: Path) -> dict[str, Any]:
    """Every run's figures: its runs on disk (their folds archived in `record_folder` first), else what the earlier
    record of this CPU kind holds, so a record on a fresh machine keeps the runs trained on earlier ones. Figures of
    a candidate whose settings changed since are dropped."""
    earlier_record = record_folder.with_suffix(".json")
    earlier = read_json(earlier_record) if earlier_record.is_file() else {"runs": {}}
    on_disk = {folder.name.removesuffix("-kfold") for folder in RUNS.glob("holdout-*")}
    archive = record_folder / "folds"
    archived = {f"holdout-{folder.name}" for folder in archive.glob("*")}
    results = {}
    for name in sorted(on_disk | archived | {f"holdout-{short}" for short in earlier["runs"]}):
        match = RUN_NAME.fullmatch(name)
        if not match or match["candidate"] not in CANDIDATES:
            continue
        short, config = short_name(name), seeded(CANDIDATES[match["candidate"]], int(match["seed"] or 0))
        if name in on_disk:
            archive_folds(name, config, archive)
        carried = earlier["runs"].get(short, {})
        if carried and TrainConfig.from_dict(carried["config"]) != config:
            print(f"dropping the earlier record's {short}: its settings are no longer the candidate's")
            carried = {}
        held_out = held_out_figures(name, config)
        if held_out is None and carried.get("held_out"):
            held_out = {"recorded_by": recorded_by(earlier["provenance"]), **carried["held_out"]}
        kfold_earlier = carried.get("kfold") or {}
        kfold_earlier = {
            **kfold_earlier,
            "folds": {
                fold: {"recorded_by": recorded_by(earlier["provenance"]), **figures}
                for fold, figures in kfold_earlier.get("folds", {}).items()
            },
        }
        figures = {
            "config": config.to_dict(),
            "held_out": held_out,
            "kfold": kfold_figures(short, config, archive, kfold_earlier),
        }
        if figures["held_out"] or figures["kfold"]:
            results[short] = figures
    return results


def carried_held_out(figures: dict[str, Any]) -> bool:
    """Whether a held-out run's figures are the earlier record's (its run no longer on disk)."""
    return "recorded_by" in figures


def carried_fold(figures: dict[str, Any]) -> bool:
    """Whether a fold's figures are the earlier record's, not an archived fold's."""
    return not figures.get("archived", True)


def marked(label: str, carried: bool) -> str:
    """`label`, starred when its figures are the earlier record's (in the tables and the chart alike)."""
    return f"{label}*" if carried else label


def held_out_table(results: dict[str, Any]) -> list[str]:
    """One row per run trained without the block."""
    header = [
        "run",
        "held-out AUC melanoma vs nevus",
        "Δ AUC vs recipe [paired 95% CI]",
        "alert sensitivity / nevus specificity, held out",
        "its threshold",
        "validation AUC (training sources)",
    ]
    rows = []
    for name, result in results.items():
        held = result.get("held_out")
        if not held:
            continue
        pair = held["held_out"]["lookalikes"].get(LOOKALIKE, {})
        validation = (held.get("validation") or {}).get("lookalikes", {}).get(LOOKALIKE, {})
        delta = held["auc_vs_recipe"]
        rows.append(
            [
                marked(name, carried_held_out(held)),
                format_estimate(pair["auc"]) if pair.get("auc") else "-",
                signed_interval(delta["value"], delta["ci95"]),
                f"{format_estimate(held['held_out']['alert_sensitivity'])} / {format_estimate(pair['alert_specificity'])}",
                f"{held['alert_threshold']:.3f}",
                format_estimate(validation["auc"]) if validation.get("auc") else "-",
            ]
        )
    return markdown_table(header, rows, "l" + "r" * (len(header) - 1))


def kfold_table(results: dict[str, Any]) -> list[str]:
    """One row per run with folds of the 5-fold CV with sources, paired with the recipe's same folds."""
    header = [
        "run",
        "folds",
        "pooled (out of fold) over folds",
        "balanced accuracy per fold (recipe's)",
        "Δ per fold",
        "Δ out of fold [paired 95% CI]",
        "AUC inside the block, out of fold (recipe's)",
        "Δ AUC [paired 95% CI]",
    ]
    rows = []
    for name, result in results.items():
        kfold = result.get("kfold")
        if not kfold or not kfold["folds"] or name == "recipe":  # the recipe's folds: the figures in parentheses
            continue
        folds, oof = kfold["folds"], kfold["out_of_fold"]
        bal, auc = oof["vs_recipe"]["delta_balanced_accuracy"], oof["auc_in_block_vs_recipe"]
        rows.append(
            [
                name,
                ", ".join(marked(fold, carried_fold(figures)) for fold, figures in folds.items()),
                ", ".join(oof.get("folds", list(folds))),
                ", ".join(
                    f"{f['balanced_accuracy']['value']:.3f} ({f['recipe_balanced_accuracy']['value']:.3f})"
                    for f in folds.values()
                ),
                ", ".join(f"{f['vs_recipe']['delta_balanced_accuracy']['value']:+.3f}" for f in folds.values()),
                signed_interval(bal["value"], bal["ci95"]),
                f"{oof['auc_in_block']:.3f} ({oof['recipe_auc_in_block']:.3f})",
                signed_interval(auc["value"], auc["ci95"]),
            ]
        )
    return markdown_table(header, rows, "l" + "r" * (len(header) - 1))


def holdout_chart(results: dict[str, Any], target: Path) -> bool:
    """Each run's held-out AUC with its 95% interval against the goal, and each finished CV fold's balanced accuracy
    beside the recipe's same fold; False (and no chart) before any run trained without the block has finished."""
    import matplotlib.pyplot as plt

    from edgelesion.plots import save_figure

    held_out = {
        name: auc
        for name, r in results.items()
        if r["held_out"] and (auc := r["held_out"]["held_out"]["lookalikes"].get(LOOKALIKE, {}).get("auc"))
    }
    kfold = {name: r["kfold"]["folds"] for name, r in results.items() if r["kfold"] and name != "recipe"}
    if not held_out:
        return False
    figure, (auc_axis, fold_axis) = plt.subplots(1, 2, figsize=(12, 0.45 * len(held_out) + 2.5))
    names = sorted(held_out, key=lambda n: held_out[n]["value"])
    values = np.array([held_out[n]["value"] for n in names])
    low, high = np.array([held_out[n]["ci95"] for n in names]).T
    auc_axis.errorbar(values, range(len(names)), xerr=[values - low, high - values], fmt="o", capsize=3)
    auc_axis.axvline(AUC_GOAL, color="green", linestyle="--", label=f"goal {AUC_GOAL}")
    auc_axis.axvline(0.5, color="grey", linestyle=":", label="chance")
    auc_axis.set_yticks(range(len(names)), [marked(n, carried_held_out(results[n]["held_out"])) for n in names])
    auc_axis.set_xlabel(f"AUC melanoma vs {LOOKALIKE}, {HELD_OUT} never trained on (95% CI)")
    auc_axis.legend(fontsize=8, loc="lower right")
    for colour, (name, folds) in enumerate(kfold.items()):
        ordered = sorted(folds, key=int)
        for fold in ordered:
            pair = [folds[fold]["recipe_balanced_accuracy"]["value"], folds[fold]["balanced_accuracy"]["value"]]
            fold_axis.plot([0, 1], pair, marker="o", color=f"C{colour}")
            label = marked(f" fold {fold}", carried_fold(folds[fold]))
            fold_axis.annotate(f"{label}: {pair[1] - pair[0]:+.3f}", (1, pair[1]), fontsize=8, va="center")
        fold_axis.plot([], [], marker="o", color=f"C{colour}", label=f"{name}: folds {', '.join(ordered)}")
    fold_axis.set_xticks([0, 1], ["recipe", "candidate"])
    fold_axis.set_ylabel("pooled validation balanced accuracy, per fold")
    low_end, high_end = fold_axis.get_ylim()  # at least 0.1 tall, so a point's difference does not fill the panel
    middle = (low_end + high_end) / 2
    fold_axis.set_ylim(min(low_end, middle - 0.05), max(high_end, middle + 0.05))
    fold_axis.set_title("5-fold CV with sources, paired by fold")
    starred = [carried_held_out(results[n]["held_out"]) for n in names]
    starred += [carried_fold(figures) for folds in kfold.values() for figures in folds.values()]
    if any(starred):
        figure.text(
            0.01, 0.01, "* the earlier record's figures, trained on an earlier machine of this kind", fontsize=8
        )
    if kfold:
        fold_axis.legend(fontsize=8)
    save_figure(figure, target)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("candidate", nargs="?", choices=CANDIDATES, help="train this candidate (resumable)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the splits stay seed 0's)")
    parser.add_argument(
        "--folds", type=int, nargs="+", choices=range(5), default=[], help="also train these folds of the 5-fold CV"
    )
    parser.add_argument("--folds-only", action="store_true", help="train only --folds, not the run without the block")
    parser.add_argument("--record-only", action="store_true", help="train nothing: record the finished runs")
    args = parser.parse_args()
    if not args.candidate and not args.record_only:
        parser.error("name a candidate, or --record-only")
    if args.record_only and (args.candidate or args.folds or args.seed or args.folds_only):
        parser.error("--record-only trains nothing: give it no candidate, --seed, --folds or --folds-only")
    if args.folds_only and not args.folds:
        parser.error("--folds-only needs --folds")
    data = require_data()
    metadata = MetadataSpec(data.parent / "sources.csv", source_column="source")
    if args.candidate and not args.record_only:
        name, config = run_name(args.candidate, args.seed), seeded(CANDIDATES[args.candidate], args.seed)
        if not args.folds_only:
            cross_validate_sources(data, RUNS / name, config, metadata, sources=[HELD_OUT])
        if args.folds:
            cross_validate(data, RUNS / f"{name}-kfold", config, folds=args.folds, metadata=metadata)
    record_name = cpu_kind_record_name("source_holdout")
    results = collect(RESULTS / record_name)
    record(record_name, {"held_out_source": HELD_OUT, "lookalike": LOOKALIKE, "runs": results})
    lines = [
        "# Candidate recipes on a source the model never saw",
        "",
        f"Command: `python -m benchmarks.source_holdout {' '.join(sys.argv[1:])}`. Each run is trained without "
        f"{HELD_OUT} and scored inside it (melanoma against nevus, alert threshold from the training sources' "
        "validation split). Deltas are paired on the same images with the recipe's run of the same training seed "
        "(seed 0's where it has none); a seed replicate of the recipe itself is paired with seed 0's. The record "
        "adds to the earlier records of this CPU kind: a run marked * was trained on an earlier machine of this kind "
        "(its commit and date in the JSON's `recorded_by`), with its recipe run of then.",
        "",
        *held_out_table(results),
        "",
        "The 5-fold CV with sources (pooled validation folds), each finished fold paired with the recipe's same fold "
        f"on the same machine kind. Each fold's validation predictions are archived in {record_name}/folds/, so folds "
        "trained on different machines of this kind are paired and pooled out of fold. A fold marked * is not "
        "archived with its recipe fold (recorded before folds were archived): its figures are the earlier record's, "
        "and the pooled figures are over the archived folds alone once there are any.",
        "",
        *kfold_table(results),
        *[
            f"\n{name}: folds {', '.join(result['kfold']['unpaired'])} finished, but the recipe's same folds are not: "
            f"train them (python -m benchmarks.source_holdout recipe --folds-only --folds ...)."
            for name, result in results.items()
            if result["kfold"] and result["kfold"].get("unpaired")
        ],
    ]
    if holdout_chart(results, RESULTS / record_name / "held_out_and_folds.png"):
        lines += ["", f"![held-out AUC and CV folds]({record_name}/held_out_and_folds.png)"]
    write_table(record_name, lines)


if __name__ == "__main__":
    main()
