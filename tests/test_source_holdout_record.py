"""The source-holdout benchmark's record outlives the machine that trained its folds: archived folds pair with the
recipe's same folds, earlier figures are carried and marked, and figures of changed settings never pair."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks import source_holdout
from benchmarks.source_holdout import CANDIDATES, HELD_OUT, RECIPE, collect, kfold_figures
from edgelesion.fileio import write_csv, write_json
from edgelesion.metrics import balanced_accuracy

CLASSES = ["melanoma", "nevus", "vascular lesion"]
CROP = CANDIDATES["centre-60"]
RECORDED_BY = {"git_commit": "abc", "created": "2026-01-01T00:00:00+00:00", "cpu": "test CPU"}


@pytest.fixture(autouse=True)
def few_resamples(monkeypatch):
    """The tests assert the figures' values and what is paired, not their intervals: a small bootstrap will do."""
    monkeypatch.setattr(source_holdout, "paired_difference", partial(source_holdout.paired_difference, resamples=20))
    monkeypatch.setattr(
        source_holdout, "paired_auc_difference", partial(source_holdout.paired_auc_difference, resamples=20)
    )


def _labels(n_per_class: int = 12) -> list[str]:
    return [c for c in CLASSES for _ in range(n_per_class)]


def _archive_fold(folder, config, probabilities: np.ndarray, labels: list[str], sources: list[str]) -> None:
    """An archived fold as `archive_folds` writes it."""
    rows = [
        {"path": f"{label}/img{i}.jpg", "label": label, **dict(zip(CLASSES, map(str, p), strict=True)), "source": s}
        for i, (label, p, s) in enumerate(zip(labels, probabilities, sources, strict=True))
    ]
    write_csv(folder / "predictions.csv", list(rows[0]), [list(row.values()) for row in rows])
    truth = np.array([CLASSES.index(label) for label in labels])
    value = balanced_accuracy(truth, probabilities.argmax(1), list(range(len(CLASSES))))
    write_json(
        folder / "metrics.json",
        {
            "class_names": CLASSES,
            "balanced_accuracy": {"value": value, "ci95": [value - 0.1, value + 0.1]},
            "config": config.to_dict(),
            "recorded_by": RECORDED_BY,
        },
    )


def _probabilities(labels: list[str], wrong_every: int, rng: np.random.Generator) -> np.ndarray:
    """Probabilities whose arg-max is the label except every `wrong_every`-th image."""
    probabilities = rng.uniform(0.0, 0.3, (len(labels), len(CLASSES)))
    for i, label in enumerate(labels):
        right = CLASSES.index(label)
        probabilities[i, (right + 1) % len(CLASSES) if i % wrong_every == 0 else right] += 1.0
    return probabilities / probabilities.sum(1, keepdims=True)


@pytest.fixture
def archive(tmp_path):
    """Recipe folds 0, 1 and 4 archived; the crop's folds 0 and 1 paired with them, fold 3 without its recipe fold,
    and fold 4 trained with settings that are no longer the crop's."""
    rng = np.random.default_rng(0)
    labels = _labels()
    # half of each fold's images from the block; the others score melanoma backwards, so a figure said to be
    # inside the block that took them in would change
    sources = [HELD_OUT if i % 2 else "elsewhere" for i in range(len(labels))]
    folds = {}
    for fold in (0, 1, 3, 4):
        recipe, crop = _probabilities(labels, 3, rng), _probabilities(labels, 5, rng)
        outside = np.array([s != HELD_OUT for s in sources])
        crop[outside, 0] = 1.0 - crop[outside, 0]
        if fold != 3:
            _archive_fold(tmp_path / "recipe" / f"fold-{fold}", RECIPE, recipe, labels, sources)
        changed = CROP.with_changes(learning_rate=CROP.learning_rate / 2) if fold == 4 else CROP
        _archive_fold(tmp_path / "centre-60" / f"fold-{fold}", changed, crop, labels, sources)
        folds[fold] = recipe, crop
    return tmp_path, labels, sources, folds


def test_archived_folds_pair_with_the_recipe_and_earlier_ones_are_carried_out_of_the_pooled_figures(archive, capsys):
    folder, labels, sources, folds = archive
    earlier_fold = {"balanced_accuracy": {"value": 0.7}, "recipe_balanced_accuracy": {"value": 0.71}}
    figures = kfold_figures("centre-60", CROP, folder, {"folds": {"2": earlier_fold}})

    assert list(figures["folds"]) == ["0", "1", "2"]  # fold 4's settings changed: neither paired nor unpaired
    assert "trained with settings that are no longer" in capsys.readouterr().out
    assert figures["unpaired"] == ["3"]
    assert figures["folds"]["2"] == {**earlier_fold, "archived": False}
    truth = np.array([CLASSES.index(label) for label in labels])
    for fold in ("0", "1"):
        recipe, crop = folds[int(fold)]
        expected = balanced_accuracy(truth, crop.argmax(1), [0, 1, 2]) - balanced_accuracy(
            truth, recipe.argmax(1), [0, 1, 2]
        )
        assert figures["folds"][fold]["archived"] is True
        assert figures["folds"][fold]["balanced_accuracy"]["value"] == balanced_accuracy(
            truth, crop.argmax(1), [0, 1, 2]
        )
        assert figures["folds"][fold]["recipe_balanced_accuracy"]["value"] == balanced_accuracy(
            truth, recipe.argmax(1), [0, 1, 2]
        )
        assert figures["folds"][fold]["vs_recipe"]["delta_balanced_accuracy"]["value"] == pytest.approx(expected)
    # pooled over the archived folds alone, melanoma against nevus only on the block's images
    oof = figures["out_of_fold"]
    assert oof["folds"] == ["0", "1"]
    inside = np.array([s == HELD_OUT and label != "vascular lesion" for s, label in zip(sources, labels, strict=True)])
    crop_scores = np.concatenate([folds[0][1][inside, 0], folds[1][1][inside, 0]])
    is_melanoma = np.concatenate([truth[inside] == 0] * 2)
    assert oof["auc_in_block"] == pytest.approx(roc_auc_score(is_melanoma, crop_scores))


def test_a_candidate_fold_validated_on_other_images_than_the_recipe_fold_is_refused(archive):
    folder = archive[0]
    renamed = folder / "centre-60" / "fold-0" / "predictions.csv"
    renamed.write_text(renamed.read_text().replace("img0.jpg", "other.jpg"))
    with pytest.raises(SystemExit, match="validated on other images"):
        kfold_figures("centre-60", CROP, folder, {})


def test_a_record_on_a_machine_without_the_runs_keeps_earlier_figures_marked_and_drops_changed_candidates(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(source_holdout, "RUNS", tmp_path / "no-runs-here")
    record_folder = tmp_path / "source_holdout_kind"
    earlier_provenance = {"git_commit": "def", "created": "2026-02-02T00:00:00+00:00", "machine": {"cpu": "old CPU"}}
    held_out = {"held_out": {"alert_sensitivity": {"value": 0.6}}}
    # fold 1 was itself carried into the earlier record from one before it: it keeps that record's commit
    first = {"git_commit": "0ld", "created": "2025-12-12T00:00:00+00:00", "cpu": "older CPU"}
    kfold = {
        "folds": {
            "0": {"balanced_accuracy": {"value": 0.7}},
            "1": {"balanced_accuracy": {"value": 0.6}, "recorded_by": first},
        },
        "unpaired": [],
        "out_of_fold": None,
    }
    write_json(
        record_folder.with_suffix(".json"),
        {
            "provenance": earlier_provenance,
            "runs": {
                "centre-60": {"config": CROP.to_dict(), "held_out": held_out, "kfold": kfold},
                "colour": {"config": RECIPE.to_dict(), "held_out": held_out, "kfold": None},
                "recipe": {"config": RECIPE.to_dict(), "held_out": {"recorded_by": first, **held_out}, "kfold": None},
            },
        },
    )

    results = collect(record_folder)

    assert "colour" not in results  # its settings are no longer the candidate's
    assert "dropping the earlier record's colour" in capsys.readouterr().out
    carried = results["centre-60"]
    by = {"git_commit": "def", "created": "2026-02-02T00:00:00+00:00", "cpu": "old CPU"}
    assert carried["held_out"] == {"recorded_by": by, **held_out}
    assert carried["kfold"]["folds"]["0"] == {"balanced_accuracy": {"value": 0.7}, "recorded_by": by, "archived": False}
    assert carried["kfold"]["folds"]["1"]["recorded_by"] == first
    assert results["recipe"]["held_out"]["recorded_by"] == first
