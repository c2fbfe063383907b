"""The layout of a run folder, and reading one back."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgelesion.data.metadata import MetadataSpec
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import read_json
from edgelesion.train.config import TrainConfig

RUN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunDir:
    """Paths inside a run folder."""

    root: Path

    config = property(lambda self: self.root / "config.json")  # TrainConfig, data folder, classes
    provenance = property(lambda self: self.root / "provenance.json")  # command, versions, git commit, machine
    audit = property(lambda self: self.root / "audit.json")
    class_counts = property(lambda self: self.root / "class_counts.png")
    data_index = property(lambda self: self.root / "data_index.csv")  # every image read: path, label, hashes
    splits = property(lambda self: self.root / "splits")  # train.csv, val.csv, excluded.csv
    augmentation = property(lambda self: self.root / "augmentation.csv")  # generated image -> its source
    checkpoints = property(lambda self: self.root / "checkpoints")
    state = property(lambda self: self.root / "checkpoints" / "state.json")  # last finished epoch, history
    best_model = property(lambda self: self.root / "best.keras")  # best epoch by validation balanced accuracy
    history = property(lambda self: self.root / "history.csv")
    steps = property(lambda self: self.root / "steps.csv")  # each step's loss (running mean over its epoch)
    curves = property(lambda self: self.root / "training_curves.png")
    distribution = property(lambda self: self.root / "distribution.json")  # strategy, replicas, batch per replica
    evaluation = property(lambda self: self.root / "evaluation")

    def is_run(self) -> bool:
        """True when the folder holds an edgelesion run."""
        return self.config.is_file()


@dataclass(frozen=True)
class RunInfo:
    """What config.json records about a run."""

    config: TrainConfig
    data_dir: Path
    classes: list[str]
    data_fingerprint: str
    metadata: MetadataSpec | None = None  # the metadata CSV the run read, if any
    metadata_fingerprint: str | None = None


def read_run(run_dir: str | Path, *, need_model: bool = True) -> RunInfo:
    """Read a run's config; raise a clear error for a missing, incomplete or incompatible run."""
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise EdgelesionError(
            f"run folder {run.root} does not exist: train one with 'edgelesion train --data DIR --out {run.root}'"
        )
    if not run.is_run():
        raise EdgelesionError(f"{run.root} is not an edgelesion run folder (no config.json)")
    data: dict[str, Any] = read_json(run.config)
    if data.get("format_version") != RUN_FORMAT_VERSION:
        raise EdgelesionError(
            f"{run.root} was written by an incompatible edgelesion (run format {data.get('format_version')}, "
            f"this version reads {RUN_FORMAT_VERSION}): retrain it with this version"
        )
    if need_model and not run.best_model.is_file():
        raise EdgelesionError(
            f"{run.root} has no trained model yet (best.keras is missing): finish it with "
            f"'edgelesion train --resume --out {run.root}'"
        )
    metadata = data.get("metadata")
    return RunInfo(
        TrainConfig.from_dict(data["config"]),
        Path(data["data_dir"]),
        data["classes"],
        data["data_fingerprint"],
        metadata and MetadataSpec.from_dict(metadata["spec"]),
        metadata and metadata["fingerprint"],
    )


def check_run_dir(root: Path, *, force: bool) -> None:
    """Refuse an existing non-empty `root` unless `force` is given and it is an edgelesion run."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if not force:
            raise EdgelesionError(
                f"{root} already exists: choose a new --out, continue it with --resume, or replace it with --force"
            )
        if not RunDir(root).is_run():
            raise EdgelesionError(
                f"{root} is not an edgelesion run folder, so --force will not delete it: choose another --out"
            )


def prepare_run_dir(root: Path, *, force: bool) -> None:
    """Make an empty run folder, replacing an old run only with `force` (see check_run_dir)."""
    check_run_dir(root, force=force)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
