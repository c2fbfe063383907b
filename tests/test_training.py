"""Training writes a reproducible run, resumes to the same result, and never leaks or overwrites."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgelesion.data.rebalance import AugmentConfig
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import read_csv
from edgelesion.preprocessing import Preprocessing
from edgelesion.train import training
from edgelesion.train.config import TrainConfig
from edgelesion.train.runs import RunDir
from tests.conftest import interrupted_at, snapshot

TINY = TrainConfig(
    epochs=3,
    batch_size=8,
    folds=3,
    min_support=2,
    preprocessing=Preprocessing(image_size=24),
    augment=AugmentConfig(target="16"),
)


def test_run_folder_records_everything_needed_to_reproduce_it(dataset_dir, tmp_path, capsys):
    before = snapshot(dataset_dir)
    metrics = training.train(dataset_dir, tmp_path / "run", TINY, progress=False)
    run = RunDir(tmp_path / "run")
    # the best epoch is chosen on the split it is scored on: the last epoch's figure is printed beside it
    last = read_csv(run.history)[-1]["val_balanced_accuracy"]
    assert f"which no epoch choice touched, was {float(last):.3f}" in capsys.readouterr().out
    config = json.loads(run.config.read_text())
    assert TrainConfig.from_dict(config["config"]) == TINY
    assert config["data_fingerprint"] and config["classes"] == ["basal cell carcinoma", "melanoma", "nevus"]
    prov = json.loads(run.provenance.read_text())
    assert prov["versions"]["tensorflow"].startswith("2.21") and "git_commit" in prov and prov["machine"]["cores"]
    for path in (
        run.audit,
        run.class_counts,
        run.curves,
        run.best_model,
        run.history,
        run.augmentation,
        run.evaluation / "validation" / "metrics.json",
        run.evaluation / "validation" / "confusion_matrix.png",
    ):
        assert path.is_file(), path
    assert len(read_csv(run.history)) == 3
    per_epoch = -(-(len(read_csv(run.splits / "train.csv")) + len(read_csv(run.augmentation))) // 8)  # batches of 8
    steps = read_csv(run.steps)  # every step's loss
    assert [row["epoch"] for row in steps] == [str(e) for e in (1, 2, 3) for _ in range(per_epoch)]
    assert float(steps[-1]["loss"]) == pytest.approx(float(read_csv(run.history)[-1]["loss"]))
    (where,) = json.loads(run.distribution.read_text())
    assert where["strategy"] == "none" and where["replicas"] == 1 and where["deterministic"] is True
    assert metrics["n_images"] == len(read_csv(run.splits / "val.csv"))
    assert snapshot(dataset_dir) == before, "training wrote into the dataset folder"
    from edgelesion.train.evaluation import evaluate_run

    assert evaluate_run(run.root)["confusion_matrix"] == metrics["confusion_matrix"]


def test_validation_never_shares_an_image_with_training_or_augmentation(dataset_dir, tmp_path):
    import shutil

    # a same-label re-copy and a conflicting copy: both must stay out of any cross-split pair
    shutil.copy(dataset_dir / "melanoma" / "img_001.jpg", dataset_dir / "melanoma" / "again.jpg")
    shutil.copy(dataset_dir / "nevus" / "img_002.jpg", dataset_dir / "melanoma" / "conflict.jpg")
    training.train(dataset_dir, tmp_path / "run", TINY.with_changes(epochs=1), progress=False)
    run = RunDir(tmp_path / "run")
    train_rows, val_rows = read_csv(run.splits / "train.csv"), read_csv(run.splits / "val.csv")
    assert not {r["sha256"] for r in train_rows} & {r["sha256"] for r in val_rows}
    sources = {r["source_path"] for r in read_csv(run.augmentation)}
    assert sources <= {r["path"] for r in train_rows}
    excluded = {r["path"] for r in read_csv(run.splits / "excluded.csv")}
    assert {"melanoma/conflict.jpg", "nevus/img_002.jpg"} <= excluded


def test_resume_after_interruption_ends_where_an_uninterrupted_run_does(dataset_dir, tmp_path):
    full = training.train(dataset_dir, tmp_path / "full", TINY, progress=False)

    with interrupted_at(training, epoch=2), pytest.raises(KeyboardInterrupt):
        training.train(dataset_dir, tmp_path / "cut", TINY, progress=False)
    assert json.loads(RunDir(tmp_path / "cut").state.read_text())["epochs_done"] == 2
    resumed = training.resume(tmp_path / "cut", progress=False)

    full_history = read_csv(RunDir(tmp_path / "full").history)
    cut_history = read_csv(RunDir(tmp_path / "cut").history)
    for key in ("loss", "val_loss", "val_balanced_accuracy"):
        assert [r[key] for r in cut_history] == [r[key] for r in full_history], key
    assert resumed["balanced_accuracy"] == full["balanced_accuracy"]
    assert resumed["confusion_matrix"] == full["confusion_matrix"]


def test_existing_run_folder_is_not_overwritten_without_force(dataset_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    with pytest.raises(EdgelesionError, match="already exists"):
        training.train(dataset_dir, out, TINY, progress=False)
    with pytest.raises(EdgelesionError, match="not an edgelesion run folder"):
        training.train(dataset_dir, out, TINY, force=True, progress=False)
    assert (out / "precious.txt").read_text() == "mine"


def test_force_replaces_a_run_and_no_cache_is_ever_made_inside_the_dataset(dataset_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    training.train(dataset_dir, out, TINY.with_changes(epochs=1), progress=False)
    first = RunDir(out).config.read_text()
    training.train(dataset_dir, out, TINY.with_changes(epochs=1, seed=1), force=True, progress=False)
    assert json.loads(RunDir(out).config.read_text())["config"]["seed"] == 1 != json.loads(first)["config"]["seed"]
    before = snapshot(dataset_dir)
    monkeypatch.setenv("EDGELESION_CACHE", str(dataset_dir / "cache"))
    with pytest.raises(EdgelesionError, match="cache .* is inside the dataset folder"):
        training.train(dataset_dir, tmp_path / "run2", TINY, progress=False)
    assert snapshot(dataset_dir) == before


def test_resume_refuses_changed_data(dataset_dir, tmp_path, monkeypatch):
    training.train(dataset_dir, tmp_path / "run", TINY.with_changes(epochs=1), progress=False)
    (dataset_dir / "nevus" / "img_000.jpg").unlink()
    with pytest.raises(EdgelesionError, match="changed since"):
        training.resume(tmp_path / "run", progress=False)


def test_class_weights_and_no_rebalancing_train_without_augmentation(dataset_dir, tmp_path):
    for method in ("class-weights", "none"):
        training.train(dataset_dir, tmp_path / method, TINY.with_changes(epochs=1, rebalance=method), progress=False)
        assert not RunDir(tmp_path / method).augmentation.exists()
        assert np.isfinite(float(read_csv(RunDir(tmp_path / method).history)[0]["loss"]))


def test_near_duplicates_never_straddle_training_and_validation(dataset_dir, tmp_path):
    """Re-saved, resized copies (other bytes, same lesion) must follow their original's side of the split."""
    import io

    from PIL import Image

    for original in sorted((dataset_dir / "nevus").glob("img_*.jpg")):
        buffer = io.BytesIO()
        Image.open(original).resize((96, 96)).save(buffer, "JPEG", quality=60)
        (dataset_dir / "nevus" / f"resaved_{original.name}").write_bytes(buffer.getvalue())
    training.train(dataset_dir, tmp_path / "run", TINY.with_changes(epochs=1), progress=False)
    run = RunDir(tmp_path / "run")
    near = json.loads(run.audit.read_text())["near_duplicate_groups"]
    assert len(near) >= 10  # the copies were found (two similar originals may share a group)
    side = {r["path"]: "train" for r in read_csv(run.splits / "train.csv")}
    side |= {r["path"]: "val" for r in read_csv(run.splits / "val.csv")}
    for group in near:
        assert len({side[m["path"]] for m in group["members"]}) == 1, group


def test_early_stopping_ends_patience_epochs_after_the_best(dataset_dir, tmp_path):
    config = TINY.with_changes(epochs=6, patience=1, learning_rate=0.05)  # a rate that stops improving fast
    training.train(dataset_dir, tmp_path / "run", config, progress=False)
    state = json.loads(RunDir(tmp_path / "run").state.read_text())
    history = read_csv(RunDir(tmp_path / "run").history)
    assert len(history) == state["epochs_done"]
    scores = [float(r["val_balanced_accuracy"]) for r in history]
    best = int(np.argmax(scores))  # first best, as training keeps the first
    assert state["best_epoch"] == best + 1
    assert len(history) == min(6, best + 1 + 1), "training must stop one epoch after its best, not later or sooner"


def test_a_split_seed_keeps_the_split_while_the_seed_changes_the_training(dataset_dir):
    def val_paths(config: TrainConfig) -> list[str]:
        return [r.relpath for r in training.prepare_data(dataset_dir, config, progress=False).val.records]

    base = val_paths(TINY)
    assert val_paths(TINY.with_changes(seed=TINY.seed + 1)) != base  # the seed alone draws another split
    replicate = TINY.with_changes(seed=TINY.seed + 1, split_seed=TINY.seed)
    assert val_paths(replicate) == base and replicate.fold_split_seed == TINY.seed
    assert TrainConfig.from_dict(replicate.to_dict()) == replicate
    assert TINY.with_changes(split_seed=TINY.seed) == TINY  # the same split written two ways is one recipe


def test_mixup_with_class_weights_trains_and_resumes_to_the_same_result(dataset_dir, tmp_path):
    from edgelesion.data.rebalance import RebalanceMethod
    from edgelesion.train.config import OnlineAugment

    mixed = TINY.with_changes(
        epochs=2, rebalance=RebalanceMethod.CLASS_WEIGHTS, online_augment=OnlineAugment(enabled=True, mixup=0.4)
    )
    full = training.train(dataset_dir, tmp_path / "full", mixed, progress=False)
    with interrupted_at(training, epoch=1), pytest.raises(KeyboardInterrupt):
        training.train(dataset_dir, tmp_path / "cut", mixed, progress=False)
    resumed = training.resume(tmp_path / "cut", progress=False)
    assert resumed["confusion_matrix"] == full["confusion_matrix"]
    history = read_csv(RunDir(tmp_path / "full").history)
    assert [r["loss"] for r in read_csv(RunDir(tmp_path / "cut").history)] == [r["loss"] for r in history]
    training.train(
        dataset_dir, tmp_path / "plain", mixed.with_changes(online_augment=OnlineAugment(enabled=True)), progress=False
    )
    assert read_csv(RunDir(tmp_path / "plain").history)[0]["loss"] != history[0]["loss"]  # the batches were mixed
    assert np.isfinite(float(history[-1]["loss"]))


def test_batches_are_read_from_the_cache_rows_inside_tf_data(dataset_dir):
    from edgelesion._tf import tf
    from edgelesion.data.dataset import load_dataset
    from edgelesion.data.image_rows import as_rows

    data = load_dataset(dataset_dir, Preprocessing(image_size=16), progress=False)
    extra = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 3), np.uint8)  # as Augmentor's rows join them
    rows = data.images.take([5, 0, 9]).concat(as_rows(extra))
    expected = np.concatenate([np.asarray(data.images)[[5, 0, 9]], extra])
    batches = tf.data.Dataset.from_tensor_slices(np.array([4, 0, 2, 3, 1])).batch(2).map(training.image_reader(rows))
    assert np.array_equal(np.concatenate([b.numpy() for b in batches]), expected[[4, 0, 2, 3, 1]])


@pytest.mark.parametrize("one_hot", [False, True])
def test_training_accuracy_is_the_share_of_arg_max_hits_for_labels_and_for_smoothed_one_hot_targets(one_hot):
    """The history's `accuracy` column: compile's "accuracy" as an object, chosen for the targets training feeds."""
    labels = np.array([0, 1, 1])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], np.float32)
    targets = np.eye(3, dtype=np.float32)[labels] * 0.9 + 0.1 / 3 if one_hot else labels
    metric = training.accuracy_metric(one_hot)
    metric.update_state(targets, probabilities)
    assert metric.name == "accuracy" and float(metric.result()) == pytest.approx(2 / 3)
    assert training.one_hot_targets(TINY.with_changes(label_smoothing=0.1)) and not training.one_hot_targets(TINY)
