"""Class and acquisition source going together is found: by source counts, and from border pixels alone."""

from __future__ import annotations

import json

import numpy as np

from edgelesion.data.confounding import (
    PROBE_AUC_WARNING,
    SOURCE_AUC_WARNING,
    border_features,
    border_probe,
    class_by_source,
    confounding_to_dict,
    format_confounding,
    source_confounding,
)
from edgelesion.plots import class_by_source_chart

CLASSES = ["melanoma", "nevus", "seborrheic keratosis"]
SIZE, RING = 32, 4  # the default band, 1/8 of 32 pixels


def framed_images(rng: np.random.Generator, frames: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Noisy images whose ring is coloured `frames[i]` and whose inside is coloured `centres[i]` (RGB offsets)."""
    images = rng.normal(120, 20, (len(frames), SIZE, SIZE, 3))
    inside = np.zeros((SIZE, SIZE), bool)
    inside[RING:-RING, RING:-RING] = True
    images[:, ~inside] += frames[:, None, :]
    images[:, inside] += centres[:, None, :]
    return np.clip(images, 0, 255).astype(np.uint8)


def two_classes(per_class: int) -> np.ndarray:
    return np.repeat([0, 1], per_class)


def test_border_features_read_only_the_ring():
    image = np.full((1, 16, 16, 3), 200, np.uint8)  # band 1/8 of 16: a 2-pixel ring around a 12 x 12 centre
    image[0, :2], image[0, -2:], image[0, :, :2], image[0, :, -2:] = 40, 40, 40, 40
    image[0, 2:14, 2:14] = 200
    features = border_features(image)
    assert features.shape == (1, 15)
    assert np.allclose(features.reshape(3, 5), [[40, 0, 40, 40, 40]] * 3)


def test_a_frame_tint_that_decides_the_class_is_flagged():
    rng = np.random.default_rng(0)
    labels = two_classes(40)
    frames = np.where(labels[:, None] == 0, [30, 0, -30], [-30, 0, 30]) + rng.normal(0, 10, (80, 3))
    centres = rng.normal(0, 30, (80, 3))  # one distribution for both classes
    probes, skipped = border_probe(framed_images(rng, frames, centres), labels, np.arange(80), CLASSES, "melanoma")
    assert [(p.lookalike, p.n_positive, p.n_lookalike) for p in probes] == [("nevus", 40, 40)]
    assert probes[0].auc > 0.95 and probes[0].flagged and probes[0].warning_level == PROBE_AUC_WARNING
    assert "seborrheic keratosis" in skipped[0] and "0 images" in skipped[0]
    assert probes[0].sentence().startswith("melanoma / nevus: the colours of the image border alone")


def test_a_lesion_centre_that_decides_the_class_with_an_independent_frame_is_not_flagged():
    rng = np.random.default_rng(1)
    labels = two_classes(40)
    frames = rng.normal(0, 30, (80, 3))  # one distribution for both classes
    centres = np.where(labels[:, None] == 0, [60, -40, -40], [-40, -40, 60]).astype(float)
    probes, _ = border_probe(framed_images(rng, frames, centres), labels, np.arange(80), CLASSES, "melanoma")
    assert probes[0].auc < 0.65 and not probes[0].flagged
    assert "only at cross-validated AUC" in probes[0].sentence()


def test_class_by_source_counts_every_class_and_source_with_zeros():
    labels = np.array([0, 0, 1, 0, 1, 1])
    sources = ["b", "a", "b", "b", "c", "c"]
    assert class_by_source(labels, sources, CLASSES) == {
        "melanoma": {"a": 1, "b": 2, "c": 0},
        "nevus": {"a": 0, "b": 1, "c": 2},
        "seborrheic keratosis": {"a": 0, "b": 0, "c": 0},
    }
    assert list(class_by_source(labels, sources, CLASSES)["nevus"]) == ["a", "b", "c"]


def test_classes_in_sources_of_their_own_are_confounded():
    labels = two_classes(24)
    sources = ["m1"] * 12 + ["m2"] * 12 + ["n1"] * 12 + ["n2"] * 12
    (found,), _ = source_confounding(labels, sources, CLASSES, "melanoma", ["nevus"])
    assert found.source_auc == 1.0 and found.confounded
    assert (found.positive_apart, found.lookalike_apart, found.shared_sources) == (1.0, 1.0, ())


def test_classes_sharing_every_source_equally_are_not_confounded():
    labels = np.tile([0] * 10 + [1] * 10, 3)
    sources = np.repeat(["a", "b", "c"], 20)
    (found,), _ = source_confounding(labels, sources, CLASSES, "melanoma", ["nevus"])
    assert found.source_auc == 0.5 and not found.confounded
    assert (found.positive_apart, found.lookalike_apart, found.shared_sources) == (0.0, 0.0, ("a", "b", "c"))
    assert "does not tell them apart" in found.sentence()


def test_one_source_gives_half():
    (found,), _ = source_confounding(two_classes(12), ["only"] * 24, CLASSES, "melanoma", ["nevus"])
    assert found.source_auc == 0.5


def test_the_shared_sets_documented_counts_read_as_a_source_confound():
    melanomas = {
        "0000000-0000099": 0,
        "0000100-0000999": 124,
        "0001000-0009999": 53,
        "0010000-0024305": 184,
        "HAM10000": 0,
    }
    nevi = {"0000000-0000099": 54, "0000100-0000999": 224, "0001000-0009999": 0, "0010000-0024305": 2, "HAM10000": 14}
    sources = [s for s, n in melanomas.items() for _ in range(n)] + [s for s, n in nevi.items() for _ in range(n)]
    labels = np.repeat([0, 1], [sum(melanomas.values()), sum(nevi.values())])
    (found,), skipped = source_confounding(labels, sources, CLASSES, "melanoma")
    share = {s: melanomas[s] / (melanomas[s] + nevi[s]) for s in melanomas}
    pos = [share[s] for s, n in melanomas.items() for _ in range(n)]
    neg = np.array([share[s] for s, n in nevi.items() for _ in range(n)])
    pairwise = np.mean([np.mean((p > neg) + 0.5 * (p == neg)) for p in pos])  # AUC by its definition
    assert abs(found.source_auc - pairwise) < 1e-9 and found.source_auc >= SOURCE_AUC_WARNING
    assert found.positive_apart == 237 / 361 and found.lookalike_apart == 68 / 294
    assert found.shared_sources == ("0000100-0000999",)
    assert "66% of the melanoma images" in found.sentence() and "only 0000100-0000999 holds" in found.sentence()
    assert skipped == ["melanoma / seborrheic keratosis: not tested, seborrheic keratosis has 0 images (fewer than 10)"]


def test_too_few_or_absent_classes_are_skipped_with_the_reason():
    labels = np.repeat([0, 1, 2], [12, 12, 5])
    found, skipped = source_confounding(
        labels, ["a"] * 29, CLASSES, "melanoma", ["nevus", "seborrheic keratosis", "lentigo"]
    )
    assert [f.lookalike for f in found] == ["nevus"]
    assert skipped == [
        "melanoma / seborrheic keratosis: not tested, seborrheic keratosis has 5 images (fewer than 10)",
        "melanoma / lentigo: not tested, lentigo is not a class of this dataset",
    ]
    found, skipped = source_confounding(np.repeat([0, 1], [9, 12]), ["a"] * 21, CLASSES, "melanoma")
    assert found == [] and skipped == ["melanoma: nothing tested, the positive class has 9 images (fewer than 10)"]


def test_report_text_warns_on_flagged_findings_and_aligns_the_table():
    labels = np.r_[two_classes(24), np.tile([0] * 10 + [1] * 10, 2)]
    sources = ["m"] * 24 + ["n"] * 24 + ["a"] * 20 + ["b"] * 20
    table = class_by_source(labels, sources, CLASSES)
    confounds, skipped = source_confounding(labels, sources, CLASSES, "melanoma", ["nevus"])
    text = format_confounding(table, confounds, [], skipped)
    lines = text.splitlines()
    assert len({len(line) for line in lines[1:5]}) == 1  # header and three class rows, columns aligned
    assert [line.startswith("WARNING: melanoma / nevus") for line in lines[5:]] == [True]
    calm = format_confounding(
        None, source_confounding(labels[48:], sources[48:], CLASSES, "melanoma", ["nevus"])[0], [], []
    )
    assert not calm.startswith("WARNING") and "Images per class" not in calm
    record = json.loads(json.dumps(confounding_to_dict(table, confounds, [], skipped)))
    assert record["source_confounds"][0]["confounded"] is True and record["class_by_source"] == table
    assert str(SOURCE_AUC_WARNING) in record["rules"]["source_auc"]


def test_class_by_source_chart_writes_a_png(tmp_path):
    target = tmp_path / "class_by_source.png"
    class_by_source_chart({"melanoma": {"a": 3, "b": 0}, "nevus": {"a": 1, "b": 9}}, target, "Images by source")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_probe_that_cannot_make_its_folds_is_skipped_with_the_reason_not_a_crash():
    rng = np.random.default_rng(3)
    labels = two_classes(15)
    images = rng.integers(0, 256, size=(len(labels), 16, 16, 3), dtype=np.uint8)
    groups = np.where(labels == 0, 0, np.arange(len(labels)))  # every positive image one lesion: one group
    probes, skipped = border_probe(images, labels, groups, ["melanoma", "nevus"], "melanoma", ["nevus"])
    assert probes == [] and len(skipped) == 1 and "not probed" in skipped[0]


def test_a_class_is_apart_only_where_it_is_rare_in_that_sources_own_mix():
    # twelve sources of 20 melanomas and 20 nevi each, and one of 400 melanomas: no nevus sits apart
    sources = [f"s{k}" for k in range(12) for _ in range(40)] + ["big"] * 400
    labels = ([0] * 20 + [1] * 20) * 12 + [0] * 400
    (found,), _ = source_confounding(np.array(labels), sources, ["melanoma", "nevus"], "melanoma", ["nevus"])
    assert found.lookalike_apart == 0.0 and found.positive_apart == 400 / 640
