"""The audit finds duplicates, label conflicts and train/test overlap."""

from __future__ import annotations

import io
import shutil

from PIL import Image

from edgelesion.data.audit import ConflictPolicy, audit_dataset, find_overlaps, format_audit
from edgelesion.data.dataset import load_dataset
from edgelesion.preprocessing import Preprocessing
from tests.conftest import write_dataset

PRE = Preprocessing(image_size=16)


def test_synthetic_fixture_has_no_duplicates(dataset_dir):
    report = audit_dataset(load_dataset(dataset_dir, PRE, progress=False))
    assert report.groups == [] and len(report.kept) == 36


def test_conflicting_copies_are_found_and_excluded_by_default(dataset_dir):
    shutil.copy(dataset_dir / "melanoma" / "img_000.jpg", dataset_dir / "nevus" / "copy.jpg")
    data = load_dataset(dataset_dir, PRE, progress=False)
    report = audit_dataset(data)
    assert len(report.conflicts) == 1
    assert report.conflicts[0].labels == ("melanoma", "nevus")
    kept = {data.records[i].relpath for i in report.kept}
    assert "melanoma/img_000.jpg" not in kept and "nevus/copy.jpg" not in kept
    assert {e.relpath for e in report.excluded} == {"melanoma/img_000.jpg", "nevus/copy.jpg"}
    assert report.to_dict()["conflicting_groups"][0]["labels"] == ["melanoma", "nevus"]


def test_a_copy_filed_under_three_labels_is_reported(dataset_dir):
    shutil.copy(dataset_dir / "melanoma" / "img_000.jpg", dataset_dir / "nevus" / "copy.jpg")
    shutil.copy(dataset_dir / "melanoma" / "img_000.jpg", dataset_dir / "basal cell carcinoma" / "copy.jpg")
    report = audit_dataset(load_dataset(dataset_dir, PRE, progress=False))
    assert "groups with conflicting labels: 1 — basal cell carcinoma / melanoma / nevus: 1" in format_audit(report)


def test_keep_policy_keeps_one_copy_per_label_in_one_group(dataset_dir):
    shutil.copy(dataset_dir / "melanoma" / "img_000.jpg", dataset_dir / "nevus" / "copy.jpg")
    shutil.copy(dataset_dir / "melanoma" / "img_000.jpg", dataset_dir / "nevus" / "copy2.jpg")
    data = load_dataset(dataset_dir, PRE, progress=False)
    report = audit_dataset(data, policy=ConflictPolicy.KEEP)
    kept = {data.records[i].relpath for i in report.kept}
    assert {"melanoma/img_000.jpg", "nevus/copy.jpg"} <= kept and "nevus/copy2.jpg" not in kept
    ids = {data.records[i].relpath: report.group_ids[i] for i in range(len(data.records))}
    assert ids["melanoma/img_000.jpg"] == ids["nevus/copy.jpg"]


def test_same_label_identical_copies_are_kept_once(dataset_dir):
    shutil.copy(dataset_dir / "melanoma" / "img_003.jpg", dataset_dir / "melanoma" / "zz_copy.jpg")
    data = load_dataset(dataset_dir, PRE, progress=False)
    report = audit_dataset(data)
    assert [g.kind for g in report.groups] == ["exact"] and not report.conflicts
    assert [e.relpath for e in report.excluded] == ["melanoma/zz_copy.jpg"]
    assert len(report.kept) == 36


def test_resaved_and_resized_copy_is_a_near_duplicate(dataset_dir):
    original = Image.open(dataset_dir / "nevus" / "img_004.jpg")
    buffer = io.BytesIO()
    original.resize((96, 96)).save(buffer, "JPEG", quality=60)
    (dataset_dir / "nevus" / "resaved.jpg").write_bytes(buffer.getvalue())
    data = load_dataset(dataset_dir, PRE, progress=False)
    report = audit_dataset(data)
    assert len(report.groups) == 1 and report.groups[0].kind == "near"
    members = {data.records[i].relpath for i in report.groups[0].members}
    assert members == {"nevus/img_004.jpg", "nevus/resaved.jpg"}


def test_test_folder_overlap_is_reported_with_both_labels(tmp_path):
    train = load_dataset(write_dataset(tmp_path / "train", per_class=5), PRE, progress=False)
    test_root = write_dataset(tmp_path / "test", per_class=3, seed=99)
    shutil.copy(tmp_path / "train" / "melanoma" / "img_001.jpg", test_root / "nevus" / "leaked.jpg")
    test = load_dataset(test_root, PRE, progress=False)
    overlaps = find_overlaps(test, train.sha256, train.phash)
    assert len(overlaps) == 1 and overlaps[0].kind == "exact"
    assert test.records[overlaps[0].test_index].relpath == "nevus/leaked.jpg"
    assert [train.records[j].relpath for j in overlaps[0].train_indices] == ["melanoma/img_001.jpg"]


def test_test_set_drops_its_own_conflicts_and_the_training_overlap(tmp_path):
    from edgelesion.data.audit import prepare_test_set

    train = load_dataset(write_dataset(tmp_path / "train", per_class=4), PRE, progress=False)
    index = [
        {"path": r.relpath, "label": r.label, "sha256": s, "phash": f"{p:016x}"}
        for r, s, p in zip(train.records, train.sha256, train.phash)
    ]
    test_root = write_dataset(tmp_path / "test", per_class=3, seed=5)
    shutil.copy(tmp_path / "train" / "nevus" / "img_000.jpg", test_root / "melanoma" / "seen.jpg")
    shutil.copy(test_root / "nevus" / "img_001.jpg", test_root / "melanoma" / "conflict.jpg")
    scoring = prepare_test_set(load_dataset(test_root, PRE, progress=False), index, ConflictPolicy.EXCLUDE, 4)
    assert [o["test_path"] for o in scoring.overlaps] == ["melanoma/seen.jpg"]
    assert scoring.overlaps[0]["labels_differ"] is True
    assert {e.relpath for e in scoring.excluded} == {"melanoma/conflict.jpg", "nevus/img_001.jpg"}
    assert len(scoring.clean.records) == 9 - 1 and len(scoring.with_overlap.records) == 9
