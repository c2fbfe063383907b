"""Leak-free k-fold cross-validation: one resumable run folder per fold, merged from whichever folds are finished.

Folds are the audit's group-aware folds (`TrainConfig.folds`), so no duplicate group is ever on
both sides. Each fold is an ordinary run folder (`fold-K/`), so folds can run as separate jobs and
be resumed; `merge_cv` builds the table, the charts and the out-of-fold figures from those done.
The melanoma operating point scored on a fold is chosen on the *other* folds' out-of-fold
predictions, never on the fold being scored. A fold's model is its best epoch by validation balanced
accuracy, chosen on the fold it is scored on, so its figures lean optimistic; the last epoch's
balanced accuracy, which no epoch choice touched, is recorded beside them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from edgelesion.data.metadata import MetadataSpec, read_metadata
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import (
    create_exclusively,
    ensure_outside,
    read_json,
    sha256_file,
    write_csv,
    write_json,
    write_text,
)
from edgelesion.metrics import format_mean_sd
from edgelesion.plots import cv_folds_chart, melanoma_roc_chart
from edgelesion.provenance import provenance
from edgelesion.source_figures import format_within_source, lookalike_indices, within_source_figures
from edgelesion.thresholds import TARGET_SENSITIVITY, alert_figures, alert_threshold
from edgelesion.train.config import DEFAULT_DISTRIBUTE, DistributeConfig, TrainConfig
from edgelesion.train.distribution import Distribution, distribution_for
from edgelesion.train.evaluation import read_validation_predictions
from edgelesion.train.fold_claims import Claims, run_claimed, run_claimed_in_step
from edgelesion.train.precision import check_precision
from edgelesion.train.runs import RunDir, RunInfo, read_run
from edgelesion.train.training import resume, train

CV_FORMAT_VERSION = 1
K_FOLD, LEAVE_SOURCE_OUT = "k-fold", "leave-source-out"  # the kinds of folds a cv folder holds
FIGURES = (
    "balanced_accuracy",
    "last_epoch_balanced_accuracy",
    "alert_sensitivity",
    "alert_specificity",
    "melanoma_sensitivity",
    "melanoma_specificity",
    "accuracy",
)  # what the table shows, in this order


@dataclass(frozen=True)
class CvDir:
    """Paths inside a cross-validation folder."""

    root: Path

    spec = property(lambda self: self.root / "cv.json")  # the shared config, data folder
    summary = property(lambda self: self.root / "cv_summary.json")
    table = property(lambda self: self.root / "cv_summary.md")
    chart = property(lambda self: self.root / "cv_folds.png")
    roc = property(lambda self: self.root / "melanoma_roc.png")
    oof_predictions = property(lambda self: self.root / "oof_predictions.csv")

    def fold(self, k: int) -> RunDir:
        """The run folder of fold `k`."""
        return RunDir(self.root / f"fold-{k}")

    def claim(self, fold_name: str) -> Path:
        """The file a job holds while it trains the fold in folder `fold_name` (see fold_claims)."""
        return self.root / f"{fold_name}.claim"


def _predictions(run: RunDir) -> Path:
    return run.evaluation / "validation" / "predictions.csv"


def fold_finished(run: RunDir) -> bool:
    """A fold whose best model has been scored on its validation split."""
    return _predictions(run).is_file()


def _is_recipe_of(cv: CvDir, config: TrainConfig) -> bool:
    """Whether `cv` cross-validates `config`'s recipe: its settings but for which fold or source it validates on."""
    return TrainConfig.from_dict(read_json(cv.spec)["config"]) == recipe_of(config)


def recipe_of(config: TrainConfig) -> TrainConfig:
    """`config` as its cross-validation folder records it: fold 0, no source held out."""
    return config.with_changes(fold=0, held_out_source=None)


def _metadata_record(metadata: MetadataSpec | None) -> dict[str, Any] | None:
    """What cv.json records of the metadata CSV: its spec and fingerprint (folds made with other metadata never
    merge)."""
    if metadata is None:
        return None
    return {"spec": metadata.to_dict(), "fingerprint": read_metadata(metadata).fingerprint}


def cv_kind(out: str | Path) -> str:
    """Which folds a cross-validation folder holds: K_FOLD or LEAVE_SOURCE_OUT."""
    spec = CvDir(Path(out)).spec
    if not spec.is_file():
        raise EdgelesionError(f"{Path(out)} is not a cross-validation folder (no cv.json): run 'edgelesion cv' first")
    return read_json(spec).get("kind", K_FOLD)


def open_cv_dir(
    cv: CvDir,
    data_dir: Path,
    config: TrainConfig,
    force: bool,
    metadata: MetadataSpec | None = None,
    kind: str = K_FOLD,
) -> None:
    """Create `cv` for `config`, `metadata` and `kind` of folds, or reuse it when it holds the same
    cross-validation; refuse anything else."""
    if config.held_out_source is not None:
        raise EdgelesionError(
            f"the config holds out source {config.held_out_source!r}: a cross-validation chooses its folds and the "
            "sources it holds out itself; leave held_out_source unset"
        )
    spec = {
        "format_version": CV_FORMAT_VERSION,
        "kind": kind,
        "config": recipe_of(config).to_dict(),
        "data_dir": str(data_dir.resolve()),
        "metadata": _metadata_record(metadata),
    }
    if cv.spec.is_file():
        recorded = read_json(cv.spec)
        fingerprints = [(record or {}).get("fingerprint") for record in (recorded.get("metadata"), spec["metadata"])]
        same_metadata = fingerprints[0] == fingerprints[1]
        same_kind = recorded.get("kind", K_FOLD) == kind
        same_recipe = _is_recipe_of(cv, config)
        if same_recipe and same_metadata and same_kind:
            return
        if not force and same_recipe:
            what = "another metadata CSV (or other columns of it)" if not same_metadata else "another kind of folds"
            raise EdgelesionError(
                f"{cv.root} holds a cross-validation made with {what}: choose another --out, or replace it with --force"
            )
        if not force:
            recorded, requested = TrainConfig.from_dict(read_json(cv.spec)["config"]).to_dict(), spec["config"]
            differing = sorted(k for k in {*recorded, *requested} if recorded.get(k) != requested.get(k))
            raise EdgelesionError(
                f"{cv.root} holds a cross-validation with other settings ({', '.join(differing)} "
                "differ): choose another --out, or replace it with --force"
            )
        shutil.rmtree(cv.root)
    elif cv.root.exists() and any(not p.name.startswith(".") for p in cv.root.iterdir()) and not cv.spec.is_file():
        raise EdgelesionError(
            f"{cv.root} exists and is not a cross-validation folder (no cv.json): choose another --out"
        )
    cv.root.mkdir(parents=True, exist_ok=True)
    if not create_exclusively(cv.spec, json.dumps(spec, indent=2) + "\n"):  # another job opened it first
        return open_cv_dir(cv, data_dir, config, force=False, metadata=metadata, kind=kind)
    write_json(cv.root / "provenance.json", provenance())


def cross_validate(
    data_dir: str | Path,
    out: str | Path,
    config: TrainConfig,
    *,
    folds: list[int] | None = None,
    metadata: MetadataSpec | None = None,
    force: bool = False,
    target_sensitivity: float = TARGET_SENSITIVITY,
    progress: bool = True,
    distribute: DistributeConfig = DEFAULT_DISTRIBUTE,
) -> dict[str, Any] | None:
    """Train (or resume, or keep) each fold of `config` on `data_dir` into `out/fold-K`, then merge (None on a
    multi-worker strategy's workers other than the chief, which train one fold in step with it and write nothing).

    `folds` picks some folds (default: all `config.folds`); the others can run later or elsewhere. A fold another
    job is training (it holds the fold's claim) is left to it and waited for, so jobs sharing `out` each train
    different folds and each merges them all; a fold whose job stopped is taken over.
    `metadata` (a CSV of sources and groups) keeps groups on one side and adds within-source figures.
    """
    data_dir, cv = Path(data_dir), CvDir(Path(out))
    ensure_outside(cv.root, data_dir)
    chosen = list(range(config.folds)) if folds is None else folds
    if bad := [k for k in chosen if not 0 <= k < config.folds]:
        raise EdgelesionError(f"folds {bad} do not exist: there are {config.folds} folds, 0 to {config.folds - 1}")
    check_precision(config.precision)  # before the folder is made
    distribution = distribution_for(distribute)
    if distribution.is_chief:
        open_cv_dir(cv, data_dir, config, force, metadata)
    claims = {}
    for k in chosen:
        run, fold_config = cv.fold(k), config.with_changes(fold=k)
        work = partial(
            train_or_resume_fold,
            cv,
            run,
            data_dir,
            fold_config,
            metadata,
            progress,
            f"fold {k} of {config.folds}",
            distribute,
        )
        claims[f"fold {k}"] = (cv.claim(run.root.name), partial(fold_finished, run), work)
    if not run_folds(claims, distribution):
        return None
    return merge_cv(cv.root, target_sensitivity=target_sensitivity)


def run_folds(claims: Claims, distribution: Distribution) -> bool:
    """Train the claimed folds: each claimed by this job, or under a multi-worker strategy one fold by all its
    workers together. Whether this process goes on to merge them (not a worker other than the chief)."""
    if distribution.workers == 1:
        run_claimed(claims)
    else:
        run_claimed_in_step(claims, chief=distribution.is_chief)
    return distribution.is_chief


def train_or_resume_fold(
    cv: CvDir,
    run: RunDir,
    data_dir: Path,
    config: TrainConfig,
    metadata: MetadataSpec | None,
    progress: bool,
    announce: str,
    distribute: DistributeConfig,
) -> None:
    """Resume fold `run` of `cv` from its last checkpoint, else train it from the start (saying `announce`); a fold
    folder trained with other settings is refused."""
    if run.is_run() and read_run(run.root, need_model=False).config != config:
        raise EdgelesionError(f"{run.root} was trained with other settings than {cv.spec}: remove it")
    if run.state.is_file():
        resume(run.root, data_dir=data_dir, progress=progress, distribute=distribute)
    else:
        print(announce)
        train(
            data_dir, run.root, config, metadata=metadata, force=run.is_run(), progress=progress, distribute=distribute
        )


def _epochs(run: RunDir) -> dict[str, Any]:
    """Which epoch a fold kept, of how many, and its last epoch's balanced accuracy (None where a fold copied
    without its checkpoints folder no longer says)."""
    if not run.state.is_file():
        return {"best_epoch": None, "epochs": None, "last_epoch_balanced_accuracy": None}
    state = read_json(run.state)
    return {
        "best_epoch": state["best_epoch"],
        "epochs": state["epochs_done"],
        "last_epoch_balanced_accuracy": state["history"][-1]["val_balanced_accuracy"],
    }


def _value(metrics: dict[str, Any], key: str) -> float | None:
    return (metrics.get(key) or {}).get("value")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _over_folds(values: list[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {
        "mean": float(np.mean(present)) if present else None,
        "sd": float(np.std(present, ddof=1)) if len(present) > 1 else None,
        "n_folds": len(present),
    }


def merge_cv(out: str | Path, *, target_sensitivity: float = TARGET_SENSITIVITY) -> dict[str, Any]:
    """The per-fold table, mean and sd, out-of-fold melanoma operating points and ROC, from the finished folds."""
    cv = CvDir(Path(out))
    if cv_kind(cv.root) != K_FOLD:
        raise EdgelesionError(
            f"{cv.root} holds leave-source-out folds: merge it with 'edgelesion cv --merge-only --leave-source-out'"
        )
    config = TrainConfig.from_dict(read_json(cv.spec)["config"])
    finished = [k for k in range(config.folds) if fold_finished(cv.fold(k))]
    if not finished:
        raise EdgelesionError(f"no fold of {cv.root} has finished yet: run 'edgelesion cv' (or resume a fold)")
    folds = {k: read_validation_predictions(cv.fold(k)) for k in finished}
    classes = folds[finished[0]][3]
    positive = classes.index(config.positive_class) if config.positive_class in classes else None
    lookalikes = list(lookalike_indices(classes, config.lookalikes).values())
    sources = {k: [row["source"] for row in folds[k][0]] if "source" in folds[k][0][0] else None for k in finished}
    per_fold: dict[int, dict[str, Any]] = {}
    rules = set()
    for k, (_, probabilities, labels, _) in folds.items():
        metrics = read_json(cv.fold(k).evaluation / "validation" / "metrics.json")
        others = [j for j in finished if j != k]
        threshold = None
        if others:
            chosen = alert_threshold(
                np.concatenate([folds[j][1] for j in others]),
                np.concatenate([folds[j][2] for j in others]),
                positive,
                target_sensitivity,
                sources=None if sources[k] is None else [s for j in others for s in sources[j]],
                lookalikes=lookalikes,
            )
            threshold = chosen["threshold"]
            rules.add(chosen["rule_text"])
        alert = alert_figures(probabilities, labels, positive, threshold)
        value = partial(_value, metrics)
        per_fold[k] = {
            "n_images": metrics["n_images"],
            "balanced_accuracy": value("balanced_accuracy"),
            **_epochs(cv.fold(k)),
            "balanced_accuracy_classes": metrics["balanced_accuracy"]["classes"],
            "melanoma_sensitivity": value(f"{config.positive_class}_sensitivity"),
            "melanoma_specificity": value(f"{config.positive_class}_specificity"),
            "accuracy": value("accuracy"),
            "alert_threshold": threshold,
            "alert_sensitivity": alert["sensitivity"]["value"] if alert else None,
            "alert_specificity": alert["specificity"]["value"] if alert else None,
        }
    summary = {figure: _over_folds([per_fold[k][figure] for k in finished]) for figure in FIGURES}
    labels = np.concatenate([folds[k][2] for k in finished])
    probabilities = np.concatenate([folds[k][1] for k in finished])
    within = None
    if all(sources[k] is not None for k in finished):
        # each image's alert at the threshold its own fold was scored with
        thresholds = np.concatenate(
            [
                np.full(
                    len(folds[k][2]),
                    np.nan if per_fold[k]["alert_threshold"] is None else per_fold[k]["alert_threshold"],
                )
                for k in finished
            ]
        )
        within = within_source_figures(
            probabilities,
            labels,
            classes,
            [s for k in finished for s in sources[k]],
            config.positive_class,
            config.lookalikes,
            None if np.isnan(thresholds).any() else thresholds,
        )
    auc = None
    if positive is not None and 0 < (labels == positive).sum() < len(labels):
        auc = float(roc_auc_score(labels == positive, probabilities[:, positive]))
        melanoma_roc_chart(
            labels == positive,
            probabilities[:, positive],
            [
                (per_fold[k]["alert_specificity"], per_fold[k]["alert_sensitivity"], f"fold {k}")
                for k in finished
                if per_fold[k]["alert_threshold"] is not None
            ],
            cv.roc,
            f"{config.positive_class} against the rest, out-of-fold ({len(finished)} folds), AUC {auc:.3f}",
        )
    with_sources = within is not None
    write_csv(
        cv.oof_predictions,
        ["fold", "path", "label", *classes, *(["source"] if with_sources else [])],
        [
            [k, row["path"], row["label"], *(row[c] for c in classes), *([row["source"]] if with_sources else [])]
            for k in finished
            for row in folds[k][0]
        ],
    )
    result = {
        "model": config.model,
        "folds": config.folds,
        "finished_folds": finished,
        "complete": len(finished) == config.folds,
        "target_sensitivity": target_sensitivity,
        "alert_threshold_rules": sorted(rules),
        "within_source_out_of_fold": within,
        "melanoma_auc_out_of_fold": auc,
        "summary": summary,
        "per_fold": per_fold,
        # what each fold's figures were merged from: a fold scored again since shows in a model card
        "predictions_sha256": {str(k): sha256_file(_predictions(cv.fold(k))) for k in finished},
        "provenance": provenance(),
    }
    write_json(cv.summary, result)
    cv_folds_chart(
        {f: [per_fold[k][f] for k in finished] for f in FIGURES},
        cv.chart,
        f"{config.model}: {len(finished)} of {config.folds} folds",
    )
    table = format_cv_table(result)
    write_text(cv.table, table + "\n")
    print(table)
    return result


def format_cv_table(result: dict[str, Any]) -> str:
    """A markdown table: one row per fold, then mean ± sd; balanced accuracy and the melanoma alert first."""
    header = [
        "fold",
        "images",
        "best epoch",
        "balanced accuracy (best epoch)",
        "balanced accuracy (last epoch)",
        "alert sensitivity",
        "alert specificity",
        "melanoma sensitivity (arg-max)",
        "melanoma specificity (arg-max)",
        "accuracy",
        "alert threshold",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for k, row in result["per_fold"].items():
        epoch = "n/a" if row["best_epoch"] is None else f"{row['best_epoch']} of {row['epochs']}"
        lines.append(
            "| "
            + " | ".join(
                [str(k), str(row["n_images"]), epoch, *(_fmt(row[f]) for f in FIGURES), _fmt(row["alert_threshold"])]
            )
            + " |"
        )
    summary = result["summary"]
    lines.append("| mean ± sd | | | " + " | ".join(format_mean_sd(summary[f]) for f in FIGURES) + " | |")
    status = (
        "all folds"
        if result["complete"]
        else f"{len(result['finished_folds'])} of {result['folds']} folds finished: a partial result"
    )
    lines.append("")
    lines.append(
        f"{result['model']}, {status}. Alert: melanoma probability >= a threshold chosen on the other folds' "
        f"out-of-fold predictions for {result['target_sensitivity']:.0%} sensitivity"
        + (
            ""
            if result["melanoma_auc_out_of_fold"] is None
            else f"; out-of-fold melanoma AUC {result['melanoma_auc_out_of_fold']:.3f}"
        )
        + ". "
        "Each fold's model is its best epoch by balanced accuracy on the fold it is scored on, so every "
        "figure but the last epoch's balanced accuracy leans optimistic; no epoch choice touched the last "
        "epoch's."
    )
    lines += [f"Alert thresholds {rule}." for rule in result.get("alert_threshold_rules", [])]
    if result.get("within_source_out_of_fold"):
        lines += [
            "",
            "Out-of-fold, within each source:",
            "",
            "```",
            format_within_source(result["within_source_out_of_fold"]),
            "```",
        ]
    return "\n".join(lines)


def fold_of(run_dir: str | Path) -> Path | None:
    """The cross-validation folder `run_dir` is a fold of (it is `CV/fold-K` beside a cv.json), else None."""
    run = Path(run_dir).resolve()
    return run.parent if run.name.startswith("fold-") and CvDir(run.parent).spec.is_file() else None


def merged_cv_of_run(out: str | Path, run_dir: str | Path, kind: str) -> tuple[CvDir, RunInfo, dict[str, Any]]:
    """The cross-validation folder `out`, the run `run_dir` and the folder's cv_summary.json, refused unless it holds
    `kind` folds (K_FOLD or LEAVE_SOURCE_OUT), was merged, and cross-validates the run's own recipe."""
    cv, info = CvDir(Path(out)), read_run(run_dir, need_model=False)
    if (found := cv_kind(cv.root)) != kind:
        raise EdgelesionError(f"{cv.root} holds {found} folds, not {kind} ones")
    if not cv.summary.is_file():
        flag = " --leave-source-out" if kind == LEAVE_SOURCE_OUT else ""
        raise EdgelesionError(
            f"{cv.root} holds no merged cross-validation (cv_summary.json): run "
            f"'edgelesion cv --merge-only{flag} --out {cv.root}' first"
        )
    if not _is_recipe_of(cv, info.config):
        raise EdgelesionError(
            f"{cv.root} cross-validated other settings than the run {run_dir}: "
            "give the cross-validation of this run's own recipe"
        )
    return cv, info, read_json(cv.summary)


def check_fold_of_run(cv: CvDir, fold_root: Path, config: TrainConfig, run_dir: str | Path, info: RunInfo) -> None:
    """Refuse a finished fold of `cv` trained on other data or another metadata CSV than the run `run_dir` (`info`),
    or with other settings than `config` (the run's recipe as that fold trains it)."""
    fold = read_run(fold_root, need_model=False)
    if fold.metadata_fingerprint != info.metadata_fingerprint:
        raise EdgelesionError(
            f"{fold_root} read another metadata CSV (or other columns of it) than the run {run_dir}: give the "
            "cross-validation made with the run's own metadata"
        )
    if fold.data_fingerprint != info.data_fingerprint:
        raise EdgelesionError(f"{cv.root} cross-validated other data than the run {run_dir} was trained on")
    if fold.config != config:
        raise EdgelesionError(f"{fold_root} was trained with other settings than {cv.spec}: remove it")


def changed_since_merge(files: list[Path], merged: bool, recorded: list[str | None] | None, summary: Path) -> bool:
    """Whether a fold's result `files` differ from what the merge into `summary` read: a fold the merge did not hold
    (`merged` False) has changed once its files are all there, and a merged fold with a file gone (removed, or being
    trained again) has changed; else by the files' sha256 the merge `recorded`, or, for a merge from before it
    recorded them (None), by file times."""
    present = all(path.is_file() for path in files)
    if not merged:
        return present
    if not present:
        return True
    if recorded is None:
        return max(path.stat().st_mtime for path in files) > summary.stat().st_mtime
    return [sha256_file(path) for path in files] != recorded


def recipe_cv_figures(out: str | Path, run_dir: str | Path) -> dict[str, Any]:
    """The merged cross-validation in `out` of the recipe the run `run_dir` was trained with, for a bundle's model
    card: mean ± sd of each figure, the out-of-fold melanoma AUC, and which folds the merge held. A cross-validation
    of another recipe or other data is refused."""
    cv, info, result = merged_cv_of_run(out, run_dir, K_FOLD)
    if info.config.held_out_source is not None:
        raise EdgelesionError(
            f"the run {run_dir} never saw source {info.config.held_out_source!r}, which every fold of {cv.root} "
            "trained on: give its leave-source-out cross-validation instead"
        )
    for k in result["finished_folds"]:
        if fold_finished(cv.fold(k)):  # a fold removed since the merge is named below, not checked
            check_fold_of_run(cv, cv.fold(k).root, recipe_of(info.config).with_changes(fold=k), run_dir, info)
    merged_from = result.get("predictions_sha256")
    changed = [
        k
        for k in range(result["folds"])
        if changed_since_merge(
            [_predictions(cv.fold(k))],
            k in result["finished_folds"],
            None if merged_from is None else [merged_from.get(str(k))],
            cv.summary,
        )
    ]
    return {
        "cv_name": cv.root.name,
        "folds": result["folds"],
        "finished_folds": result["finished_folds"],
        "folds_changed_since_merge": changed,
        "this_run_is_a_fold": Path(run_dir).resolve() == cv.fold(info.config.fold).root.resolve(),
        "target_sensitivity": result["target_sensitivity"],
        "melanoma_auc_out_of_fold": result["melanoma_auc_out_of_fold"],
        "within_source_out_of_fold": result.get("within_source_out_of_fold"),
        "summary": {figure: result["summary"][figure] for figure in FIGURES if figure in result["summary"]},
    }
