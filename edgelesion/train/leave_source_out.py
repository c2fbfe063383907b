"""Leave-source-out cross-validation: train without one source, then score that source as a new clinic would.

One fold per source that holds both the positive class and a look-alike (others are named and skipped). A fold
is an ordinary run folder (`source-NAME/`) whose config holds the source out: it trains on the other sources, picks
its best epoch and its alert threshold on a validation split of those sources (never on the held-out one), drops
training images that share a duplicate, lesion or patient group with the held-out source, and scores the held-out
source after training. Folds are resumable and merged from whichever are finished, like k-fold folders.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgelesion.data.audit import audit_dataset
from edgelesion.data.dataset import load_dataset
from edgelesion.data.metadata import MetadataSpec
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import ensure_outside, read_csv, read_json, sha256_file, write_json, write_text
from edgelesion.metrics import format_estimate
from edgelesion.provenance import provenance
from edgelesion.source_figures import MIN_PER_SOURCE, mixed_sources, too_few_reason
from edgelesion.train.config import DEFAULT_DISTRIBUTE, DistributeConfig, TrainConfig
from edgelesion.train.cross_validation import (
    LEAVE_SOURCE_OUT,
    CvDir,
    changed_since_merge,
    check_fold_of_run,
    cv_kind,
    merged_cv_of_run,
    open_cv_dir,
    recipe_of,
    run_folds,
    train_or_resume_fold,
)
from edgelesion.train.distribution import distribution_for
from edgelesion.train.precision import check_precision
from edgelesion.train.runs import RunDir, read_run


def fold_name(source: str) -> str:
    """The folder name of the fold that holds `source` out."""
    return f"source-{re.sub(r'[^A-Za-z0-9_.-]+', '_', source)}"


def fold_dir(cv: CvDir, source: str) -> RunDir:
    """The run folder of the fold that holds `source` out."""
    return RunDir(cv.root / fold_name(source))


def _held_out_metrics(run: RunDir) -> Path:
    return run.evaluation / "held_out_source" / "metrics.json"


def source_folds(
    data_dir: Path, metadata: MetadataSpec, config: TrainConfig, progress: bool = True
) -> tuple[list[str], dict[str, str]]:
    """The sources to hold out (each holds >= MIN_PER_SOURCE of the positive class and of a look-alike among the
    images the audit keeps), and the other sources with why each is skipped."""
    if metadata.source_column is None:
        raise EdgelesionError("--leave-source-out needs each image's source: name it with --source-column")
    dataset = load_dataset(data_dir, config.preprocessing, progress=progress, metadata=metadata)
    report = audit_dataset(dataset, policy=config.conflict_policy, near_max_distance=config.near_duplicate_max_distance)
    records, classes = [dataset.records[i] for i in report.kept], dataset.classes
    if config.positive_class not in classes:
        raise EdgelesionError(
            f"--leave-source-out scores {config.positive_class!r} against its look-alikes, but the "
            f"data has no such class (classes: {', '.join(classes)})"
        )
    labels = np.array([classes.index(r.label) for r in records])
    sources = np.array([str(r.source) for r in records], dtype=object)
    indices = {name: classes.index(name) for name in [config.positive_class, *config.lookalikes] if name in classes}
    chosen = mixed_sources(labels, sources, indices[config.positive_class], list(indices.values())[1:])
    skipped = {
        source: too_few_reason(labels[sources == source], indices)
        for source in sorted(set(sources.tolist()) - set(chosen))
    }
    folders: dict[str, str] = {}
    for source in chosen:
        if (folder := fold_name(source)) in folders:
            raise EdgelesionError(
                f"the sources {folders[folder]!r} and {source!r} would share the fold folder "
                f"{folder}: rename one of them in the metadata CSV"
            )
        folders[folder] = source
    if not chosen:
        raise EdgelesionError(
            f"no source holds at least {MIN_PER_SOURCE} images of {config.positive_class} and of a "
            f"look-alike ({', '.join(config.lookalikes)}): there is no source to hold out and score"
        )
    return chosen, skipped


def cross_validate_sources(
    data_dir: str | Path,
    out: str | Path,
    config: TrainConfig,
    metadata: MetadataSpec,
    *,
    sources: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
    distribute: DistributeConfig = DEFAULT_DISTRIBUTE,
) -> dict[str, Any] | None:
    """Train (or resume, or keep) one fold per source to hold out into `out/source-NAME`, then merge (None on a
    multi-worker strategy's workers other than the chief).

    `sources` picks some of them (default: every source that holds both the positive class and a look-alike).
    """
    data_dir, cv = Path(data_dir), CvDir(Path(out))
    ensure_outside(cv.root, data_dir)
    check_precision(config.precision)  # before the slow work
    eligible, skipped = source_folds(data_dir, metadata, config, progress)
    for source, reason in skipped.items():
        print(f"source {source!r} is not held out: {reason}")
    if bad := sorted(set(sources or []) - set(eligible)):
        raise EdgelesionError(
            f"cannot hold out {', '.join(map(repr, bad))}: the sources that can be are {', '.join(map(repr, eligible))}"
        )
    distribution = distribution_for(distribute)
    if distribution.is_chief:
        open_cv_dir(cv, data_dir, config, force, metadata, kind=LEAVE_SOURCE_OUT)
        write_json(cv.root / "sources.json", {"held_out": eligible, "skipped": skipped})
    claims = {}
    for source in sources or eligible:
        run, fold_config = fold_dir(cv, source), config.with_changes(fold=0, held_out_source=source)
        announce = f"holding out source {source!r}"
        work = partial(train_or_resume_fold, cv, run, data_dir, fold_config, metadata, progress, announce, distribute)
        claims[f"source {source!r}"] = (cv.claim(run.root.name), _held_out_metrics(run).is_file, work)
    if not run_folds(claims, distribution):
        return None
    return merge_sources(cv.root)


def _pair(within: dict[str, Any] | None, lookalike: str) -> dict[str, Any]:
    """The pooled figures against `lookalike` in a metrics.json's within_source block."""
    return ((within or {}).get("pooled") or {}).get("lookalikes", {}).get(lookalike, {})


def _merged_files(run: RunDir) -> list[Path]:
    """The held-out and validation metrics a merged row is read from."""
    return [_held_out_metrics(run), run.evaluation / "validation" / "metrics.json"]


def _fold_row(run: RunDir, config: TrainConfig) -> dict[str, Any]:
    """A finished fold's held-out figures beside its own validation split's."""
    held = read_json(_held_out_metrics(run))
    validation = read_json(run.evaluation / "validation" / "metrics.json")
    removed = sum(row["status"].startswith("removed") for row in read_csv(run.data_index))
    row: dict[str, Any] = {
        "held_out_images": held["n_images"],
        "training_images_removed_for_groups": removed,
        "alert_threshold": (held.get("melanoma_alert") or {}).get("threshold"),
        "alert_threshold_rule": (held.get("melanoma_alert") or {}).get("rule_text"),
        "held_out": {},
        "validation": {},
    }
    for name, metrics in (("held_out", held), ("validation", validation)):
        within, alert = metrics.get("within_source"), metrics.get("melanoma_alert") or {}
        pairs = {lookalike: _pair(within, lookalike) for lookalike in config.lookalikes}
        row[name] = {
            "balanced_accuracy": metrics["balanced_accuracy"],
            "argmax_sensitivity": metrics.get(f"{config.positive_class}_sensitivity"),
            "alert_sensitivity": alert.get("sensitivity"),
            "lookalikes": {
                lookalike: {"auc": pair.get("auc"), "alert_specificity": pair.get("alert_specificity")}
                for lookalike, pair in pairs.items()
            },
        }
    return row


def merge_sources(out: str | Path) -> dict[str, Any]:
    """The table of every finished leave-source-out fold: the held-out source's figures beside the same run's
    pooled validation figures (cv_summary.json and cv_summary.md)."""
    cv = CvDir(Path(out))
    if cv_kind(cv.root) != LEAVE_SOURCE_OUT:
        raise EdgelesionError(
            f"{cv.root} holds k-fold folds, not leave-source-out ones: merge it without --leave-source-out"
        )
    config = TrainConfig.from_dict(read_json(cv.spec)["config"])
    plan = read_json(cv.root / "sources.json")
    finished = [s for s in plan["held_out"] if _held_out_metrics(fold_dir(cv, s)).is_file()]
    for source in finished:
        if read_run(fold_dir(cv, source).root, need_model=False).config.held_out_source != source:
            raise EdgelesionError(f"{fold_dir(cv, source).root} does not hold out {source!r}: remove it")
    if not finished:
        raise EdgelesionError(f"no fold of {cv.root} has finished yet: run 'edgelesion cv --leave-source-out' again")
    result = {
        "model": config.model,
        "positive_class": config.positive_class,
        "lookalikes": list(config.lookalikes),
        "sources": plan["held_out"],
        "finished": finished,
        "skipped_sources": plan["skipped"],
        "per_source": {s: _fold_row(fold_dir(cv, s), config) for s in finished},
        "metrics_sha256": {s: [sha256_file(path) for path in _merged_files(fold_dir(cv, s))] for s in finished},
        "provenance": provenance(),
    }
    write_json(cv.summary, result)
    table = format_sources_table(result)
    write_text(cv.table, table + "\n")
    print(table)
    return result


def recipe_leave_source_out_figures(out: str | Path, run_dir: str | Path) -> dict[str, Any]:
    """The merged leave-source-out cross-validation in `out` of the recipe the run `run_dir` was trained with, for a
    bundle's model card: each held-out source's figures beside its fold's own validation split, and which folds
    finished, changed or were removed after the merge. Another recipe's or other data's is refused."""
    cv, info, result = merged_cv_of_run(out, run_dir, LEAVE_SOURCE_OUT)
    for source in result["finished"]:
        if not _held_out_metrics(fold_dir(cv, source)).is_file():  # removed since the merge: named below
            continue
        fold_config = recipe_of(info.config).with_changes(held_out_source=source)
        check_fold_of_run(cv, fold_dir(cv, source).root, fold_config, run_dir, info)
    merged_from = result.get("metrics_sha256")
    return {
        "cv_name": cv.root.name,
        "positive_class": result["positive_class"],
        "lookalikes": result["lookalikes"],
        "sources": result["sources"],
        "finished": result["finished"],
        "changed_since_merge": [
            s
            for s in result["sources"]
            if changed_since_merge(
                _merged_files(fold_dir(cv, s)),
                s in result["finished"],
                None if merged_from is None else merged_from.get(s),
                cv.summary,
            )
        ],
        "skipped_sources": result["skipped_sources"],
        "per_source": result["per_source"],
    }


def format_sources_table(result: dict[str, Any]) -> str:
    """Markdown: one row per held-out source and look-alike, held-out figures beside the pooled validation ones."""
    positive = result["positive_class"]
    header = [
        "held-out source",
        "images",
        "look-alike",
        "AUC held out",
        "AUC validation (pooled)",
        "alert sensitivity held out",
        "alert sensitivity validation",
        "alert specificity held out",
        "alert specificity validation",
        f"{positive} sensitivity (arg-max) held out",
        f"{positive} sensitivity (arg-max) validation",
        "alert threshold",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for source, row in result["per_source"].items():
        for lookalike in result["lookalikes"]:
            held, val = row["held_out"]["lookalikes"][lookalike], row["validation"]["lookalikes"][lookalike]
            if not held["auc"]:
                continue
            cells = [
                source,
                str(row["held_out_images"]),
                lookalike,
                format_estimate(held["auc"]),
                format_estimate(val["auc"] or {}),
                format_estimate(row["held_out"]["alert_sensitivity"] or {}),
                format_estimate(row["validation"]["alert_sensitivity"] or {}),
                format_estimate(held["alert_specificity"] or {}),
                format_estimate(val["alert_specificity"] or {}),
                format_estimate(row["held_out"]["argmax_sensitivity"] or {}),
                format_estimate(row["validation"]["argmax_sensitivity"] or {}),
                "n/a" if row["alert_threshold"] is None else f"{row['alert_threshold']:.3f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{result['model']}, {len(result['finished'])} of {len(result['sources'])} sources held out. Each "
        "fold trains on the other sources, picks its best epoch and its alert threshold on a validation "
        "split of them, and has never seen the held-out source: its figures are what a new clinic can "
        "expect; the validation figures are what a pooled split would have reported."
    )
    for source, row in result["per_source"].items():
        lines.append(
            f"- {source}: {row['training_images_removed_for_groups']} training images removed for sharing "
            f"a duplicate, lesion or patient group with it; alert threshold {row['alert_threshold_rule']}"
        )
    lines += [f"- not held out: {source} ({reason})" for source, reason in result["skipped_sources"].items()]
    return "\n".join(lines)
