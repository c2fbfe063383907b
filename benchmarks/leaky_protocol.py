"""How much the seed's protocol inflates its validation score, against edgelesion's, on a held-out test split.

    .venv/bin/python -m benchmarks.leaky_protocol [--epochs 20]

1. Hold out a leak-free test split first: one of 5 duplicate-group-aware folds of the audited data
   (conflicting copies excluded). Everything else, raw and unaudited, is "the rest".
2. Seed protocol: copy the rest into a temporary folder, write 500 Augmentor rotations into each class
   folder (as the seed did), then draw a random 80/20 validation split from all files; train.
3. edgelesion protocol: `edgelesion train` on a copy of the rest (audit, conflict exclusion,
   group-aware split, Augmentor on the training split only).
4. Score both on their own validation split and on the held-out test split (`edgelesion evaluate --data`).
Restartable: the folders and runs are kept and reused.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import Augmentor
import numpy as np

from benchmarks.common import (
    RUNS,
    finished_metrics,
    fmt,
    headline,
    markdown_table,
    record,
    require_data,
    train_or_resume,
)
from edgelesion.data.audit import ConflictPolicy, audit_dataset
from edgelesion.data.dataset import load_dataset
from edgelesion.data.rebalance import SEED_PRESET_EXTRA
from edgelesion.data.splits import train_val_indices
from edgelesion.fileio import read_json, write_text
from edgelesion.preprocessing import Preprocessing
from edgelesion.train.config import TrainConfig
from edgelesion.train.evaluation import evaluate_run
from edgelesion.train.runs import RunDir
from edgelesion.train.training import PreparedData, start_run, train_prepared

SEED = 2026
WORK = Path(tempfile.gettempdir()) / "edgelesion-leaky-protocol"  # temporary copies of the data, outside the repo


def copy_files(source: Path, relpaths: list[str], target: Path) -> Path:
    """Copy the listed files (keeping their class folders) into `target`, once."""
    done = target / ".complete"
    if not done.exists():
        shutil.rmtree(target, ignore_errors=True)
        for rel in relpaths:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, target / rel)
        done.touch()
    return target


def split_off_test(data: Path) -> tuple[Path, Path]:
    """Folders for the held-out test split (audited, leak-free) and the raw rest."""
    dataset = load_dataset(data, Preprocessing())
    report = audit_dataset(dataset)
    kept = report.kept
    _, test_pos = train_val_indices(dataset.labels[kept], report.group_ids[kept], n_folds=5, fold=0, seed=SEED)
    test_groups = set(report.group_ids[kept[test_pos]].tolist())
    test = [dataset.records[i].relpath for i in kept[test_pos]]
    rest = [r.relpath for i, r in enumerate(dataset.records) if report.group_ids[i] not in test_groups]
    rest += [s.relpath for s in dataset.skipped]
    return copy_files(data, test, WORK / "test"), copy_files(data, rest, WORK / "rest")


def seed_augmented_copy(rest: Path) -> Path:
    """The seed's step: Augmentor writes 500 rotated copies into every class folder (of a copy)."""
    target = WORK / "seed-augmented"
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(rest, target)
        (target / ".complete").unlink()
        Augmentor.Pipeline.set_seed(SEED)
        for class_dir in sorted(p for p in target.iterdir() if p.is_dir()):
            pipeline = Augmentor.Pipeline(str(class_dir), output_directory="output")
            pipeline.rotate(probability=0.7, max_left_rotation=10, max_right_rotation=10)
            pipeline.sample(SEED_PRESET_EXTRA, multi_threaded=False)
        (target / ".complete").touch()
    return target


def train_seed_protocol(folder: Path, out: Path, config: TrainConfig) -> dict:
    """Random 80/20 split of every file, augmented copies included (the seed's image_dataset_from_directory)."""
    done = finished_metrics(out, config.epochs)
    if done is not None:
        return done
    dataset = load_dataset(folder, config.preprocessing)
    report = audit_dataset(dataset, policy=ConflictPolicy.KEEP)  # recorded only: the seed split ignores it
    order = np.random.default_rng(SEED).permutation(len(dataset.records))
    cut = int(0.8 * len(order))
    data = PreparedData(report, dataset.subset(np.sort(order[:cut])), dataset.subset(np.sort(order[cut:])))
    run = RunDir(out)
    state = read_json(run.state) if run.state.is_file() else None
    if state is None:
        start_run(run, data, config, force=run.is_run())
    return train_prepared(run, data, config, state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    test, rest = split_off_test(require_data())
    seed_config = TrainConfig(model="seed-dropout", epochs=args.epochs, rebalance="none", conflict_policy="keep")
    ours_config = TrainConfig(model="seed-dropout", epochs=args.epochs)
    protocols = {
        "seed protocol (augment into folders, then random split)": (
            RUNS / "leaky-seed-protocol",
            lambda out: train_seed_protocol(seed_augmented_copy(rest), out, seed_config),
        ),
        "edgelesion protocol (audit, group split, augment training split only)": (
            RUNS / "leaky-edgelesion-protocol",
            lambda out: train_or_resume(rest, out, ours_config),
        ),
    }
    results, rows = {}, []
    for name, (out, run_training) in protocols.items():
        validation = run_training(out)
        held_out = evaluate_run(out, test)
        results[name] = {"run": str(out), "own_validation": headline(validation), "held_out_test": headline(held_out)}
        for split, m in (("own validation split", validation), ("held-out test split", held_out)):
            rows.append(
                [
                    name,
                    split,
                    str(m["n_images"]),
                    fmt(m["balanced_accuracy"]),
                    fmt(m.get("melanoma_sensitivity", {})),
                    fmt(m["accuracy"]),
                ]
            )
    record("leaky_protocol", {"epochs": args.epochs, "seed": SEED, "protocols": results})
    table = markdown_table(
        [
            "protocol",
            "scored on",
            "images",
            "balanced accuracy [95% CI]",
            "melanoma sensitivity [95% CI]",
            "accuracy [95% CI]",
        ],
        rows,
        "llrlll",
    )
    write_text(Path(__file__).parent / "results" / "leaky_protocol.md", "\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
