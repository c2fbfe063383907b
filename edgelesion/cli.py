"""The `edgelesion` command: a thin layer that maps arguments onto library calls.

Conventions for every subcommand: `--data DIR` names a folder of class subfolders (only ever
read); `--out DIR` names the folder the command creates (never overwritten without --force);
a positional RUN names a run folder the command reads. Exit codes: 0 success, 1 a check
failed, 2 bad input or usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgelesion import __version__
from edgelesion.errors import CheckFailed, EdgelesionError

if TYPE_CHECKING:  # the training stack is imported only by the command that needs it
    from edgelesion.data.metadata import MetadataSpec
    from edgelesion.train.config import DistributeConfig, TrainConfig


def _add_metadata_options(p: argparse.ArgumentParser, what: str = "the --data folder") -> None:
    """--metadata CSV and the options naming its columns (docs/sources.md)."""
    p.add_argument(
        "--metadata",
        type=Path,
        metavar="CSV",
        help=f"a CSV with one row per image of {what}: its source, lesion/patient groups and optionally "
        "its label (docs/sources.md)",
    )
    p.add_argument(
        "--key-column",
        help="the CSV column holding each image's path relative to the data folder, or "
        "its id (file name without suffix) (default: path, image, image_name or "
        "isic_id)",
    )
    p.add_argument(
        "--source-column",
        help="the CSV column naming where each image was taken (clinic, device, "
        "archive): within-source figures, and --leave-source-out in cv",
    )
    p.add_argument(
        "--group-columns",
        help="comma-separated CSV columns (e.g. lesion_id,patient_id): images sharing "
        "a value stay on one side of every split",
    )
    p.add_argument("--label-column", help="the CSV column holding each image's class (the folder may then be flat)")
    p.add_argument(
        "--label-columns",
        help="comma-separated one-hot CSV columns, one per class, each COLUMN or "
        "COLUMN=class name (the ISIC 2019 ground truth: MEL=melanoma,NV=nevus,...)",
    )


def _metadata_spec(args: argparse.Namespace) -> MetadataSpec | None:
    """The MetadataSpec the options describe; None without --metadata."""
    from edgelesion.data.metadata import MetadataSpec

    named = [
        f"--{name.replace('_', '-')}"
        for name in ("key_column", "source_column", "group_columns", "label_column", "label_columns")
        if getattr(args, name)
    ]
    if args.metadata is None:
        if named:
            raise EdgelesionError(f"{', '.join(named)} name columns of a metadata CSV: pass it with --metadata CSV")
        return None

    return MetadataSpec(
        args.metadata,
        key_column=args.key_column,
        source_column=args.source_column,
        group_columns=_comma_list(args.group_columns),
        label_column=args.label_column,
        label_columns=_comma_list(args.label_columns),
    )


def _comma_list(text: str | None) -> tuple[str, ...]:
    """'a, b,c' -> ('a', 'b', 'c')."""
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


def _add_audit(sub: argparse._SubParsersAction, summary: str) -> None:
    from edgelesion.data.audit import NEAR_DUPLICATE_MAX_DISTANCE, ConflictPolicy

    p = sub.add_parser(
        "audit",
        help=summary,
        description="Audit a folder of class subfolders: class counts, unreadable files, byte-identical "
        "and near-identical duplicates, conflicting labels, and overlap with a test folder.",
    )
    p.add_argument("--data", required=True, type=Path, help="folder of class subfolders")
    p.add_argument("--test", type=Path, help="a test folder to check for images shared with --data")
    p.add_argument(
        "--out", type=Path, help="folder for audit.json and class_counts.png (default: audits/<data folder name>)"
    )
    p.add_argument(
        "--conflicts",
        choices=[c.value for c in ConflictPolicy],
        default=ConflictPolicy.EXCLUDE.value,
        help="copies of one image with different labels: exclude them all (default) or keep one per label",
    )
    p.add_argument(
        "--near-distance",
        type=int,
        default=NEAR_DUPLICATE_MAX_DISTANCE,
        help=f"max phash bit distance for near-duplicates (default {NEAR_DUPLICATE_MAX_DISTANCE})",
    )
    _add_metadata_options(p)
    _add_lookalikes_option(p)
    p.add_argument("--force", action="store_true", help="replace an existing audit in --out")
    p.set_defaults(handler=_run_audit)


def _add_lookalikes_option(p: argparse.ArgumentParser, *, recipe_default: bool = False) -> None:
    """--lookalikes; with `recipe_default`, unset means the recipe's (training options)."""
    from edgelesion.metrics import LOOKALIKES

    p.add_argument(
        "--lookalikes",
        type=_comma_list,
        default=None if recipe_default else LOOKALIKES,
        metavar="CLASS,CLASS",
        help="the classes melanoma is told from within each source and checked against for confounding "
        f"(default {','.join(LOOKALIKES)})",
    )


def _run_audit(args: argparse.Namespace) -> int:
    from edgelesion.data.audit_report import run_audit

    run_audit(
        args.data,
        args.out or Path("audits") / args.data.resolve().name,
        test_dir=args.test,
        metadata=_metadata_spec(args),
        policy=args.conflicts,
        near_max_distance=args.near_distance,
        lookalikes=args.lookalikes,
        force=args.force,
    )
    return 0


def _add_training_options(p: argparse.ArgumentParser) -> None:
    """The options of one training run, shared by `train` and `cv`. An option not given keeps the recipe's value."""
    from dataclasses import fields

    from edgelesion.data.audit import NEAR_DUPLICATE_MAX_DISTANCE, ConflictPolicy
    from edgelesion.data.rebalance import AugmentConfig, RebalanceMethod
    from edgelesion.train.config import LR_SCHEDULES, PRECISIONS, OnlineAugment, TrainConfig
    from edgelesion.train.recipes import RECIPES, RECOMMENDED_RECIPE

    defaults, aug = TrainConfig(), AugmentConfig()
    recipe = "default: the recipe's"
    p.add_argument("--data", type=Path, help="folder of class subfolders (required unless --resume)")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--recipe",
        choices=list(RECIPES),
        help=f"the named settings to start from (default {RECOMMENDED_RECIPE}; `edgelesion recipes` lists them); "
        "the options below change them",
    )
    start.add_argument(
        "--model",
        help="instead of a recipe, this architecture with its own defaults (efficientnet-lite0, seed-simple, "
        "seed-dropout)",
    )
    p.add_argument(
        "--weights",
        choices=["imagenet", "none"],
        help="imagenet: start from the model's pretrained weights where it has them (default); none: from scratch",
    )
    p.add_argument(
        "--image-size",
        type=int,
        help="input side in pixels (default: the model's, 180 for the seed models, 224 for efficientnet-lite0)",
    )
    p.add_argument(
        "--centre-crop",
        type=float,
        help="share of each side kept around the image's centre before resizing, in training and in every exported "
        "artifact's input (default 1: the whole image)",
    )
    p.add_argument(
        "--epochs", type=int, help=f"epochs in all, head epochs included ({recipe}; seed models {defaults.epochs})"
    )
    p.add_argument("--head-epochs", type=int, help=f"first epochs train only the classifier head ({recipe})")
    p.add_argument("--head-learning-rate", type=float, help=f"Adam, constant, during the head epochs ({recipe})")
    p.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    p.add_argument(
        "--learning-rate",
        type=float,
        help=f"Adam, the whole network's peak rate ({recipe}; seed models {defaults.learning_rate})",
    )
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, help=f"constant or cosine after warm-up ({recipe})")
    p.add_argument("--warmup-epochs", type=int, help=f"linear warm-up epochs ({recipe})")
    p.add_argument("--label-smoothing", type=float, help=f"({recipe})")
    p.add_argument(
        "--freeze-batchnorm",
        action=argparse.BooleanOptionalAction,
        help=f"keep BatchNorm statistics as pretrained ({recipe})",
    )
    p.add_argument(
        "--online-augment",
        action=argparse.BooleanOptionalAction,
        help=f"flips, 90-degree turns, crop/zoom and colour jitter drawn fresh every epoch ({recipe})",
    )
    p.add_argument(
        "--online-augment-options",
        metavar="KEY=VALUE,...",
        help="the online augmentation's strengths, e.g. min_crop=0.6,hue=0.05,mixup=0.2; implies --online-augment. "
        f"Keys: {', '.join(f.name for f in fields(OnlineAugment) if f.name != 'enabled')} "
        "(edgelesion/train/config.py says what each does)",
    )
    p.add_argument(
        "--patience",
        type=int,
        help=f"stop after this many epochs without a better validation balanced accuracy, 0: never ({recipe})",
    )
    p.add_argument("--seed", type=int, help=f"seed for the split, augmentation and training (default {defaults.seed})")
    p.add_argument(
        "--split-seed",
        type=int,
        help="seed for the split alone (default: --seed), so runs with other --seed values share one split",
    )
    p.add_argument(
        "--rebalance",
        choices=[m.value for m in RebalanceMethod],
        help="augmentor: Augmentor copies of the training split (the seed's method); class-weights: weight the loss; "
        f"none ({recipe})",
    )
    p.add_argument(
        "--augment-target",
        help="images per class after augmentation: 'max' (the largest class, default), 'seed' (+500 per class, "
        "as the seed project did), or a number",
    )
    p.add_argument(
        "--max-copies",
        type=int,
        help=f"at most this many augmented copies of one image (default {aug.max_copies_per_image})",
    )
    p.add_argument(
        "--augmentor-flips", action="store_true", default=None, help="add random flips to the Augmentor copies"
    )
    p.add_argument(
        "--augmentor-zoom", action="store_true", default=None, help="add random zoom to the Augmentor copies"
    )
    _refuse_renamed(p, "--flips", "--augmentor-flips", "it acts on Augmentor's copies, not the online augmentation")
    _refuse_renamed(p, "--zoom", "--augmentor-zoom", "it acts on Augmentor's copies, not the online augmentation")
    p.add_argument(
        "--conflicts",
        choices=[c.value for c in ConflictPolicy],
        help="copies of one image with different labels: exclude them all (default) or keep one per label",
    )
    p.add_argument("--folds", type=int, help=f"the data is cut into this many folds (default {defaults.folds})")
    p.add_argument(
        "--near-distance",
        type=int,
        help="max phash bit distance for near-duplicates, kept on one side of every split "
        f"(default {NEAR_DUPLICATE_MAX_DISTANCE})",
    )
    p.add_argument(
        "--positive-class",
        help=f"the class the alert and sensitivity figures are about (default {defaults.positive_class})",
    )
    p.add_argument(
        "--min-support",
        type=int,
        help=f"classes with fewer validation images are listed, not scored (default {defaults.min_support})",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="Keras mixed precision for training (the head stays float32; exported files are always float32 "
        "models): mixed_bfloat16 needs a CPU with avx512_bf16 or amx_bf16, or a recent GPU; mixed_float16 a GPU "
        "(default float32)",
    )
    _add_metadata_options(p)
    _add_lookalikes_option(p, recipe_default=True)
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    _add_strategy_options(p)


def _add_strategy_options(p: argparse.ArgumentParser) -> None:
    """Where training runs (tf.distribute); the same for --resume, which may change it."""
    from edgelesion.train.config import STRATEGIES

    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="mirrored: every GPU of this machine; multi-worker: the processes TF_CONFIG (or a SLURM job step) "
        "describes, each started with the same command; auto: multi-worker under a TF_CONFIG cluster, mirrored "
        "with more than one GPU, else none. --batch-size is the global batch (docs/scaling.md)",
    )
    p.add_argument(
        "--collective-timeout",
        type=float,
        metavar="SECONDS",
        help="multi-worker: stop with an error when the other workers do not answer for this long "
        "(off by default: TensorFlow keeps a thread per waiting collective; a worker that exits or is killed is "
        "noticed within seconds without it)",
    )
    p.add_argument(
        "--no-determinism",
        dest="deterministic",
        action="store_false",
        help="let ops without a deterministic kernel run (some GPU ops refuse under TensorFlow's op determinism); "
        "results then vary from run to run, and a resumed run ends near, not at, an uninterrupted one",
    )


def _distribute(args: argparse.Namespace) -> DistributeConfig:
    from edgelesion.train.config import DistributeConfig

    try:
        return DistributeConfig(args.strategy, args.collective_timeout, args.deterministic)
    except ValueError as exc:
        raise EdgelesionError(f"bad training option: {exc}") from exc


def _train_config(args: argparse.Namespace, **fixed: int) -> TrainConfig:
    """The TrainConfig the options describe: the named recipe (or the model's own defaults) with every option
    given on top; an option not given keeps the recipe's value."""
    from dataclasses import replace

    from edgelesion.train.config import TrainConfig

    given = {
        "epochs": args.epochs,
        "head_epochs": args.head_epochs,
        "head_learning_rate": args.head_learning_rate,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "lr_schedule": args.lr_schedule,
        "warmup_epochs": args.warmup_epochs,
        "label_smoothing": args.label_smoothing,
        "freeze_batchnorm": args.freeze_batchnorm,
        "patience": args.patience,
        "rebalance": args.rebalance,
        "pretrained": None if args.weights is None else args.weights == "imagenet",
        "seed": args.seed,
        "split_seed": args.split_seed,
        "conflict_policy": args.conflicts,
        "lookalikes": args.lookalikes,
        "folds": args.folds,
        "min_support": args.min_support,
        "near_duplicate_max_distance": args.near_distance,
        "positive_class": args.positive_class,
        "precision": args.precision,
    }
    augmentor = {
        "target": args.augment_target,
        "max_copies_per_image": args.max_copies,
        "flips": args.augmentor_flips,
        "zoom": args.augmentor_zoom,
    }
    from edgelesion.train.recipes import RECOMMENDED_RECIPE, recipe_config

    if args.model is not None:
        _check_model(args.model)
    start = TrainConfig.for_model(args.model) if args.model else recipe_config(args.recipe or RECOMMENDED_RECIPE)
    try:
        config = start.with_changes(
            augment=replace(start.augment, **{k: v for k, v in augmentor.items() if v is not None}),
            **{k: v for k, v in given.items() if v is not None},
            **fixed,
        )
        if args.online_augment is not None:
            config = config.with_changes(online_augment=replace(config.online_augment, enabled=args.online_augment))
        if args.online_augment_options:
            strengths = _key_values(args.online_augment_options, "--online-augment-options")
            config = config.with_changes(online_augment=replace(config.online_augment, enabled=True, **strengths))
        resizing = {
            k: v for k, v in (("image_size", args.image_size), ("centre_crop", args.centre_crop)) if v is not None
        }
        if resizing:
            config = config.with_changes(preprocessing=replace(config.preprocessing, **resizing))
    except (ValueError, TypeError) as exc:
        raise EdgelesionError(f"bad training option: {exc}") from exc
    return config


def _check_model(name: str) -> None:
    """Refuse an unknown architecture before any data is read (the registry imports TensorFlow)."""
    from edgelesion.train.models import list_models

    if name not in list_models():
        raise EdgelesionError(f"--model {name!r}: choose one of {', '.join(list_models())}")


def _key_values(text: str, option: str) -> dict[str, float]:
    """'a=0.6, b=2' -> {'a': 0.6, 'b': 2.0}, or an error naming `option` (an item without '=' has no number)."""
    pairs = {}
    for item in _comma_list(text):
        key, _, value = item.partition("=")
        try:
            pairs[key.strip()] = float(value)
        except ValueError:
            raise EdgelesionError(f"{option}: {item!r} is not KEY=NUMBER") from None
    return pairs


class RenamedOption(argparse.Action):
    """An option that was renamed: using it stops with a message naming the new one."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", why: str = "", **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS)
        self.new, self.why = new, why

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parser.error(f"{self.option_strings[0]} is now {self.new} ({self.why})")


def _refuse_renamed(p: argparse.ArgumentParser, old: str, new: str, why: str) -> None:
    """Define `old` as a renamed option."""
    p.add_argument(old, action=RenamedOption, new=new, why=why, dest=f"renamed_{old.strip('-')}")


def _add_train(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser(
        "train",
        help=summary,
        description="Audit the data, split it by duplicate group, rebalance the training split, and "
        "train with a checkpoint every epoch. Interrupted? Run again with --resume.",
    )
    p.add_argument("--out", required=True, type=Path, help="the run folder to create (or to resume)")
    _add_training_options(p)
    p.add_argument("--fold", type=int, default=0, help="which fold is validation (default 0)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out with its recorded settings (the other options are not used)",
    )
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    if args.resume:
        from edgelesion.train.training import resume

        resume(args.out, data_dir=args.data, distribute=_distribute(args))
        return 0
    if args.data is None:
        raise EdgelesionError("--data is required: the folder of class subfolders to train on")
    config = _train_config(args, fold=args.fold)
    from edgelesion.train.training import train

    train(args.data, args.out, config, metadata=_metadata_spec(args), force=args.force, distribute=_distribute(args))
    return 0


def _add_cv(sub: argparse._SubParsersAction, summary: str) -> None:
    from edgelesion.thresholds import TARGET_SENSITIVITY

    p = sub.add_parser(
        "cv",
        help=summary,
        description="Leak-free k-fold cross-validation on the audit's duplicate groups: one resumable "
        "run folder per fold (OUT/fold-K), then a merge of the finished folds: per-fold "
        "table, mean and sd, out-of-fold melanoma operating points and ROC curve. Run it "
        "again to resume; --only-folds runs some folds now, the rest later. Several jobs may run on one --out at "
        "once (one machine or many): each claims a fold before training it and waits for the folds others hold; "
        "never give them --force, which replaces the whole folder.",
    )
    p.add_argument("--out", required=True, type=Path, help="the cross-validation folder to create or continue")
    _add_training_options(p)
    p.add_argument("--only-folds", help="comma-separated fold numbers to run now (default: every fold)")
    p.add_argument("--merge-only", action="store_true", help="train nothing: merge the folds finished so far")
    p.add_argument(
        "--leave-source-out",
        action="store_true",
        help="one fold per source holding melanoma and a look-alike: train on the other sources, score "
        "that one (needs --metadata with --source-column; --only-sources picks some)",
    )
    p.add_argument("--only-sources", help="with --leave-source-out: comma-separated sources to hold out now")
    p.add_argument(
        "--melanoma-sensitivity",
        type=float,
        default=TARGET_SENSITIVITY,
        help=f"target sensitivity of the out-of-fold alert threshold (default {TARGET_SENSITIVITY})",
    )
    p.set_defaults(handler=_run_cv)


def _run_cv(args: argparse.Namespace) -> int:
    from edgelesion.thresholds import TARGET_SENSITIVITY
    from edgelesion.train.cross_validation import cross_validate, merge_cv

    if args.merge_only:
        if args.leave_source_out:
            from edgelesion.train.leave_source_out import merge_sources

            merge_sources(args.out)
        else:
            merge_cv(args.out, target_sensitivity=args.melanoma_sensitivity)
        return 0
    if args.data is None:
        raise EdgelesionError("--data is required: the folder of class subfolders to cross-validate on")
    if args.leave_source_out:
        from edgelesion.train.leave_source_out import cross_validate_sources

        metadata = _metadata_spec(args)
        if metadata is None or metadata.source_column is None:
            raise EdgelesionError(
                "--leave-source-out needs each image's source: pass --metadata CSV --source-column COLUMN"
            )
        if args.only_folds:
            raise EdgelesionError(
                "--only-folds picks k-fold folds: with --leave-source-out, pick sources with --only-sources"
            )
        if args.melanoma_sensitivity != TARGET_SENSITIVITY:
            raise EdgelesionError(
                "--melanoma-sensitivity sets k-fold cv's out-of-fold threshold: a leave-source-out "
                "fold takes its threshold from its own validation split, at the default target"
            )
        cross_validate_sources(
            args.data,
            args.out,
            _train_config(args),
            metadata,
            sources=_comma_list(args.only_sources) or None,
            force=args.force,
            distribute=_distribute(args),
        )
        return 0
    if args.only_sources:
        raise EdgelesionError("--only-sources picks held-out sources: use it with --leave-source-out")
    try:
        folds = None if args.only_folds is None else [int(k) for k in args.only_folds.split(",") if k.strip()]
    except ValueError as exc:
        raise EdgelesionError(f"--only-folds {args.only_folds!r}: write fold numbers such as 0,1") from exc
    cross_validate(
        args.data,
        args.out,
        _train_config(args),
        folds=folds,
        metadata=_metadata_spec(args),
        force=args.force,
        target_sensitivity=args.melanoma_sensitivity,
        distribute=_distribute(args),
    )
    return 0


def _add_evaluate(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser(
        "evaluate",
        help=summary,
        description="Score a run's best model on its validation split, or on a test folder "
        "(images shared with the training folder are removed and reported).",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder made by 'edgelesion train'")
    p.add_argument("--data", type=Path, help="a test folder of class subfolders (default: the run's validation split)")
    _add_metadata_options(p, "the --data test folder (the validation split uses the run's own)")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from edgelesion.train.evaluation import evaluate_run

    metadata = _metadata_spec(args)
    if metadata is not None and args.data is None:
        raise EdgelesionError(
            "--metadata describes a test folder: pass it with --data (the validation split uses "
            "the metadata the run was trained with)"
        )
    evaluate_run(args.run, args.data, metadata=metadata)
    return 0


def _add_export(sub: argparse._SubParsersAction, summary: str) -> None:
    from edgelesion.export.options import ARTIFACTS, INT8_METHODS, QAT_TARGETS, QATConfig
    from edgelesion.thresholds import TARGET_SENSITIVITY

    qat = QATConfig()
    p = sub.add_parser(
        "export",
        help=summary,
        description="Quantization-aware fine-tune, convert to TFLite and ONNX, check every artifact "
        "against the Keras models on the validation split, and write a bundle.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a run folder made by 'edgelesion train'")
    p.add_argument("--out", required=True, type=Path, help="the bundle folder to create, e.g. export/model3")
    p.add_argument(
        "--artifacts",
        default=",".join(ARTIFACTS),
        help=f"comma-separated subset of {','.join(ARTIFACTS)} (default: all)",
    )
    p.add_argument(
        "--int8",
        choices=INT8_METHODS,
        default="auto",
        help="how int8.tflite and int8.onnx are made: qat (quantization-aware fine-tune; int8.onnx is its "
        "int8.tflite converted), ptq (post-training: TFLite's, onnxruntime's), or auto (default: both, "
        "shipping for each artifact the one that agrees better with the float model)",
    )
    p.add_argument("--qat-epochs", type=int, default=qat.epochs, help=f"QAT fine-tune epochs (default {qat.epochs})")
    p.add_argument(
        "--qat-learning-rate",
        type=float,
        default=qat.learning_rate,
        help=f"QAT Adam learning rate (default {qat.learning_rate})",
    )
    p.add_argument(
        "--qat-target",
        choices=QAT_TARGETS,
        default=qat.target,
        help="what the QAT fine-tune fits: the training labels, or the float model's probabilities "
        f"(distillation) (default {qat.target})",
    )
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="ARTIFACT=AGREEMENT[,MAXDIFF]",
        help="override an artifact's overall top-1 agreement and max probability difference with the "
        "float model, e.g. int8.tflite=0.97 or float32.tflite=1.0,1e-3 (repeatable; int8 artifacts "
        "keep their checks on sure images and balanced accuracy)",
    )
    p.add_argument(
        "--melanoma-sensitivity",
        type=float,
        default=TARGET_SENSITIVITY,
        help="target validation sensitivity of the melanoma alert threshold recorded in the bundle "
        f"(default {TARGET_SENSITIVITY})",
    )
    p.add_argument(
        "--keep-failed", action="store_true", help="keep artifacts that miss their tolerance (marked in bundle.json)"
    )
    p.add_argument(
        "--cv",
        type=Path,
        action="append",
        default=[],
        metavar="CV_DIR",
        help="an 'edgelesion cv' folder of this run's recipe, whose figures go in the model card; give it twice for "
        "a k-fold and a --leave-source-out folder (default: the k-fold folder around RUN when RUN is one of its folds)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(handler=_run_export)


def _parse_tolerances(items: list[str]) -> dict:
    from dataclasses import replace

    from edgelesion.export.parity import DEFAULT_TOLERANCES

    tolerances = dict(DEFAULT_TOLERANCES)
    for item in items:
        name, _, value = item.partition("=")
        try:
            if name not in tolerances:
                raise ValueError(f"unknown artifact {name!r}")
            agreement, _, max_diff = value.partition(",")
            tolerances[name] = replace(
                tolerances[name],
                min_top1_agreement=float(agreement),
                max_prob_diff=float(max_diff) if max_diff else None,
            )
        except ValueError as exc:
            raise EdgelesionError(f"--tolerance {item!r}: {exc}; write ARTIFACT=AGREEMENT[,MAXDIFF]") from exc
    return tolerances


def _run_export(args: argparse.Namespace) -> int:
    from edgelesion.export.exporting import export_run
    from edgelesion.export.options import ExportOptions, QATConfig

    try:
        options = ExportOptions(
            artifacts=tuple(a.strip() for a in args.artifacts.split(",") if a.strip()),
            qat=QATConfig(epochs=args.qat_epochs, learning_rate=args.qat_learning_rate, target=args.qat_target),
            tolerances=_parse_tolerances(args.tolerance),
            keep_failed=args.keep_failed,
            melanoma_sensitivity=args.melanoma_sensitivity,
            int8=args.int8,
            cv_dirs=tuple(args.cv),
        )
    except ValueError as exc:
        raise EdgelesionError(f"bad export option: {exc}") from exc
    export_run(args.run, args.out, options, force=args.force)
    return 0


def _add_predict(sub: argparse._SubParsersAction, summary: str) -> None:
    from edgelesion.infer.inference import ALERT_RECHECK_MARGIN, RECHECK_MARGIN
    from edgelesion.infer.predicting import FORMATS

    p = sub.add_parser(
        "predict",
        help=summary,
        description="Classify image files and folders (recursively) with an exported bundle, using the "
        "bundle's own preprocessing. Every file gets a row: images are recognised by "
        "content (JPEG, PNG, BMP, GIF, TIFF, WebP), anything else gets an error row, never "
        "a silent skip; images under half the model's input side get a warning.",
        epilog="exit status: 0 every input classified, 1 some inputs could not be (their rows say "
        "why), 2 bad usage or an unusable bundle",
    )
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle folder made by 'edgelesion export'")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    p.add_argument(
        "--artifact",
        default="int8.tflite",
        help="which artifact to run (default int8.tflite, the phone file; on x86 CPUs without VNNI "
        "int8.onnx is faster: 'edgelesion benchmark' measures each on this machine)",
    )
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    p.add_argument("--out", type=Path, help="write the output to this file (atomically) instead of the terminal")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--batch-size", type=int, default=32, help="images per inference batch (default 32)")
    p.add_argument("--threads", type=int, help="inference threads (default: all cores)")
    p.add_argument(
        "--full-decode",
        action="store_true",
        help="decode every JPEG in full (exact, slower on large photos) instead of decoding large ones "
        "reduced in the DCT domain, as the bundle's input spec says (an answer whose top two "
        f"probabilities are within {RECHECK_MARGIN}, or whose melanoma probability is within "
        f"{ALERT_RECHECK_MARGIN} log-odds of the alert threshold, is then decided again from the full "
        "decode)",
    )
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from edgelesion.infer.predicting import run_predict

    rows = run_predict(
        args.bundle,
        args.paths,
        artifact=args.artifact,
        output_format=args.format,
        out=args.out,
        force=args.force,
        batch_size=args.batch_size,
        threads=args.threads,
        full_decode=args.full_decode,
    )
    return 1 if any(row["error"] for row in rows) else 0


def _add_benchmark(sub: argparse._SubParsersAction, summary: str) -> None:
    from edgelesion.bench.benchmarking import BenchmarkConfig

    defaults = BenchmarkConfig()
    p = sub.add_parser(
        "benchmark",
        help=summary,
        description="For every artifact of a bundle and the float Keras baseline: accuracy with "
        "intervals, single-image latency (1 thread and all cores), throughput, size, load "
        "time and memory. Several bundles are compared in one table and chart.",
    )
    p.add_argument(
        "bundles", nargs="+", type=Path, metavar="BUNDLE", help="bundle folder(s) made by 'edgelesion export'"
    )
    p.add_argument(
        "--run",
        type=Path,
        metavar="RUN",
        help="the training run the bundle was exported from (default: "
        "where bundle.json records it, relative to the bundle); one bundle only",
    )
    p.add_argument(
        "--data", type=Path, help="evaluation folder of class subfolders (default: the run's validation split)"
    )
    _add_metadata_options(p, "the --data folder (the validation split uses the sources its export recorded)")
    p.add_argument(
        "--out",
        type=Path,
        help="folder for benchmark.json, benchmark.md and charts "
        "(default: BUNDLE-benchmark, or benchmark-comparison for several)",
    )
    p.add_argument("--runs", type=int, default=defaults.runs, help=f"timed single-image runs (default {defaults.runs})")
    p.add_argument(
        "--warmup", type=int, default=defaults.warmup, help=f"untimed warm-up runs (default {defaults.warmup})"
    )
    p.add_argument(
        "--processes",
        type=int,
        default=defaults.latency_processes,
        help="fresh processes to time each artifact's 1-thread latency in; the median one is reported "
        f"(default {defaults.latency_processes}; one process's median can be off by +-15%%)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out folder's results")
    p.set_defaults(handler=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    from edgelesion.bench.benchmarking import BenchmarkConfig, compare_bundles, run_benchmark

    several = len(args.bundles) > 1
    out = args.out or (
        Path("benchmark-comparison") if several else args.bundles[0].with_name(args.bundles[0].name + "-benchmark")
    )
    if out.exists() and not args.force:
        raise EdgelesionError(f"{out} already exists: choose another --out or pass --force")
    if args.processes < 1:
        raise EdgelesionError(f"--processes {args.processes}: time in at least 1 process")
    config = BenchmarkConfig(runs=args.runs, warmup=args.warmup, latency_processes=args.processes)
    if several and args.run:
        raise EdgelesionError(
            "--run names the run of one bundle: benchmark the bundles one at a time, or keep each "
            "bundle where its run is recorded (relative to the bundle)"
        )
    metadata = _metadata_spec(args)
    if metadata is not None and args.data is None:
        raise EdgelesionError(
            "--metadata describes an evaluation folder: pass it with --data (the validation split "
            "uses the sources its export recorded)"
        )
    if several:
        compare_bundles(args.bundles, out, data_dir=args.data, metadata=metadata, config=config)
    else:
        run_benchmark(args.bundles[0], out, run_dir=args.run, data_dir=args.data, metadata=metadata, config=config)
    print((out / ("comparison.md" if several else "benchmark.md")).read_text())
    return 0


def _add_recipes(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("recipes", help=summary, description="The named training recipes (TrainConfig presets).")
    p.set_defaults(handler=_run_recipes)


def _run_recipes(args: argparse.Namespace) -> int:
    from edgelesion.train.recipes import format_recipes

    print(format_recipes())
    return 0


def _add_calibrate(sub: argparse._SubParsersAction, summary: str) -> None:
    from edgelesion.export.site_calibration import MIN_MELANOMAS, MIN_OTHER_IMAGES

    p = sub.add_parser(
        "calibrate",
        help=summary,
        description="Choose each artifact's melanoma alert threshold again on a labelled sample of a new site: "
        "the highest at which the site's new melanomas are expected to reach the bundle's target sensitivity, with "
        "95% intervals, beside what the old threshold gave. Writes a new bundle (artifacts unchanged); the original "
        "is only read.",
    )
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a bundle folder made by 'edgelesion export'")
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help=f"the site's labelled sample: a folder of class subfolders (at least {MIN_MELANOMAS} melanomas and "
        f"{MIN_OTHER_IMAGES} other images)",
    )
    _add_metadata_options(p, "the --data sample")
    p.add_argument("--out", required=True, type=Path, help="the new bundle folder to create")
    p.add_argument("--force", action="store_true", help="replace an existing bundle in --out")
    p.set_defaults(handler=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    from edgelesion.export.site_calibration import calibrate_bundle

    calibrate_bundle(args.bundle, args.data, args.out, metadata=_metadata_spec(args), force=args.force)
    return 0


def _add_cache(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser(
        "cache",
        help=summary,
        description="The cache of decoded images (each dataset folder decoded once, read memory-mapped by audit, "
        "train, cv, evaluate, export, calibrate and benchmark --data) and of Augmentor's extra images: where it is "
        "($EDGELESION_CACHE, else ~/.cache/edgelesion), what it holds and its size; --clear removes it all (it is "
        "rebuilt when needed).",
    )
    p.add_argument(
        "--clear",
        action="store_true",
        help="remove every entry (builds of running processes, and builds made on another host, are left alone)",
    )
    p.set_defaults(handler=_run_cache)


def _run_cache(args: argparse.Namespace) -> int:
    from edgelesion.data.image_cache import clear_cache, format_cache

    if args.clear:
        freed, busy = clear_cache()
        print(f"freed {freed / 1e9:.2f} GB" + (f"; left {len(busy)} builds of running processes alone" if busy else ""))
    print(format_cache())
    return 0


# name -> (function that defines the subcommand, one-line summary). Only the subcommand being run is
# defined in full, so that `edgelesion predict` never imports the training stack.
COMMANDS = {
    "audit": (_add_audit, "report class counts, duplicates, label conflicts and test overlap"),
    "train": (_add_train, "train a model on a leak-free split"),
    "cv": (_add_cv, "cross-validate a training recipe over leak-free folds"),
    "evaluate": (_add_evaluate, "score a trained run with confidence intervals"),
    "predict": (_add_predict, "classify images with an exported bundle (onnxruntime or LiteRT, no TensorFlow)"),
    "benchmark": (_add_benchmark, "measure a bundle's artifacts: accuracy, latency, throughput, size, memory"),
    "export": (_add_export, "export a run to a validated bundle of TFLite and ONNX artifacts"),
    "recipes": (_add_recipes, "list the named training recipes that train and cv start from"),
    "calibrate": (_add_calibrate, "choose a bundle's melanoma alert thresholds again on a new site's labelled sample"),
    "cache": (_add_cache, "show the decoded-image cache's entries and size, or clear it"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, with `command`'s options defined in full and the other commands listed."""
    parser = argparse.ArgumentParser(prog="edgelesion", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"edgelesion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (define, summary) in COMMANDS.items():
        if name == command:
            define(sub, summary)
            sub.choices[name].add_argument(
                "--verbose",
                action="store_true",
                help="show TensorFlow's and the converters' own log lines and warnings",
            )
        else:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `edgelesion` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    if args.verbose:  # read where TensorFlow is imported (edgelesion._tf)
        os.environ["EDGELESION_VERBOSE"] = "1"
    else:  # converters log through the root logger (onnxruntime's quantizer: bias ranges no user can change)
        logging.getLogger().setLevel(logging.ERROR)
    try:
        return args.handler(args)
    except EdgelesionError as exc:
        print(f"edgelesion {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except CheckFailed as exc:
        print(f"edgelesion {args.command}: check failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = {
            "train": f"; continue with: edgelesion train --resume --out {args.out}",
            "cv": f"; continue with the same 'edgelesion cv' command (out: {args.out})",
        }.get(args.command, "")
        print(f"\nedgelesion {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
