"""Score a trained run on its validation split or on a test folder, leakage removed and reported."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np

from edgelesion._tf import keras, tf
from edgelesion.data.audit import prepare_test_set
from edgelesion.data.dataset import LoadedDataset, load_dataset
from edgelesion.data.image_rows import ImageRows
from edgelesion.data.metadata import MetadataSpec
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import read_csv, read_json, write_csv, write_json
from edgelesion.metrics import classification_metrics, format_metrics
from edgelesion.plots import confusion_matrix_chart, reliability_chart
from edgelesion.provenance import provenance
from edgelesion.source_figures import format_within_source, lookalike_indices, within_source_figures
from edgelesion.thresholds import alert_figures, alert_threshold
from edgelesion.train.config import TrainConfig
from edgelesion.train.runs import RunDir, RunInfo, read_run

_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its traced inference call


def _inference(model: keras.Model) -> Any:
    """`model` called in inference mode as a tf.function, traced once per model (tracing Lite0 takes seconds, and
    validation predicts with the same model every epoch); it holds the model weakly, so the model can go."""
    if model not in _INFERENCE:
        held = weakref.ref(model)
        _INFERENCE[model] = tf.function(lambda batch: held()(batch, training=False), reduce_retracing=True)
    return _INFERENCE[model]


def predict(model: keras.Model, images: np.ndarray | ImageRows, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for HxWx3 uint8 images (an array or cache rows, read a batch at a time).

    The model is called directly, not through Keras' predict(), which under a multi-worker strategy gives each
    worker a shard of the images: called directly, every worker predicts them all, in step with the others (reading
    BatchNorm's statistics averages them over the replicas, a collective).
    """
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    call = _inference(model)
    return np.concatenate(
        [
            call(tf.constant(np.asarray(images[start : start + batch_size], np.float32))).numpy()
            for start in range(0, len(images), batch_size)
        ]
    )


def evaluate_and_write(
    probabilities: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    out_dir: Path,
    *,
    title: str,
    config: TrainConfig,
    paths: list[str],
    scored_classes: list[str] | None = None,
    threshold_choice: dict[str, Any] | None = None,
    sources: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compute the metrics, print them, and write metrics.json, predictions.csv, confusion_matrix.png and
    reliability.png (calibration) into `out_dir`.

    With `threshold_choice` (an alert_threshold() result), the melanoma alert's sensitivity and specificity at that
    threshold are reported too (`melanoma_alert`): the figures an app acting on the alert gets. With `sources`
    (one per image), the positive class is also scored against each look-alike within every source
    (`within_source`), beside the pooled figures.
    """
    metrics = classification_metrics(
        labels,
        probabilities,
        classes,
        min_support=config.min_support,
        scored_classes=scored_classes,
        positive_class=config.positive_class,
        seed=config.seed,
    )
    positive = classes.index(config.positive_class) if config.positive_class in classes else None
    threshold = (threshold_choice or {}).get("threshold")
    alert = alert_figures(probabilities, labels, positive, threshold)
    if alert is not None:
        metrics["melanoma_alert"] = {
            **alert,
            "rule": threshold_choice.get("rule"),
            "rule_text": threshold_choice.get("rule_text"),
        }
    if sources is not None:
        metrics["within_source"] = within_source_figures(
            probabilities, labels, classes, sources, config.positive_class, config.lookalikes, threshold
        )
    print(format_metrics(metrics, title))
    if metrics.get("within_source"):
        print(format_within_source(metrics["within_source"]))
    write_json(out_dir / "metrics.json", {"title": title, **metrics, **(extra or {}), "provenance": provenance()})
    write_csv(
        out_dir / "predictions.csv",
        ["path", "label", *classes, *(["source"] if sources else [])],
        [
            [path, classes[label], *(f"{p:.6g}" for p in row), *([source] if sources else [])]
            for path, label, row, source in zip(paths, labels, probabilities, sources or [None] * len(paths))
        ],
    )
    confusion_matrix_chart(metrics["confusion_matrix"], classes, out_dir / "confusion_matrix.png", title)
    reliability_chart(
        metrics["calibration"]["bins"],
        metrics["calibration"]["expected_calibration_error"],
        out_dir / "reliability.png",
        title,
    )
    return metrics


def read_validation_predictions(run: RunDir) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray, list[str]]:
    """A finished run's validation predictions.csv (see evaluate_and_write): rows, probabilities, label indices and
    class names."""
    return read_predictions(run.evaluation / "validation")


def read_predictions(folder: Path) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray, list[str]]:
    """The predictions.csv and metrics.json class names evaluate_and_write wrote into `folder`: rows, probabilities,
    label indices and class names."""
    classes = read_json(folder / "metrics.json")["class_names"]
    rows = read_csv(folder / "predictions.csv")
    probabilities = np.array([[float(row[c]) for c in classes] for row in rows], dtype=np.float64)
    labels = np.array([classes.index(row["label"]) for row in rows], dtype=np.int64)
    return rows, probabilities, labels, classes


def validation_threshold(probabilities: np.ndarray, val: LoadedDataset, config: TrainConfig) -> dict[str, Any]:
    """The alert threshold chosen on the validation split, within the sources holding both classes where known."""
    positive = val.classes.index(config.positive_class) if config.positive_class in val.classes else None
    return alert_threshold(
        probabilities,
        val.labels,
        positive,
        sources=val.sources,
        lookalikes=list(lookalike_indices(val.classes, config.lookalikes).values()),
    )


def evaluate_validation(
    model: keras.Model, val: LoadedDataset, out_dir: Path, *, title: str, config: TrainConfig
) -> dict[str, Any]:
    """Score the validation split and choose the melanoma alert threshold on it (recorded in its metrics.json)."""
    probabilities = predict(model, val.images)
    return evaluate_and_write(
        probabilities,
        val.labels,
        val.classes,
        out_dir,
        title=title,
        config=config,
        paths=[r.relpath for r in val.records],
        sources=val.sources,
        threshold_choice=validation_threshold(probabilities, val, config),
    )


def evaluate_held_out(
    model: keras.Model, held_out: LoadedDataset, run: RunDir, config: TrainConfig, validation: dict[str, Any]
) -> dict[str, Any]:
    """Score a left-out source with the threshold its training sources' validation split chose."""
    alert = validation.get("melanoma_alert")
    return evaluate_and_write(
        predict(model, held_out.images),
        held_out.labels,
        held_out.classes,
        run.evaluation / "held_out_source",
        title=f"Held-out source {config.held_out_source!r} ({len(held_out.records)} images, never trained on)",
        config=config,
        paths=[r.relpath for r in held_out.records],
        sources=held_out.sources,
        threshold_choice=alert
        and {
            "threshold": alert["threshold"],
            "rule": alert.get("rule"),
            "rule_text": f"the training sources' validation split: {alert.get('rule_text')}",
        },
    )


def shift_gap(external: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
    """The external set's balanced accuracy beside the validation split's, and the gap between them."""
    ext, val = external["balanced_accuracy"], validation["balanced_accuracy"]
    gap = None if ext["value"] is None or val["value"] is None else ext["value"] - val["value"]
    return {
        "validation_balanced_accuracy": val["value"],
        "external_balanced_accuracy": ext["value"],
        "gap": gap,
        "same_class_set": ext["classes"] == val["classes"],
        "validation_classes": val["classes"],
        "external_classes": ext["classes"],
    }


def recorded_splits(run: RunDir, info: RunInfo, *splits: str) -> list[LoadedDataset]:
    """A run's recorded splits ("train", "val"), read once from its data folder and checked against the recorded hashes."""
    if not info.data_dir.is_dir():
        raise EdgelesionError(
            f"the data folder of {run.root}, {info.data_dir}, is gone: restore it (or score a test folder with --data DIR)"
        )
    dataset = load_dataset(info.data_dir, info.config.preprocessing, classes=info.classes, metadata=info.metadata)
    if dataset.metadata is not None and dataset.metadata.fingerprint != info.metadata_fingerprint:
        raise EdgelesionError(
            f"the metadata CSV {info.metadata.csv} changed since {run.root} was trained: its "
            "sources, groups or labels are no longer the run's; restore it, or train a new run"
        )
    position = {r.relpath: i for i, r in enumerate(dataset.records)}
    subsets = []
    for split in splits:
        rows = read_csv(run.splits / f"{split}.csv")
        missing = [row["path"] for row in rows if row["path"] not in position]
        changed = [
            row["path"]
            for row in rows
            if row["path"] in position and dataset.sha256[position[row["path"]]] != row["sha256"]
        ]
        if missing or changed:
            raise EdgelesionError(
                f"the {split} images of {run.root} are not as recorded in {info.data_dir}: "
                f"{len(missing)} missing, {len(changed)} changed (first: {(missing + changed)[0]})"
            )
        subsets.append(dataset.subset([position[row["path"]] for row in rows]))
    return subsets


def evaluate_run(
    run_dir: str | Path, data_dir: str | Path | None = None, *, metadata: MetadataSpec | None = None
) -> dict[str, Any]:
    """Score a run's best model: on its validation split, or on a test folder with overlap removed.

    For a test folder, images also in the training folder (byte-identical or near-identical) are
    removed before scoring; the score with them kept is reported too, labelled as inflated. `metadata`
    describes the test folder (sources, labels); the validation split uses the run's own.
    """
    run = RunDir(Path(run_dir))
    info = read_run(run.root)
    model = keras.models.load_model(run.best_model)
    if data_dir is None:
        (val,) = recorded_splits(run, info, "val")
        return evaluate_validation(
            model,
            val,
            run.evaluation / "validation",
            config=info.config,
            title=f"Validation split of {run.root.name} ({len(val.records)} images)",
        )
    validation_file = run.evaluation / "validation" / "metrics.json"
    validation = read_json(validation_file) if validation_file.is_file() else None
    test = prepare_test_set(
        load_dataset(data_dir, info.config.preprocessing, classes=info.classes, min_classes=1, metadata=metadata),
        read_csv(run.data_index),
        info.config.conflict_policy,
        info.config.near_duplicate_max_distance,
    )
    out = run.evaluation / f"test-{Path(data_dir).resolve().name}-{test.with_overlap.fingerprint()[:8]}"
    print(test.summary())
    metrics = evaluate_and_write(
        predict(model, test.clean.images),
        test.clean.labels,
        info.classes,
        out,
        title=f"Test folder {data_dir} ({len(test.clean.records)} images, training overlap removed)",
        config=info.config,
        paths=[r.relpath for r in test.clean.records],
        sources=test.clean.sources,
        threshold_choice=(validation or {}).get("melanoma_alert"),
        extra={
            "overlap_removed": len(test.overlaps),
            "overlaps": test.overlaps,
            "excluded_in_test_folder": [vars(s) for s in test.excluded],
        },
    )
    if validation is not None:
        gap = shift_gap(metrics, validation)
        metrics["shift"] = gap
        write_json(out / "shift.json", gap)
        if gap["gap"] is not None:
            print(
                f"validation split {gap['validation_balanced_accuracy']:.3f} -> this folder "
                f"{gap['external_balanced_accuracy']:.3f} balanced accuracy: a gap of {gap['gap']:+.3f}"
                + ("" if gap["same_class_set"] else " (over different class sets)")
                + ". A folder from another source or period shows shift that no same-distribution split can."
            )
    if test.overlaps:
        evaluate_and_write(
            predict(model, test.with_overlap.images),
            test.with_overlap.labels,
            info.classes,
            out / "with_overlap_kept",
            title=f"INFLATED: test folder with its {len(test.overlaps)} training-overlap images kept "
            f"({len(test.with_overlap.records)} images)",
            config=info.config,
            paths=[r.relpath for r in test.with_overlap.records],
            scored_classes=metrics["balanced_accuracy"]["classes"],
        )
    return metrics
