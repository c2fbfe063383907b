"""Where images come from: the metadata CSV, groups in splits, within-source figures, the threshold rule and
leave-source-out cross-validation."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image

from edgelesion.cli import main
from edgelesion.data.audit import audit_dataset
from edgelesion.data.confounding import border_probe
from edgelesion.data.dataset import load_dataset
from edgelesion.data.metadata import MetadataSpec
from edgelesion.data.splits import group_folds
from edgelesion.errors import EdgelesionError
from edgelesion.preprocessing import Preprocessing
from edgelesion.source_figures import within_source_figures
from edgelesion.thresholds import alert_threshold

PRE = Preprocessing(image_size=32)
WARM, COOL, NEUTRAL = (70, 0, -50), (-50, 0, 70), (0, 0, 0)


def write_sourced_set(root: Path, plan: dict[str, list[tuple[str, int, tuple[int, int, int]]]], seed: int = 0) -> Path:
    """Class folders of synthetic images; `plan` maps each source to (class, count, colour cast); sources.csv beside
    the folder maps each path to its source and to a lesion id shared by consecutive pairs of images."""
    rng = np.random.default_rng(seed)
    rows = []
    for source, items in plan.items():
        for label, count, cast in items:
            (root / "data" / label).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                relpath = f"{label}/{source}_{i:03d}.jpg"
                synthetic_image(rng, cast).save(root / "data" / relpath, quality=95)
                rows.append({"path": relpath, "source": source, "lesion_id": f"{source}-{label}-{i // 2}"})
    with open(root / "sources.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "source", "lesion_id"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "data"


def test_metadata_gives_sources_and_groups_and_groups_never_straddle_a_split(tmp_path):
    data = write_sourced_set(
        tmp_path,
        {"a": [("melanoma", 12, WARM), ("nevus", 12, COOL)], "b": [("melanoma", 12, COOL), ("nevus", 12, WARM)]},
    )
    spec = MetadataSpec(tmp_path / "sources.csv", source_column="source", group_columns=("lesion_id",))
    dataset = load_dataset(data, PRE, progress=False, metadata=spec)
    assert dataset.sources == [r.relpath.split("/")[1].split("_")[0] for r in dataset.records]
    report = audit_dataset(dataset)
    folds = group_folds(dataset.labels, report.group_ids, 3, seed=0)
    lesion = {r.relpath: r.groups[0] for r in dataset.records}
    for group in set(lesion.values()):
        members = [i for i, r in enumerate(dataset.records) if lesion[r.relpath] == group]
        assert len(members) == 2 and len({folds[i] for i in members}) == 1
    # the metadata is part of the data fingerprint: another source for one image is other data
    before = dataset.fingerprint()
    text = (tmp_path / "sources.csv").read_text().replace("melanoma/a_000.jpg,a,", "melanoma/a_000.jpg,b,")
    (tmp_path / "sources.csv").write_text(text)
    assert load_dataset(data, PRE, progress=False, metadata=spec).fingerprint() != before


def test_flat_folder_with_one_hot_labels_keyed_by_image_id(tmp_path, capsys):
    rng = np.random.default_rng(1)
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = []
    for i in range(8):
        synthetic_image(rng, WARM if i % 2 else COOL).save(flat / f"ISIC_{i:07d}.jpg")
        rows.append(f"ISIC_{i:07d},{float(i % 2)},{float(1 - i % 2)},site{i % 2}")
    rows.append("ISIC_9999999,1.0,0.0,site0")  # a row without an image
    synthetic_image(rng, WARM).save(flat / "stray.jpg")  # an image without a row
    (tmp_path / "gt.csv").write_text("image,MEL,NV,site\n" + "\n".join(rows) + "\n")
    spec = MetadataSpec(tmp_path / "gt.csv", source_column="site", label_columns=("MEL=melanoma", "NV=nevus"))
    dataset = load_dataset(flat, PRE, progress=False, metadata=spec)
    assert dataset.classes == ["melanoma", "nevus"]
    assert {r.relpath: r.label for r in dataset.records}["ISIC_0000001.jpg"] == "melanoma"
    assert [s.relpath for s in dataset.skipped] == ["stray.jpg"]
    assert dataset.unmatched_rows == ["ISIC_9999999"]
    out = capsys.readouterr().out
    assert "1 rows of" in out and "1 images under" in out


@pytest.mark.parametrize(
    "csv_text, spec_changes, message",
    [
        ("path,source\n", {"source_column": "source"}, "no rows"),
        ("path,site\nmelanoma/a.jpg,x\n", {"source_column": "source"}, "--source-column source: no such column"),
        ("path,source\nmelanoma/a.jpg,x\nmelanoma/a.jpg,y\n", {"source_column": "source"}, "has a second row"),
        ("path,source\nmelanoma/a.jpg,\n", {"source_column": "source"}, "source column 'source' is empty"),
        ("file,source\nmelanoma/a.jpg,x\n", {}, "none of the key columns"),
        ("image,MEL,NV\nISIC_1,1,1\n", {"label_columns": ("MEL", "NV")}, "2 of the label columns are 1"),
    ],
)
def test_bad_metadata_gets_a_clear_error(tmp_path, csv_text, spec_changes, message):
    (tmp_path / "meta.csv").write_text(csv_text)
    with pytest.raises(EdgelesionError, match=message):
        load_dataset(tmp_path, PRE, progress=False, metadata=MetadataSpec(tmp_path / "meta.csv", **spec_changes))


def test_within_source_figures_part_from_pooled_ones_when_the_source_gives_the_class_away():
    rng = np.random.default_rng(0)
    # source "easy": melanomas score high, nevi low (the source's look); source "mixed": the model cannot tell
    labels = np.r_[np.zeros(40), np.ones(40), np.zeros(30), np.ones(30)].astype(int)  # 0 melanoma, 1 nevus
    sources = ["easy"] * 80 + ["mixed"] * 60
    melanoma_p = np.r_[rng.uniform(0.7, 1, 40), rng.uniform(0, 0.3, 40), rng.uniform(0, 1, 60)]
    probabilities = np.stack([melanoma_p, 1 - melanoma_p], axis=1)
    figures = within_source_figures(probabilities, labels, ["melanoma", "nevus"], sources, "melanoma", ["nevus"], 0.5)
    pooled, mixed = figures["pooled"]["lookalikes"]["nevus"]["auc"], figures["sources"]["mixed"]["lookalikes"]["nevus"]
    assert pooled["value"] > 0.85 and mixed["auc"]["ci95"][1] < pooled["value"]
    assert set(figures["sources"]) == {"easy", "mixed"}
    assert any("inside source mixed" in line for line in figures["parting"])
    assert not any("inside source easy" in line for line in figures["parting"])
    # the threshold: within the sources holding both classes (all of them here), and pooled without sources
    within = alert_threshold(probabilities, labels, 0, 0.9, sources=sources, lookalikes=[1])
    pooled_rule = alert_threshold(probabilities, labels, 0, 0.9)
    assert within["rule"] == "within-source" and pooled_rule["rule"] == "pooled"
    only_mixed = alert_threshold(probabilities[80:], labels[80:], 0, 0.9)["threshold"]
    with_one_source = alert_threshold(
        probabilities, labels, 0, 0.9, sources=["easy"] * 40 + ["nevi only"] * 40 + ["mixed"] * 60, lookalikes=[1]
    )
    assert with_one_source["rule_sources"] == ["mixed"] and with_one_source["threshold"] == only_mixed


def test_a_colour_cast_that_decides_the_class_is_flagged_and_fails_leave_source_out_and_the_model_card_says_so(
    tmp_path, capsys, trained_run
):
    """In the training sources, melanomas come from a warm-cast clinic and nevi from a cool one; in the held-out
    clinic the cast says the opposite. The audit names the confound, the held-out source exposes the model that
    learned the cast while its own validation split praises it, and a bundle of the recipe carries both figures."""
    data = write_sourced_set(
        tmp_path,
        {
            "warm-clinic": [("melanoma", 18, WARM)],
            "cool-clinic": [("nevus", 18, COOL)],
            "new-clinic": [("melanoma", 10, COOL), ("nevus", 10, WARM)],
        },
    )
    # one warm-clinic melanoma is a lesion also photographed in the new clinic: it must leave training
    csv_file = tmp_path / "sources.csv"
    csv_file.write_text(csv_file.read_text().replace("warm-clinic-melanoma-0\n", "new-clinic-melanoma-0\n", 1))
    meta = ["--metadata", str(csv_file), "--source-column", "source", "--group-columns", "lesion_id"]
    assert main(["audit", "--data", str(data), "--out", str(tmp_path / "audit"), *meta]) == 0
    assert "WARNING: melanoma / nevus: the source alone tells them apart" in capsys.readouterr().out
    assert (tmp_path / "audit" / "class_by_source.png").stat().st_size > 0
    # the pixel probe sees the cast in the clinics where it decides the class, with no metadata at all
    dataset = load_dataset(data, PRE, progress=False)
    trained_clinics = np.array(["new-clinic" not in r.relpath for r in dataset.records])
    probes, _ = border_probe(
        dataset.images[trained_clinics],
        dataset.labels[trained_clinics],
        np.arange(trained_clinics.sum()),
        dataset.classes,
        "melanoma",
        ["nevus"],
    )
    assert probes[0].flagged

    small = [
        "--model",
        "seed-dropout",
        "--image-size",
        "32",
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--folds",
        "3",
        "--rebalance",
        "none",
        "--min-support",
        "2",
    ]
    cv = tmp_path / "lso"
    assert main(["cv", "--leave-source-out", "--data", str(data), "--out", str(cv), *small, *meta]) == 0
    printed = capsys.readouterr().out
    assert "source 'warm-clinic' is not held out" in printed
    from edgelesion.fileio import read_csv, read_json

    summary = read_json(cv / "cv_summary.json")
    assert summary["finished"] == ["new-clinic"]
    row = summary["per_source"]["new-clinic"]
    held_auc, val_auc = (row[k]["lookalikes"]["nevus"]["auc"]["value"] for k in ("held_out", "validation"))
    assert val_auc > 0.9 and held_auc < 0.5
    fold = cv / "source-new-clinic"
    trained_on = {r["path"] for r in read_csv(fold / "splits" / "train.csv") + read_csv(fold / "splits" / "val.csv")}
    assert not any("new-clinic" in path for path in trained_on) and len(trained_on) == 35
    assert "melanoma/warm-clinic_000.jpg" not in trained_on and row["training_images_removed_for_groups"] == 1
    excluded = {r["path"]: r["reason"] for r in read_csv(fold / "splits" / "excluded.csv")}
    assert "held-out source" in excluded["melanoma/warm-clinic_000.jpg"]
    assert len(read_csv(fold / "splits" / "held_out.csv")) == 20
    assert "held-out source" in (cv / "cv_summary.md").read_text()
    # merging again gives the same table; a k-fold merge of this folder is refused with the right command
    assert main(["cv", "--merge-only", "--leave-source-out", "--out", str(cv)]) == 0
    assert main(["cv", "--merge-only", "--out", str(cv)]) == 2
    assert "--leave-source-out" in capsys.readouterr().err

    # the recipe on every source (fold 0 of its k-fold CV), exported with both cross-validations in the card
    k_fold, bundle = tmp_path / "kfold", tmp_path / "bundle"
    assert main(["cv", "--data", str(data), "--out", str(k_fold), "--only-folds", "0", *small, *meta]) == 0
    export = ["export", str(k_fold / "fold-0"), "--artifacts", "float32.onnx", "--cv", str(cv), "--cv", str(k_fold)]
    assert main([*export, "--out", str(bundle)]) == 0
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["leave_source_out"]["per_source"] == summary["per_source"]
    assert manifest["leave_source_out"]["changed_since_merge"] == []
    assert manifest["cross_validation"]["finished_folds"] == [0]
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "## Cross-validation of this recipe (1 of 3 leak-free folds; this model is its fold 0)" in card
    assert "## Sources never trained on (this recipe's leave-source-out cross-validation: 1 of 1 sources" in card
    assert (
        f"- held out new-clinic (20 images), melanoma against nevus: AUC {held_auc:.3f} "
        f"[{row['held_out']['lookalikes']['nevus']['auc']['ci95'][0]:.3f}" in card
    )
    assert f"(on the training sources' validation split: {val_auc:.3f}" in card
    assert "- not held out: warm-clinic" in card
    # the fold that held the clinic out exports with its own folder, and its card says so
    own = ["export", str(fold), "--artifacts", "float32.onnx", "--cv", str(cv), "--out", str(tmp_path / "own")]
    assert main(own) == 0
    own_card = (tmp_path / "own" / "MODEL_CARD.md").read_text()
    assert "; this model holds out new-clinic)" in own_card and "Source new-clinic was held out of training" in own_card
    assert main([*own[:-2], "--cv", str(k_fold), "--out", str(tmp_path / "mixed")]) == 2
    assert "never saw source 'new-clinic', which every fold of" in capsys.readouterr().err
    # a fold scored again after the merge is named, not silently reported with the old figures
    metrics = fold / "evaluation" / "held_out_source" / "metrics.json"
    metrics.write_text(json.dumps(json.loads(metrics.read_text()), indent=4))
    assert main([*export, "--out", str(tmp_path / "later")]) == 0
    assert (
        "sources ['new-clinic'] finished, changed or were removed after these figures were merged"
        in (tmp_path / "later" / "MODEL_CARD.md").read_text()
    )
    # a merge from before it recorded hashes: file times decide; and a merged fold whose metrics are gone is named
    from edgelesion.train.leave_source_out import recipe_leave_source_out_figures

    def changed() -> list[str]:
        return recipe_leave_source_out_figures(cv, k_fold / "fold-0")["changed_since_merge"]

    merged = read_json(cv / "cv_summary.json")
    del merged["metrics_sha256"]
    (cv / "cv_summary.json").write_text(json.dumps(merged))
    assert changed() == []
    later = (cv / "cv_summary.json").stat().st_mtime + 10
    os.utime(metrics, (later, later))
    assert changed() == ["new-clinic"]
    kept = metrics.read_bytes()
    metrics.unlink()
    assert changed() == ["new-clinic"]
    metrics.write_bytes(kept)
    os.utime(metrics, (later - 20, later - 20))  # as merged again
    assert changed() == []
    # a merged fold whose whole folder was moved away (to train it again) is named in the card, not a failed export
    fold.rename(tmp_path / "moved-aside")
    assert changed() == ["new-clinic"]
    assert main([*export, "--out", str(tmp_path / "moved")]) == 0
    assert (
        "sources ['new-clinic'] finished, changed or were removed" in (tmp_path / "moved" / "MODEL_CARD.md").read_text()
    )
    (tmp_path / "moved-aside").rename(fold)
    # one folder of each kind; and only the run's own recipe
    assert main([*export, "--cv", str(cv), "--out", str(tmp_path / "twice")]) == 2
    assert "are both leave-source-out: give one of each kind" in capsys.readouterr().err
    assert main(["export", str(k_fold / "fold-0"), "--cv", str(k_fold / "fold-0"), "--out", str(tmp_path / "x")]) == 2
    assert "is not a cross-validation folder (no cv.json)" in capsys.readouterr().err
    assert main(["export", str(trained_run), "--cv", str(cv), "--out", str(tmp_path / "other")]) == 2
    assert "cross-validated other settings than the run" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("twice", "x", "other", "mixed"))


def test_leave_source_out_without_sources_is_refused(tmp_path, dataset_dir, capsys):
    assert main(["cv", "--leave-source-out", "--data", str(dataset_dir), "--out", str(tmp_path / "cv")]) == 2
    assert "needs each image's source" in capsys.readouterr().err
    assert main(["train", "--data", str(dataset_dir), "--out", str(tmp_path / "r"), "--source-column", "x"]) == 2
    assert "pass it with --metadata" in capsys.readouterr().err


def test_evaluate_reads_a_test_folder_within_its_sources_and_the_validation_split_within_the_runs(
    trained_run, tmp_path
):
    from conftest import write_dataset, write_sources_csv

    from edgelesion.fileio import read_csv
    from edgelesion.train.evaluation import evaluate_run

    test = write_dataset(tmp_path / "test", per_class=12, seed=7)
    spec = MetadataSpec(write_sources_csv(test, tmp_path / "test.csv"), source_column="source")
    metrics = evaluate_run(trained_run, test, metadata=spec)
    assert metrics["within_source"]["pooled"]["n_positive"] == metrics["melanoma_sensitivity"]["n"]
    written = next((trained_run / "evaluation").glob("test-test-*"))
    rows = read_csv(written / "predictions.csv")
    assert {row["source"] for row in rows} == {"clinic-a", "clinic-b"}
    validation = evaluate_run(trained_run)  # the run's own metadata: its validation images keep their sources
    assert set(validation["within_source"]["not_scored"]) == {"clinic-a", "clinic-b"}
    assert validation["melanoma_alert"]["rule"] == "pooled"


def test_a_run_refuses_to_resume_or_be_scored_with_a_changed_metadata_csv(tmp_path):
    from conftest import interrupted_at

    from edgelesion.train import training
    from edgelesion.train.config import TrainConfig
    from edgelesion.train.evaluation import evaluate_run

    data = write_sourced_set(tmp_path, {"a": [("melanoma", 8, WARM), ("nevus", 8, COOL)]})
    spec = MetadataSpec(tmp_path / "sources.csv", source_column="source")
    config = TrainConfig(epochs=2, batch_size=8, folds=2, min_support=2, preprocessing=PRE, rebalance="none")
    with interrupted_at(training, 1), pytest.raises(KeyboardInterrupt):
        training.train(data, tmp_path / "run", config, metadata=spec, progress=False)
    csv_file = tmp_path / "sources.csv"
    original = csv_file.read_bytes()
    csv_file.write_bytes(original.replace(b",a,", b",b,", 1))
    with pytest.raises(EdgelesionError, match="changed since"):
        training.resume(tmp_path / "run")
    csv_file.write_bytes(original)
    training.resume(tmp_path / "run")
    csv_file.write_bytes(original.replace(b",a,", b",b,", 1))
    with pytest.raises(EdgelesionError, match="changed since"):
        evaluate_run(tmp_path / "run")
