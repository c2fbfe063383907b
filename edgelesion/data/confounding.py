"""Does class go with acquisition source? Then a model can learn the source (device, clinic, framing), not the lesion.

Two views: counts of class by source (when the caller knows each image's source), and a probe that asks whether
the colours of the image border alone, with the lesion's centre left out, tell two classes apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from edgelesion.data.image_rows import ImageRows, as_rows
from edgelesion.metrics import LOOKALIKES as DEFAULT_LOOKALIKES  # what melanoma is confused with

MIN_IMAGES_PER_CLASS = 10  # a look-alike / positive with fewer images is named and not tested
APART_SHARE = 0.10  # a class is "rare" in a source when under this share of the pair's images there are of it
BORDER_BAND = 1 / 8  # the frame ring: this share of each side, from the edge inwards

# Source alone "gives the class away" at this in-sample AUC or above: a source-only rule then orders three pairs in
# four correctly. The score is each source's class share fitted on the same images, so chance alone lifts it above
# 0.5, the more so the fewer images each source holds: the shared set's melanoma and nevus labels shuffled over their
# sources stay far under this level, but a few dozen images spread over many sources can reach it by chance, so read
# it beside the class-by-source table.
SOURCE_AUC_WARNING = 0.75

# The border probe warns at this cross-validated AUC or above. With border and class independent (labels shuffled)
# the probe stays under it from 20 images a class up; at the 10-image minimum chance reaches it now and then. Border
# colour is not pure source either (a lesion that reaches the frame colours it too), and the one ISIC block of the
# shared set holding many melanomas and nevi reads just under this level: a warning means the frame separates the
# classes more than it does inside that one source.
PROBE_AUC_WARNING = 0.75

_STATISTICS = ("mean", "std", "p10", "p50", "p90")


@dataclass(frozen=True)
class SourceConfound:
    """How far acquisition source alone separates the positive class from one look-alike."""

    positive: str
    lookalike: str
    source_auc: float  # AUC of the positive share of each image's source as the only score (in-sample, ties half)
    positive_apart: float  # share of positive's images in sources where the look-alike is rare (APART_SHARE)
    lookalike_apart: float  # the reverse
    shared_sources: tuple[str, ...]  # sources holding >= MIN_IMAGES_PER_CLASS images of both
    confounded: bool  # source_auc >= SOURCE_AUC_WARNING

    def sentence(self) -> str:
        """One plain-English line: what the counts mean for a pooled validation figure."""
        pair = f"{self.positive} / {self.lookalike}"
        shared = _shared_clause(self.shared_sources)
        if not self.confounded:
            return (
                f"{pair}: the source alone does not tell them apart (AUC {self.source_auc:.2f}, under "
                f"{SOURCE_AUC_WARNING:.2f}); {shared}."
            )
        few = f"{APART_SHARE:.0%}"
        return (
            f"{pair}: the source alone tells them apart (AUC {self.source_auc:.2f} >= {SOURCE_AUC_WARNING:.2f}): "
            f"{self.positive_apart:.0%} of the {self.positive} images come from sources where under {few} of the "
            f"two classes' images are {self.lookalike}, {self.lookalike_apart:.0%} of the {self.lookalike} images "
            f"from sources where under {few} are {self.positive}; {shared}. A pooled validation figure rewards a "
            "model that learned the source: read the within-source figures."
        )


@dataclass(frozen=True)
class ProbeResult:
    """How well border colours alone (no lesion centre) separate the positive class from one look-alike."""

    positive: str
    lookalike: str
    auc: float  # out-of-fold ROC AUC of the border probe
    n_positive: int
    n_lookalike: int
    warning_level: float
    flagged: bool  # auc >= warning_level

    def sentence(self) -> str:
        """One plain-English line: what the probe's AUC suggests."""
        pair = f"{self.positive} / {self.lookalike}"
        images = f"{self.n_positive} {self.positive} and {self.n_lookalike} {self.lookalike} images"
        if not self.flagged:
            return (
                f"{pair}: the colours of the image border alone tell them apart only at cross-validated AUC "
                f"{self.auc:.2f}, under the warning level {self.warning_level:.2f} ({images})."
            )
        return (
            f"{pair}: the colours of the image border alone (no lesion centre) tell them apart at cross-validated "
            f"AUC {self.auc:.2f} (warning level {self.warning_level:.2f}): the classes probably come from "
            "different sources or devices, or one class's lesions fill the frame more often, and a model can "
            f"learn the frame instead of the lesion ({images})."
        )


def _shared_clause(shared: tuple[str, ...]) -> str:
    """'only X holds at least 10 of both', or the plural, or 'no source holds ...'."""
    both = f"at least {MIN_IMAGES_PER_CLASS} of both"
    if not shared:
        return f"no source holds {both}"
    if len(shared) == 1:
        return f"only {shared[0]} holds {both}"
    return f"{', '.join(shared)} hold {both}"


def class_by_source(labels: np.ndarray, sources: Sequence[str], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """class name -> source -> image count (every class and every source present, zeros included, sources sorted)."""
    labels, sources = np.asarray(labels), np.asarray(list(sources), dtype=str)
    if len(labels) != len(sources):
        raise ValueError(f"{len(labels)} labels but {len(sources)} sources: give one source per image")
    names = sorted(set(sources.tolist()))
    return {
        name: {source: int(np.sum((labels == c) & (sources == source))) for source in names}
        for c, name in enumerate(classes)
    }


def _testable_pairs(
    labels: np.ndarray, classes: Sequence[str], positive_class: str, lookalikes: Sequence[str]
) -> tuple[list[tuple[int, int]], list[str]]:
    """(positive index, look-alike index) pairs with enough images on both sides, and why the others are skipped."""
    index = {name: i for i, name in enumerate(classes)}
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    few = f"fewer than {MIN_IMAGES_PER_CLASS}"
    if positive_class not in index:
        return [], [f"{positive_class}: nothing tested, the positive class is not in this dataset"]
    positive = index[positive_class]
    if counts[positive] < MIN_IMAGES_PER_CLASS:
        return [], [f"{positive_class}: nothing tested, the positive class has {counts[positive]} images ({few})"]
    pairs, skipped = [], []
    for name in lookalikes:
        if name not in index:
            skipped.append(f"{positive_class} / {name}: not tested, {name} is not a class of this dataset")
        elif counts[index[name]] < MIN_IMAGES_PER_CLASS:
            skipped.append(f"{positive_class} / {name}: not tested, {name} has {counts[index[name]]} images ({few})")
        else:
            pairs.append((positive, index[name]))
    return pairs, skipped


def _source_confound(is_positive: np.ndarray, sources: np.ndarray, positive: str, lookalike: str) -> SourceConfound:
    """The source-alone AUC, the apart shares and the shared sources of one pair's images."""
    names, which = np.unique(sources, return_inverse=True)
    n_positive = np.bincount(which, weights=is_positive, minlength=len(names))
    n_lookalike = np.bincount(which, weights=~is_positive, minlength=len(names))
    share = n_positive / (n_positive + n_lookalike)
    auc = float(roc_auc_score(is_positive, share[which])) if len(names) > 1 else 0.5
    few_lookalikes = n_lookalike < APART_SHARE * (n_positive + n_lookalike)  # the source's own mix decides
    few_positives = n_positive < APART_SHARE * (n_positive + n_lookalike)
    shared = (n_positive >= MIN_IMAGES_PER_CLASS) & (n_lookalike >= MIN_IMAGES_PER_CLASS)
    return SourceConfound(
        positive=positive,
        lookalike=lookalike,
        source_auc=auc,
        positive_apart=float(n_positive[few_lookalikes].sum() / n_positive.sum()),
        lookalike_apart=float(n_lookalike[few_positives].sum() / n_lookalike.sum()),
        shared_sources=tuple(str(s) for s in names[shared]),
        confounded=auc >= SOURCE_AUC_WARNING,
    )


def source_confounding(
    labels: np.ndarray,
    sources: Sequence[str],
    classes: Sequence[str],
    positive_class: str,
    lookalikes: Sequence[str] = DEFAULT_LOOKALIKES,
) -> tuple[list[SourceConfound], list[str]]:
    """One SourceConfound per look-alike with enough images (and a positive class with enough); the second list
    says in words each look-alike (or the positive class) skipped and why.

    Sources must be coarse (an archive, a clinic, a device): with one source per image the in-sample AUC is 1.
    """
    labels, sources = np.asarray(labels), np.asarray(list(sources), dtype=str)
    if len(labels) != len(sources):
        raise ValueError(f"{len(labels)} labels but {len(sources)} sources: give one source per image")
    pairs, skipped = _testable_pairs(labels, classes, positive_class, lookalikes)
    confounds = []
    for positive, lookalike in pairs:
        pair = (labels == positive) | (labels == lookalike)
        confounds.append(
            _source_confound(labels[pair] == positive, sources[pair], classes[positive], classes[lookalike])
        )
    return confounds, skipped


def border_features(images: np.ndarray | ImageRows, band: float = BORDER_BAND) -> np.ndarray:
    """Per image (N x H x W x 3 uint8): colour statistics of the outer `band` of each side (the frame ring), per
    channel: mean, std, 10th/50th/90th percentiles -> N x 15 float (channel-major: R's five, then G's, then B's)."""
    images = as_rows(images)  # cache rows are read 256 at a time below
    if len(images.shape) != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be N x H x W x 3, not {images.shape}")
    if not 0 < band < 0.5:
        raise ValueError(f"band {band} must lie between 0 and 0.5 of a side")
    height, width = images.shape[1:3]
    rows, cols = max(1, round(height * band)), max(1, round(width * band))
    ring = np.ones((height, width), bool)
    ring[rows : height - rows, cols : width - cols] = False
    features = np.empty((len(images), 3, len(_STATISTICS)))
    for start in range(0, len(images), 256):  # chunks keep the float copy of the ring pixels small
        pixels = images[start : start + 256][:, ring].astype(np.float32)  # n x ring pixels x 3
        features[start : start + 256, :, 0] = pixels.mean(axis=1)
        features[start : start + 256, :, 1] = pixels.std(axis=1)
        features[start : start + 256, :, 2:] = np.moveaxis(np.percentile(pixels, [10, 50, 90], axis=1), 0, -1)
    return features.reshape(len(images), -1)


def _out_of_fold_auc(features: np.ndarray, is_positive: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> float:
    """ROC AUC of out-of-fold probabilities from a standardised logistic regression; groups never straddle folds."""
    probabilities = np.empty(len(is_positive))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, held_out in splitter.split(features, is_positive, groups):
        if len(np.unique(is_positive[train])) < 2:
            raise ValueError("a training fold holds one class only: lower folds or add images")
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(features[train], is_positive[train])
        probabilities[held_out] = model.predict_proba(features[held_out])[:, 1]
    return float(roc_auc_score(is_positive, probabilities))


def border_probe(
    images: np.ndarray | ImageRows,
    labels: np.ndarray,
    groups: np.ndarray,
    classes: Sequence[str],
    positive_class: str,
    lookalikes: Sequence[str] = DEFAULT_LOOKALIKES,
    *,
    folds: int = 5,
    seed: int = 0,
) -> tuple[list[ProbeResult], list[str]]:
    """Shortcut probe from pixels, never file names: per look-alike with enough images, a standardised logistic
    regression on `border_features`, positive vs look-alike images only, group-aware stratified k-fold (duplicate
    groups never straddle), out-of-fold probabilities -> ROC AUC. Second list: skipped look-alikes and why."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    if not len(images) == len(labels) == len(groups):
        raise ValueError(
            f"{len(images)} images, {len(labels)} labels and {len(groups)} groups: give one of each per image"
        )
    pairs, skipped = _testable_pairs(labels, classes, positive_class, lookalikes)
    results = []
    for positive, lookalike in pairs:
        pair = np.flatnonzero((labels == positive) | (labels == lookalike))
        is_positive = labels[pair] == positive
        try:
            auc = _out_of_fold_auc(border_features(as_rows(images).take(pair)), is_positive, groups[pair], folds, seed)
        except ValueError as exc:  # too few groups for the folds, or a fold left with one class
            skipped.append(
                f"{classes[positive]} / {classes[lookalike]}: not probed, its images do not make "
                f"{folds} cross-validation folds ({exc})"
            )
            continue
        results.append(
            ProbeResult(
                positive=classes[positive],
                lookalike=classes[lookalike],
                auc=auc,
                n_positive=int(is_positive.sum()),
                n_lookalike=int((~is_positive).sum()),
                warning_level=PROBE_AUC_WARNING,
                flagged=auc >= PROBE_AUC_WARNING,
            )
        )
    return results, skipped


def _format_table(table: dict[str, dict[str, int]]) -> list[str]:
    """Classes as rows, sources as columns, right-aligned counts."""
    sources = sorted({s for row in table.values() for s in row})
    first = max([len("class")] + [len(c) for c in table])
    widths = [max(len(s), 5) for s in sources]
    lines = ["  ".join(["class".ljust(first)] + [s.rjust(w) for s, w in zip(sources, widths)])]
    for name, row in table.items():
        lines.append("  ".join([name.ljust(first)] + [str(row.get(s, 0)).rjust(w) for s, w in zip(sources, widths)]))
    return lines


def format_confounding(
    table: dict[str, dict[str, int]] | None,
    confounds: list[SourceConfound],
    probes: list[ProbeResult],
    skipped: list[str],
) -> str:
    """Terminal text: the class-by-source table (if given), then one line per finding, flagged ones as 'WARNING:'."""
    lines = []
    if table is not None:
        lines += ["Images per class (rows) and source (columns):"] + [f"  {line}" for line in _format_table(table)]
    for finding in [*confounds, *probes]:
        flagged = finding.confounded if isinstance(finding, SourceConfound) else finding.flagged
        lines.append(f"{'WARNING: ' if flagged else ''}{finding.sentence()}")
    lines += skipped
    return "\n".join(lines)


def confounding_to_dict(
    table: dict[str, dict[str, int]] | None,
    confounds: list[SourceConfound],
    probes: list[ProbeResult],
    skipped: list[str],
) -> dict[str, Any]:
    """JSON-ready findings with the rules and their levels in words, for audit.json."""
    return {
        "class_by_source": table,
        "source_confounds": [
            {**asdict(c), "shared_sources": list(c.shared_sources), "sentence": c.sentence()} for c in confounds
        ],
        "border_probes": [{**asdict(p), "sentence": p.sentence()} for p in probes],
        "skipped": list(skipped),
        "rules": {
            "tested": f"the positive class against each look-alike, when both have at least {MIN_IMAGES_PER_CLASS} "
            "images",
            "source_auc": "ROC AUC, positive against look-alike images, of one score: the positive share among "
            "positive and look-alike images of the image's source (in-sample, ties count half); "
            f"confounded at {SOURCE_AUC_WARNING} or above",
            "apart": f"a class is rare in a source when under {APART_SHARE:.0%} of the pair's images there are of it",
            "shared_sources": f"sources holding at least {MIN_IMAGES_PER_CLASS} images of both classes",
            "border_probe": "out-of-fold ROC AUC of a standardised logistic regression on colour statistics (mean, "
            "std, 10th/50th/90th percentiles per channel) of the image's outer ring, "
            f"{BORDER_BAND:.3f} of each side, positive against look-alike images, folds stratified "
            f"by class with duplicate groups kept whole; flagged at {PROBE_AUC_WARNING} or above",
        },
    }
