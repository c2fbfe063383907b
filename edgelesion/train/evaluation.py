"""Score a trained run on its validation split or on a test folder, leakage removed and reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgelesion._tf import keras
from edgelesion.data.audit import prepare_test_set
from edgelesion.train.config import TrainConfig
from edgelesion.data.dataset import LoadedDataset, load_dataset
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import read_csv, write_json
from edgelesion.metrics import classification_metrics, format_metrics
from edgelesion.plots import confusion_matrix_chart
from edgelesion.provenance import provenance
from edgelesion.train.runs import RunDir, RunInfo, read_run


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for a batch of HxWx3 uint8 images."""
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)


def evaluate_and_write(probabilities: np.ndarray, labels: np.ndarray, classes: list[str], out_dir: Path, *,
                       title: str, config: TrainConfig, scored_classes: list[str] | None = None,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute the metrics, print them, and write metrics.json and confusion_matrix.png into `out_dir`."""
    metrics = classification_metrics(labels, probabilities, classes, min_support=config.min_support,
                                     scored_classes=scored_classes, positive_class=config.positive_class,
                                     seed=config.seed)
    print(format_metrics(metrics, title))
    write_json(out_dir / "metrics.json", {"title": title, **metrics, **(extra or {}), "provenance": provenance()})
    confusion_matrix_chart(metrics["confusion_matrix"], classes, out_dir / "confusion_matrix.png", title)
    return metrics


def recorded_splits(run: RunDir, info: RunInfo, *splits: str) -> list[LoadedDataset]:
    """A run's recorded splits ("train", "val"), read once from its data folder and checked against the recorded hashes."""
    if not info.data_dir.is_dir():
        raise EdgelesionError(
            f"the data folder of {run.root}, {info.data_dir}, is gone: restore it (or score a test folder with --data DIR)"
        )
    dataset = load_dataset(info.data_dir, info.config.preprocessing, classes=info.classes)
    position = {r.relpath: i for i, r in enumerate(dataset.records)}
    subsets = []
    for split in splits:
        rows = read_csv(run.splits / f"{split}.csv")
        missing = [row["path"] for row in rows if row["path"] not in position]
        changed = [row["path"] for row in rows
                   if row["path"] in position and dataset.sha256[position[row["path"]]] != row["sha256"]]
        if missing or changed:
            raise EdgelesionError(
                f"the {split} images of {run.root} are not as recorded in {info.data_dir}: "
                f"{len(missing)} missing, {len(changed)} changed (first: {(missing + changed)[0]})"
            )
        subsets.append(dataset.subset([position[row["path"]] for row in rows]))
    return subsets


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Score a run's best model: on its validation split, or on a test folder with overlap removed.

    For a test folder, images also in the training folder (byte-identical or near-identical) are
    removed before scoring; the score with them kept is reported too, labelled as inflated.
    """
    run = RunDir(Path(run_dir))
    info = read_run(run.root)
    model = keras.models.load_model(run.best_model)
    if data_dir is None:
        (val,) = recorded_splits(run, info, "val")
        return evaluate_and_write(predict(model, val.images), val.labels, info.classes, run.evaluation / "validation",
                                  title=f"Validation split of {run.root.name} ({len(val.records)} images)",
                                  config=info.config)
    test = prepare_test_set(load_dataset(data_dir, info.config.preprocessing, classes=info.classes, min_classes=1),
                            read_csv(run.data_index), info.config.conflict_policy,
                            info.config.near_duplicate_max_distance)
    out = run.evaluation / f"test-{Path(data_dir).resolve().name}-{test.with_overlap.fingerprint()[:8]}"
    print(test.summary())
    metrics = evaluate_and_write(
        predict(model, test.clean.images), test.clean.labels, info.classes, out,
        title=f"Test folder {data_dir} ({len(test.clean.records)} images, training overlap removed)",
        config=info.config,
        extra={"overlap_removed": len(test.overlaps), "overlaps": test.overlaps,
               "excluded_in_test_folder": [vars(s) for s in test.excluded]},
    )
    if test.overlaps:
        evaluate_and_write(
            predict(model, test.with_overlap.images), test.with_overlap.labels, info.classes, out / "with_overlap_kept",
            title=f"INFLATED: test folder with its {len(test.overlaps)} training-overlap images kept "
                  f"({len(test.with_overlap.records)} images)",
            config=info.config, scored_classes=metrics["balanced_accuracy"]["classes"],
        )
    return metrics
