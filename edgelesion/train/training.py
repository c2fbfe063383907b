"""Train a model on a leak-free split, one checkpointed epoch at a time, resumable to the same result."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import log_loss

from edgelesion._tf import keras, tf
from edgelesion.data.audit import AuditReport, audit_dataset, format_audit
from edgelesion.data.dataset import LoadedDataset, load_dataset
from edgelesion.data.image_cache import default_cache_dir, images_identity
from edgelesion.data.image_rows import ImageRows, as_rows
from edgelesion.data.metadata import MetadataSpec
from edgelesion.data.rebalance import RebalanceMethod, augment, class_weights
from edgelesion.data.splits import train_val_indices
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import atomic_path, ensure_outside, read_csv, read_json, write_csv, write_json
from edgelesion.metrics import balanced_accuracy, scored_class_indices, sensitivity
from edgelesion.plots import class_counts_chart, training_curves_chart
from edgelesion.provenance import provenance
from edgelesion.train.config import DEFAULT_DISTRIBUTE, DistributeConfig, TrainConfig
from edgelesion.train.distribution import (
    Distribution,
    distribution_for,
    record_distribution,
    replica_batches,
    steps_per_epoch,
    stopping_with_the_others,
    worker_output,
)
from edgelesion.train.evaluation import evaluate_held_out, evaluate_validation, predict
from edgelesion.train.models import HEAD, create_model
from edgelesion.train.online_augment import augment_batch, mix_batch
from edgelesion.train.precision import (
    check_precision,
    loss_scale_state,
    precision_policy,
    restore_loss_scale,
)
from edgelesion.train.runs import RUN_FORMAT_VERSION, RunDir, check_run_dir, prepare_run_dir, read_run


@dataclass
class PreparedData:
    """A dataset read, audited and split: what one training run trains and validates on."""

    report: AuditReport
    train: LoadedDataset
    val: LoadedDataset
    held_out: LoadedDataset | None = None  # leave-source-out: the held-out source's images, scored after training
    spanning_removed: list[str] | None = None  # training-source images sharing a group with the held-out source

    @property
    def dataset(self) -> LoadedDataset:
        return self.report.dataset


def held_out_source_split(report: AuditReport, held_out: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kept images of the held-out source, kept images of the training sources, and the training-source images
    removed because a duplicate, lesion or patient group joins them to a held-out image (indices into the dataset)."""
    sources = report.dataset.sources
    if sources is None:
        raise EdgelesionError("leaving a source out needs each image's source: pass --metadata CSV --source-column")
    inside = np.array([sources[i] == held_out for i in report.kept], dtype=bool)
    if not inside.any():
        raise EdgelesionError(
            f"no kept image comes from the source {held_out!r}: the sources are {', '.join(sorted(set(sources)))}"
        )
    held = report.kept[inside]
    spanning = np.isin(report.group_ids[report.kept], report.group_ids[held]) & ~inside
    return held, report.kept[~inside & ~spanning], report.kept[spanning]


def prepare_data(
    data_dir: str | Path, config: TrainConfig, *, metadata: MetadataSpec | None = None, progress: bool = True
) -> PreparedData:
    """Read and audit `data_dir`, apply the conflict policy, and draw the group-aware validation fold (from the
    training sources only when a source is held out)."""
    dataset = load_dataset(data_dir, config.preprocessing, progress=progress, metadata=metadata)
    report = audit_dataset(dataset, policy=config.conflict_policy, near_max_distance=config.near_duplicate_max_distance)
    pool, held, spanning = report.kept, None, None
    if config.held_out_source is not None:
        held, pool, spanning = held_out_source_split(report, config.held_out_source)
    train_pos, val_pos = train_val_indices(
        dataset.labels[pool],
        report.group_ids[pool],
        n_folds=config.folds,
        fold=config.fold,
        seed=config.fold_split_seed,
    )
    return PreparedData(
        report,
        dataset.subset(pool[train_pos]),
        dataset.subset(pool[val_pos]),
        None if held is None else dataset.subset(held),
        None if spanning is None else [dataset.records[i].relpath for i in spanning],
    )


def _split_rows(subset: LoadedDataset) -> list[list[str | None]]:
    return [[r.relpath, r.label, sha, r.source] for r, sha in zip(subset.records, subset.sha256)]


def write_data_records(run: RunDir, data: PreparedData) -> None:
    """The audit, the file index with hashes, and the split file lists, so the run can be inspected and redone."""
    report, dataset = data.report, data.dataset
    write_json(run.audit, report.to_dict())
    class_counts_chart(report.class_counts(), run.class_counts)
    status = {r.relpath: "excluded" for r in report.excluded}
    for relpath in data.spanning_removed or []:
        status[relpath] = "removed: shares a group with the held-out source"
    write_csv(
        run.data_index,
        ["path", "label", "sha256", "phash", "status", "source", "groups"],
        [
            [r.relpath, r.label, sha, f"{ph:016x}", status.get(r.relpath, "kept"), r.source, ";".join(r.groups)]
            for r, sha, ph in zip(dataset.records, dataset.sha256, dataset.phash)
        ],
    )
    header = ["path", "label", "sha256", "source"]
    write_csv(run.splits / "train.csv", header, _split_rows(data.train))
    write_csv(run.splits / "val.csv", header, _split_rows(data.val))
    if data.held_out is not None:
        write_csv(run.splits / "held_out.csv", header, _split_rows(data.held_out))
    write_csv(
        run.splits / "excluded.csv",
        ["path", "reason"],
        [[s.relpath, s.reason] for s in [*dataset.skipped, *report.excluded]]
        + [[relpath, status[relpath]] for relpath in data.spanning_removed or []],
    )


def training_arrays(
    run: RunDir, train: LoadedDataset, config: TrainConfig, progress: bool
) -> tuple[ImageRows, np.ndarray, dict[int, float] | None]:
    """Training images (rows of the caches, not read yet) and labels after rebalancing (training split only), and
    class weights if chosen."""
    x, y = train.images, train.labels
    n_classes = len(train.classes)
    if config.rebalance is RebalanceMethod.CLASS_WEIGHTS:
        return x, y, class_weights(y, n_classes)
    if config.rebalance is RebalanceMethod.NONE:
        return x, y, None
    cache_dir = default_cache_dir()
    ensure_outside(cache_dir, train.root, flag="the augmentation cache (EDGELESION_CACHE)")
    content = images_identity(train.sha256, config.preprocessing)
    extra = augment(
        x, y, n_classes, config.augment, seed=config.seed, content=content, cache_dir=cache_dir, progress=progress
    )
    write_csv(
        run.augmentation,
        ["generated", "source_path", "label"],
        [[i, train.records[s].relpath, train.records[s].label] for i, s in enumerate(extra.sources)],
    )
    for cls, missing in extra.shortfall.items():
        print(
            f"note: class '{train.classes[cls]}' gets {missing} fewer augmented images than its target: "
            f"at most {config.augment.max_copies_per_image} copies per source image"
        )
    return x.concat(as_rows(extra.images)), np.concatenate([y, extra.labels]), None


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed every random draw of epoch `epoch` starts from, the same whether or not the run was resumed."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def validation_scores(
    model: keras.Model, val: LoadedDataset, scored: list[int], positive: int | None
) -> dict[str, Any]:
    """Validation loss, accuracy, balanced accuracy over `scored` classes, and melanoma sensitivity."""
    probs = predict(model, val.images)
    y, pred = val.labels, probs.argmax(axis=1)
    scores = {
        "val_loss": float(log_loss(y, np.clip(probs, 1e-7, 1.0), labels=list(range(probs.shape[1])))),
        "val_accuracy": float((pred == y).mean()),
        "val_balanced_accuracy": balanced_accuracy(y, pred, scored),
        "val_melanoma_sensitivity": sensitivity(y, pred, positive),
    }
    return scores


def save_model(model: keras.Model, target: Path) -> None:
    """Save a Keras model (with its optimizer state) atomically."""
    with atomic_path(target) as tmp:  # the temporary name ends in .keras, which Keras requires
        model.save(tmp)


def one_hot_targets(config: TrainConfig) -> bool:
    """Targets are class distributions (label smoothing, mixup), not class indices."""
    return bool(config.label_smoothing) or config.online_augment.mixes


def compile_model(model: keras.Model, config: TrainConfig, optimizer: keras.optimizers.Optimizer) -> None:
    """Compile with the config's loss: one-hot targets with label smoothing or mixup, else sparse labels."""
    one_hot = one_hot_targets(config)
    loss = (
        keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
        if one_hot
        else keras.losses.SparseCategoricalCrossentropy()
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy_metric(one_hot)])


def accuracy_metric(one_hot: bool) -> keras.metrics.Metric:
    """Training accuracy, as compile's "accuracy" picks it for these targets. An object makes its variables here,
    not in the train step's first trace, which TensorFlow would then trace a second time."""
    return (
        keras.metrics.CategoricalAccuracy("accuracy")
        if one_hot
        else keras.metrics.SparseCategoricalAccuracy("accuracy")
    )


def set_trainable(model: keras.Model, config: TrainConfig, *, head_only: bool) -> None:
    """The classifier head alone, or every layer but BatchNorm when the config freezes it (inference mode).

    Models are saved with the whole-network setting, so a loaded model's optimizer knows every
    variable it will ever train.
    """
    for layer in model.layers:
        layer.trainable = (
            layer.name == HEAD
            if head_only
            else not (config.freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization))
        )


def configure_epoch(model: keras.Model, config: TrainConfig, epoch: int) -> None:
    """Which layers train in `epoch` (the head alone first, then the whole network) and its learning rate.

    Recompiled every epoch, keeping the optimizer and its state: Keras' fit() restores the trainable
    flags recorded at compile time, so flags set after compiling would be silently undone.
    """
    set_trainable(model, config, head_only=epoch < config.head_epochs)
    compile_model(model, config, model.optimizer)
    keras.backend.set_value(model.optimizer.learning_rate, config.learning_rate_at(epoch))


def image_reader(x: ImageRows) -> Any:
    """A tf.data map function: a batch of image indices in, those uint8 images out, read from `x`'s rows (the
    memory-mapped cache) as the pipeline asks for them."""
    shape = [None, *x.shape[1:]]

    def read(index: tf.Tensor) -> tf.Tensor:
        images = tf.numpy_function(lambda rows: x[rows], [index], tf.uint8, stateful=False)
        return tf.ensure_shape(images, shape)

    return read


def epoch_batches(
    order: np.ndarray, batch_size: int, distribution: Distribution, map_fn: Callable[..., Any]
) -> tuple[Any, int | None]:
    """The epoch's input for fit(): this process's per-replica batches of `order` mapped by `map_fn`, and the steps
    (None on one device, where fit() runs the dataset to its end)."""
    # tf.data's autotuner runs its own threads, which on 2 cores compete with training (measured:
    # slower, uneven epochs); a fixed two-batch prefetch keeps the next batches ready without it.
    options = tf.data.Options()
    options.autotune.enabled = False

    def dataset(context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        pipeline, pipelines = (0, 1) if context is None else (context.input_pipeline_id, context.num_input_pipelines)
        parts = replica_batches(order, batch_size, distribution.replicas, pipeline, pipelines)
        if not parts:
            raise EdgelesionError(
                f"{len(order)} training images cannot fill one step of {distribution.replicas} replicas"
            )
        indices = tf.RaggedTensor.from_row_lengths(np.concatenate(parts), [len(p) for p in parts])
        return (
            tf.data.Dataset.from_tensor_slices(indices)
            .map(map_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(2)
            .with_options(options)
        )

    if not distribution.distributed:
        return dataset(), None
    steps = steps_per_epoch(len(order), batch_size, distribution.replicas)
    return distribution.strategy.distribute_datasets_from_function(dataset), steps


def fit_one_epoch(
    model: keras.Model,
    x: ImageRows,
    y: tf.Tensor,
    epoch: int,
    config: TrainConfig,
    weights: dict[int, float] | None,
    progress: bool,
    *,
    scaling: tuple[float, float] | None = None,
    distribution: Distribution | None = None,
) -> tuple[dict[str, float], list[float]]:
    """One epoch in a seeded order with a freshly traced step, so dropout and shuffling depend only on (seed, epoch);
    the epoch's logs and each step's loss (Keras' running mean over the epoch so far).

    Each epoch only a new order of indices enters the pipeline; each batch's images are read from `x`'s rows (the
    image cache, memory-mapped: never the whole set in memory) and augmented, if the config says so, from
    (seed, epoch, image index), while the model trains (prefetch). With `scaling` (scale, offset), the model is fed
    pixels * scale + offset (a model without its scaling layer, as QAT's core). Under a `distribution`, each
    replica trains on its slice of every global batch (`replica_batches`).
    """
    distribution = distribution or distribution_for(DistributeConfig("none"))
    seed = epoch_seed(config.seed, epoch)
    keras.utils.set_random_seed(seed)
    model.make_train_function(force=True)
    order = np.random.default_rng(seed).permutation(len(x))
    read = image_reader(x)
    n_classes = int(model.output_shape[-1])

    mixup = config.online_augment.mixup if config.online_augment.mixes else 0.0
    # class weights enter as per-image weights (what Keras' class_weight does), which a distributed input also takes
    weight_table = tf.constant([(weights or {}).get(k, 1.0) for k in range(n_classes)], tf.float32)

    def gather(index: tf.Tensor) -> tuple[tf.Tensor, ...]:
        images = augment_batch(read(index), index, seed, config.online_augment)
        if scaling is not None:
            images = images * scaling[0] + scaling[1]
        labels = tf.gather(y, index)
        if mixup:
            return mix_batch(images, tf.one_hot(labels, n_classes), tf.gather(weight_table, labels), index, seed, mixup)
        targets = tf.one_hot(labels, n_classes) if one_hot_targets(config) else labels
        return (images, targets) if weights is None else (images, targets, tf.gather(weight_table, labels))

    batches, steps = epoch_batches(order, config.batch_size, distribution, gather)
    # logs hold the replicas' synchronised figures: the first replica's are the global ones (Keras' default sums
    # them over the workers of a multi-worker strategy)
    model.distribute_reduction_method = "first"
    step_losses: list[float] = []
    callbacks = [
        # epochs=config.epochs so Keras' bar reads "Epoch 3/20"; this ends fit() after this one epoch.
        keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: setattr(model, "stop_training", True)),
        keras.callbacks.LambdaCallback(on_train_batch_end=lambda _, logs: step_losses.append(float(logs["loss"]))),
    ]
    history = model.fit(
        batches,
        epochs=config.epochs,
        initial_epoch=epoch,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=1 if progress else 0,
    )
    return {key: float(values[-1]) for key, values in history.history.items()}, step_losses


def run_epochs(
    run: RunDir,
    model: keras.Model,
    x: ImageRows,
    y: np.ndarray,
    weights: dict[int, float] | None,
    data: PreparedData,
    config: TrainConfig,
    state: dict[str, Any],
    progress: bool,
    distribution: Distribution,
) -> dict[str, Any]:
    """Train from the epoch after `state`'s last one to config.epochs, checkpointing after each into `run` (a
    temporary folder of its own on a worker other than the chief)."""
    classes = data.dataset.classes
    scored = scored_class_indices(data.val.labels, len(classes), config.min_support)
    positive = classes.index(config.positive_class) if config.positive_class in classes else None
    y_tensor = tf.constant(y)  # once per run: epochs only reorder indices
    for epoch in range(state["epochs_done"], config.epochs):
        if config.patience and state["best_epoch"] is not None and epoch - state["best_epoch"] >= config.patience:
            print(
                f"early stop after epoch {epoch}: no better validation balanced accuracy for {config.patience} epochs"
            )
            break
        started = time.perf_counter()
        configure_epoch(model, config, epoch)
        row: dict[str, Any] = {"epoch": epoch + 1, "learning_rate": config.learning_rate_at(epoch)}
        logs, step_losses = fit_one_epoch(
            model, x, y_tensor, epoch, config, weights, progress, distribution=distribution
        )
        row.update(logs)
        row["seconds"] = time.perf_counter() - started
        row["train_images_per_second"] = len(x) / row["seconds"]
        row.update(validation_scores(model, data.val, scored, positive))
        set_trainable(model, config, head_only=False)  # saved as the whole network trains (see set_trainable)
        if not np.isfinite(row["loss"]):
            raise EdgelesionError(f"training diverged at epoch {epoch + 1} (loss {row['loss']}): lower --learning-rate")
        state["history"].append(row)
        state["step_losses"] = [*state.get("step_losses", []), {"epoch": epoch + 1, "losses": step_losses}]
        score = row["val_balanced_accuracy"] if row["val_balanced_accuracy"] is not None else row["val_accuracy"]
        score = distribution.agreed(score)  # workers whose hardware rounds differently still stop and keep alike
        checkpoint = run.checkpoints / f"epoch-{epoch + 1:04d}.keras"
        save_model(model, checkpoint)  # every worker saves every epoch (a collective: never only on some workers)
        if state["best_score"] is None or score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch + 1)
            with atomic_path(run.best_model) as target:
                shutil.copyfile(checkpoint, target)
        state.update(epochs_done=epoch + 1, checkpoint=checkpoint.name, loss_scale=loss_scale_state(model))
        write_json(run.state, state)
        for old in run.checkpoints.glob("epoch-*.keras"):
            if old.name != checkpoint.name:
                old.unlink()
        write_csv(run.history, list(row), [[r.get(k) for k in row] for r in state["history"]])
        write_csv(
            run.steps,
            ["epoch", "step", "loss"],
            [[e["epoch"], s + 1, loss] for e in state["step_losses"] for s, loss in enumerate(e["losses"])],
        )
        training_curves_chart(state["history"], run.curves)
        bal = "n/a" if row["val_balanced_accuracy"] is None else f"{row['val_balanced_accuracy']:.3f}"
        mel = "n/a" if row["val_melanoma_sensitivity"] is None else f"{row['val_melanoma_sensitivity']:.3f}"
        print(
            f"epoch {epoch + 1}/{config.epochs}: val balanced accuracy {bal}, val melanoma sensitivity {mel}, "
            f"val accuracy {row['val_accuracy']:.3f} ({row['seconds']:.1f}s, {row['train_images_per_second']:.0f} img/s)"
        )
    return state


def _build_or_restore(
    run: RunDir, data: PreparedData, config: TrainConfig, state: dict[str, Any], deterministic: bool
) -> keras.Model:
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    if state["checkpoint"]:
        restored = keras.models.load_model(run.checkpoints / state["checkpoint"])
        restore_loss_scale(restored, state.get("loss_scale"))
        return restored
    model = create_model(config.model, len(data.dataset.classes), config.preprocessing, pretrained=config.pretrained)
    set_trainable(model, config, head_only=False)
    compile_model(model, config, keras.optimizers.Adam(config.learning_rate))
    model.optimizer.build(
        model.trainable_variables
    )  # every variable any epoch trains, before the head epochs freeze some
    return model


def checked_distribution(distribute: DistributeConfig, config: TrainConfig) -> Distribution:
    """The strategy `distribute` asks for, with `config`'s global batch checked against its replicas."""
    distribution = distribution_for(distribute)
    distribution.check_batch(config.batch_size)
    return distribution


def train_prepared(
    run: RunDir,
    data: PreparedData,
    config: TrainConfig,
    state: dict[str, Any] | None = None,
    *,
    progress: bool = True,
    distribute: DistributeConfig = DEFAULT_DISTRIBUTE,
) -> dict[str, Any] | None:
    """Train on an already prepared split into `run` (from `state`, a checkpoint's, or from scratch),
    then score the best epoch on the validation split. `train` and `resume` call this; so do
    experiments that split the data their own way (benchmarks/leaky_protocol.py).

    Under a multi-worker strategy only the chief writes `run` and scores it; another worker trains in step with
    it, saves into a temporary folder of its own, and returns None.
    """
    distribution = checked_distribution(distribute, config)
    state = state or {"epochs_done": 0, "checkpoint": None, "best_epoch": None, "best_score": None, "history": []}
    with worker_output(run, distribution) as out, stopping_with_the_others(distribution):
        x, y, weights = training_arrays(out, data.train, config, progress)
        print(
            f"training {config.model} on {len(x)} images ({len(data.train.records)} from the training split, "
            f"{len(x) - len(data.train.records)} augmented), validating on {len(data.val.records)}"
        )
        if distribution.is_chief:
            record_distribution(run, distribution, config.batch_size, state["epochs_done"], distribute.deterministic)
        # a restored model keeps the policy saved in its file
        with precision_policy(config.precision), distribution.strategy.scope():
            model = _build_or_restore(run, data, config, state, distribute.deterministic)
            distribution.check_same_start(state["epochs_done"], run.root)
            state = run_epochs(out, model, x, y, weights, data, config, state, progress, distribution)
    if not distribution.is_chief:
        print(f"this worker's part of {run.root} is done: the chief worker scores the run and writes its folder")
        return None
    best = keras.models.load_model(run.best_model)
    last = state["history"][-1]["val_balanced_accuracy"]
    print(
        f"best epoch: {state['best_epoch']} of {state['epochs_done']} by validation balanced accuracy. It was chosen "
        f"on the split it is scored on below, so those figures lean optimistic; the last epoch's balanced accuracy, "
        f"which no epoch choice touched, was {'n/a' if last is None else f'{last:.3f}'}"
    )
    metrics = evaluate_validation(
        best,
        data.val,
        run.evaluation / "validation",
        config=config,
        title=f"Validation split ({len(data.val.records)} images, best epoch {state['best_epoch']})",
    )
    if data.held_out is not None:
        evaluate_held_out(best, data.held_out, run, config, metrics)
    return metrics


def start_run(run: RunDir, data: PreparedData, config: TrainConfig, *, force: bool = False) -> None:
    """Create the run folder and record everything needed to reproduce it, before the first epoch."""
    prepare_run_dir(run.root, force=force)
    write_json(run.provenance, provenance())
    write_data_records(run, data)
    table = data.dataset.metadata
    write_json(
        run.config,
        {
            "format_version": RUN_FORMAT_VERSION,
            "config": config.to_dict(),
            "data_dir": str(data.dataset.root.resolve()),
            "classes": data.dataset.classes,
            "data_fingerprint": data.dataset.fingerprint(),
            "metadata": None if table is None else {"spec": table.spec.to_dict(), "fingerprint": table.fingerprint},
        },
    )


def train(
    data_dir: str | Path,
    out: str | Path,
    config: TrainConfig,
    *,
    metadata: MetadataSpec | None = None,
    force: bool = False,
    progress: bool = True,
    distribute: DistributeConfig = DEFAULT_DISTRIBUTE,
) -> dict[str, Any] | None:
    """Train `config.model` on `data_dir` into the new run folder `out`; return the validation metrics (None on a
    multi-worker strategy's workers other than the chief, which write nothing into `out`).

    `metadata` names a CSV of each image's source, lesion/patient groups and, optionally, label.
    """
    run = RunDir(Path(out))
    ensure_outside(run.root, data_dir)
    check_precision(config.precision)
    distribution = checked_distribution(distribute, config)
    if distribution.is_chief:
        check_run_dir(run.root, force=force)  # fail before the slow work
    data = prepare_data(data_dir, config, metadata=metadata, progress=progress)
    print(format_audit(data.report))
    if distribution.is_chief:
        start_run(run, data, config, force=force)
    if data.held_out is not None:
        print(
            f"leaving source {config.held_out_source!r} out: its {len(data.held_out.records)} images are scored "
            f"after training; {len(data.spanning_removed or [])} training-source images sharing a duplicate, lesion "
            "or patient group with them are removed from training (splits/excluded.csv)"
        )
    return train_prepared(run, data, config, progress=progress, distribute=distribute)


def resume(
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    progress: bool = True,
    distribute: DistributeConfig = DEFAULT_DISTRIBUTE,
) -> dict[str, Any] | None:
    """Continue an interrupted run from its last checkpoint; it ends where an uninterrupted run would (under the
    same strategy; on another number of replicas the float sums, dropout draws and last-batch cuts differ)."""
    run = RunDir(Path(out))
    info = read_run(run.root, need_model=False)
    if not run.state.is_file():
        raise EdgelesionError(f"{run.root} has no finished epoch to resume from: start it again with --force")
    check_precision(info.config.precision)
    checked_distribution(distribute, info.config)  # before the slow work
    data = prepare_data(data_dir or info.data_dir, info.config, metadata=info.metadata, progress=progress)
    if data.dataset.metadata is not None and data.dataset.metadata.fingerprint != info.metadata_fingerprint:
        raise EdgelesionError(
            f"the metadata CSV {info.metadata.csv} changed since {run.root} started: a resumed run "
            "must see the same sources and groups; start a new run instead"
        )
    if data.dataset.fingerprint() != info.data_fingerprint:
        raise EdgelesionError(
            f"the images in {data.dataset.root} changed since {run.root} started (data fingerprint differs): "
            "a resumed run must see the same data; start a new run instead"
        )
    recorded = [row["path"] for row in read_csv(run.splits / "train.csv")]
    if recorded != [r.relpath for r in data.train.records]:
        raise EdgelesionError(f"the training split of {run.root} cannot be reproduced: start a new run instead")
    state = read_json(run.state)
    print(f"resuming {run.root} after epoch {state['epochs_done']} of {info.config.epochs}")
    return train_prepared(run, data, info.config, state, progress=progress, distribute=distribute)
