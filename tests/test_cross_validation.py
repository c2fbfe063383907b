"""Cross-validation: every kept image scored once out of fold, folds resumable and mergeable as they finish."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from conftest import write_sources_csv

from edgelesion.data import image_cache
from edgelesion.data.metadata import MetadataSpec
from edgelesion.errors import EdgelesionError
from edgelesion.export.exporting import export_run
from edgelesion.export.options import ExportOptions
from edgelesion.fileio import read_csv, read_json, write_json
from edgelesion.preprocessing import Preprocessing
from edgelesion.thresholds import melanoma_threshold
from edgelesion.train.config import TrainConfig
from edgelesion.train.cross_validation import CvDir, cross_validate, merge_cv, recipe_cv_figures

CONFIG = TrainConfig(
    model="seed-simple",
    epochs=2,
    batch_size=8,
    folds=3,
    min_support=2,
    rebalance="none",
    preprocessing=Preprocessing(image_size=24),
)


def _oof(cv: CvDir, fold: int) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in read_csv(cv.oof_predictions) if r["fold"] == str(fold)]
    classes = ["basal cell carcinoma", "melanoma", "nevus"]
    return (
        np.array([[float(r[c]) for c in classes] for r in rows]),
        np.array([classes.index(r["label"]) for r in rows]),
    )


def test_folds_run_in_parts_and_merge_into_out_of_fold_figures(dataset_dir, tmp_path, capsys, monkeypatch):
    decoded, decode = [], image_cache._decode
    monkeypatch.setattr(image_cache, "_decode", lambda path, pre: decoded.append(path) or decode(path, pre))
    cv = CvDir(tmp_path / "cv")
    sources = MetadataSpec(write_sources_csv(dataset_dir, tmp_path / "sources.csv"), source_column="source")
    partial = cross_validate(dataset_dir, cv.root, CONFIG, folds=[0, 1], metadata=sources, progress=False)
    assert partial["finished_folds"] == [0, 1] and not partial["complete"]
    assert "2 of 3 folds finished" in cv.table.read_text()
    # fold 0's alert threshold comes from fold 1's predictions alone, never from its own
    probabilities, labels = _oof(cv, 1)
    assert partial["per_fold"][0]["alert_threshold"] == melanoma_threshold(probabilities, labels, 1)["threshold"]

    kept_model = cv.fold(0).best_model.stat().st_mtime_ns
    with pytest.raises(EdgelesionError, match="another metadata CSV"):  # folds of other metadata never merge
        cross_validate(dataset_dir, cv.root, CONFIG, progress=False)
    done = cross_validate(dataset_dir, cv.root, CONFIG, metadata=sources, progress=False)  # runs fold 2 only
    assert cv.fold(0).best_model.stat().st_mtime_ns == kept_model
    assert done["complete"] and done["finished_folds"] == [0, 1, 2]
    rows = read_csv(cv.oof_predictions)
    kept = [r for r in read_csv(cv.fold(0).data_index) if r["status"] == "kept"]
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in kept)  # every kept image exactly once
    assert sorted(decoded) == sorted(set(decoded)) and len(decoded) == 36  # every file decoded once, for all folds
    assert all(r["source"] == f"clinic-{'ab'[int(r['path'][-7:-4]) % 2]}" for r in rows)
    # read within each source: here no source holds 10 melanomas, so each is named, and thresholds are pooled
    within = done["within_source_out_of_fold"]
    assert within["pooled"]["n_positive"] == sum(r["label"] == "melanoma" for r in rows)
    assert set(within["not_scored"]) == {"clinic-a", "clinic-b"}
    assert [rule.split(":")[0] for rule in done["alert_threshold_rules"]] == ["pooled"]
    values = [done["per_fold"][k]["balanced_accuracy"] for k in range(3)]
    assert done["summary"]["balanced_accuracy"]["mean"] == pytest.approx(np.mean(values))
    assert done["summary"]["balanced_accuracy"]["sd"] == pytest.approx(np.std(values, ddof=1))
    # beside the best epoch's (chosen on the fold itself), the last epoch's figure, which no choice touched
    for k in range(3):
        history = read_json(cv.fold(k).state)["history"]
        row = done["per_fold"][k]
        assert row["last_epoch_balanced_accuracy"] == history[-1]["val_balanced_accuracy"]
        assert row["balanced_accuracy"] == pytest.approx(max(h["val_balanced_accuracy"] for h in history))
    assert "balanced accuracy (last epoch)" in cv.table.read_text()
    for path in (cv.chart, cv.roc, cv.table, cv.summary):
        assert path.is_file(), path
    assert merge_cv(cv.root)["summary"] == read_json(cv.summary)["summary"]

    # a fold exported for phones carries its recipe's cross-validation into bundle.json and the model card
    bundle = export_run(
        cv.fold(0).root, tmp_path / "bundle", ExportOptions(artifacts=("float32.onnx",)), progress=False
    )
    figures = bundle["cross_validation"]
    assert figures["finished_folds"] == [0, 1, 2] and figures["folds_changed_since_merge"] == []
    assert figures["this_run_is_a_fold"]
    assert figures["summary"]["balanced_accuracy"] == done["summary"]["balanced_accuracy"]
    card = (tmp_path / "bundle" / "MODEL_CARD.md").read_text()
    assert "Cross-validation of this recipe (3 of 3 leak-free folds; this model is its fold 0)" in card
    assert f"balanced accuracy: {done['summary']['balanced_accuracy']['mean']:.3f} ± " in card
    assert "out-of-fold, within each source" in card and "not scored alone: clinic-a" in card
    # a fold whose predictions changed after the merge is named as not in the figures; a newer file time alone
    # (a copy, or the same scores written again) is not a change
    predictions = cv.fold(1).evaluation / "validation" / "predictions.csv"
    later = cv.summary.stat().st_mtime + 10
    os.utime(predictions, (later, later))
    assert recipe_cv_figures(cv.root, cv.fold(0).root)["folds_changed_since_merge"] == []
    lines = predictions.read_text().splitlines()
    predictions.write_text("\n".join([*lines[:-1], lines[-1].replace("0", "1", 1)]) + "\n")
    assert recipe_cv_figures(cv.root, cv.fold(0).root)["folds_changed_since_merge"] == [1]
    # a merged fold whose folder is gone is named, not a reason to refuse the export
    moved = cv.fold(2).root.rename(tmp_path / "fold-2-aside")
    assert recipe_cv_figures(cv.root, cv.fold(0).root)["folds_changed_since_merge"] == [1, 2]
    moved.rename(cv.fold(2).root)
    # a merge recorded before the hashes were: the file times decide
    summary = read_json(cv.summary)
    del summary["predictions_sha256"]
    write_json(cv.summary, summary)
    later = cv.summary.stat().st_mtime + 10
    os.utime(cv.fold(2).evaluation / "validation" / "predictions.csv", (later, later))
    assert recipe_cv_figures(cv.root, cv.fold(0).root)["folds_changed_since_merge"] == [2]
    # a merged fold whose predictions are gone (removed, or being trained again) is named too
    predictions.rename(predictions.with_suffix(".moved"))
    assert recipe_cv_figures(cv.root, cv.fold(0).root)["folds_changed_since_merge"] == [1, 2]
    predictions.with_suffix(".moved").rename(predictions)
    # a fold copied without its checkpoints still merges, its epochs unknown
    shutil.rmtree(cv.fold(2).checkpoints)
    assert merge_cv(cv.root)["per_fold"][2]["last_epoch_balanced_accuracy"] is None
    # a CV around the run that no longer has its merged figures: the bundle goes without them, with a note
    cv.summary.unlink()
    assert (
        export_run(cv.fold(0).root, tmp_path / "bundle2", ExportOptions(artifacts=("float32.onnx",)), progress=False)[
            "cross_validation"
        ]
        is None
    )
    assert "note: the model card leaves out the cross-validation" in capsys.readouterr().out


def test_export_refuses_a_cross_validation_of_another_recipe(dataset_dir, trained_run, tmp_path):
    cv = CvDir(tmp_path / "cv")
    cross_validate(dataset_dir, cv.root, CONFIG.with_changes(folds=2, epochs=1), folds=[0], progress=False)
    with pytest.raises(EdgelesionError, match="cross-validated other settings than the run"):
        export_run(
            trained_run,
            tmp_path / "bundle",
            ExportOptions(artifacts=("float32.onnx",), cv_dirs=(cv.root,)),
            progress=False,
        )
    assert not (tmp_path / "bundle").exists()


def test_a_cv_folder_refuses_other_settings_and_foreign_folders(dataset_dir, tmp_path):
    cv = CvDir(tmp_path / "cv")
    cross_validate(dataset_dir, cv.root, CONFIG.with_changes(epochs=1), folds=[0], progress=False)
    with pytest.raises(EdgelesionError, match=r"other settings \(epochs differ\)"):
        cross_validate(dataset_dir, cv.root, CONFIG, folds=[0], progress=False)
    # a cv.json written before a setting existed still matches when that setting keeps its default
    spec = read_json(cv.spec)
    del spec["config"]["online_augment"]["pixel_noise"]
    write_json(cv.spec, spec)
    assert cross_validate(dataset_dir, cv.root, CONFIG.with_changes(epochs=1), folds=[0], progress=False)[
        "finished_folds"
    ] == [0]
    # ... but not the reduced-decode margin, whose default changed (4 before it was recorded, 3 now)
    del spec["config"]["preprocessing"]["jpeg_draft_margin"]
    write_json(cv.spec, spec)
    with pytest.raises(EdgelesionError, match=r"other settings \(preprocessing differ\)"):
        cross_validate(dataset_dir, cv.root, CONFIG.with_changes(epochs=1), folds=[0], progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(EdgelesionError, match="not a cross-validation folder"):
        cross_validate(dataset_dir, tmp_path / "mine", CONFIG, folds=[0], force=True, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(EdgelesionError, match="folds \\[3\\] do not exist"):
        cross_validate(dataset_dir, cv.root, CONFIG, folds=[3], progress=False)
