"""A quick screen for what might let a model hold on a source it never saw: linear probes on frozen ImageNet Lite0
features, trained without ISIC block 0000100-0000999 and scored inside it (melanoma against nevus).

    .venv/bin/python -m benchmarks.source_probe    # centre crops 1.0 0.8 0.6 0.45, INLP 0 3 10 30, every weighting
    .venv/bin/python -m benchmarks.source_probe --crops 1.0 0.6 --inlp 0 10 --weightings class --poolings avg

Each image is decoded and resized as training does it, keeping its centre `crop` (a share of each side, as
`Preprocessing.centre_crop` keeps it), and passed through the pretrained network (the package's model,
`pretrained=True`) up to its last feature map (7×7×1,280), pooled three ways (`--poolings`): `avg`, the global
average the model uses; `max`, the strongest response of each channel anywhere in the image; `gem`, generalised
mean pooling (p = 3), between the two. Features are made once per crop under runs/benchmarks/source-probe/.
A logistic regression (standardised features) learns the 9 classes from every source but the block; its melanoma
score p(melanoma) / (p(melanoma) + p(nevus)) is scored inside the block, paired with the whole image's probe on the
same images. Its images are weighted (`--weightings`):
- `class`: balanced class weights, as the recipe trains;
- `group`: (class, source) groups: every class weighs the same, and within a class every source;
- `group-dro`: the worst groups weigh most: group DRO's exponentiated-gradient weights (step 1) on the groups' mean
  training losses, the probe fitted again after each of 6 updates.
A class's sources with fewer than 20 training images count as part of its largest source: 2 images weighing as much
as a source of 70 would be noise.

INLP rounds (iterative nullspace projection) remove, before the probe, the directions along which a linear
classifier tells sources apart within one class (melanomas of two blocks, nevi of two): the linear analogue of a
source-adversarial branch that asks for features whose source cannot be told given the class. They are applied
with class weights only; the group weightings are screened without INLP, and the other poolings with class
weights and no INLP.

A screen, not a candidate's verdict: nothing is fine-tuned, so a gain here only says which recipe to train
leave-source-out (`python -m benchmarks.source_holdout`). Records benchmarks/results/source_probe_KIND.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from benchmarks.common import RUNS, cpu_kind_record_name, markdown_table, record, require_data, write_table
from benchmarks.source_holdout import HELD_OUT, LOOKALIKE, paired_auc_difference
from edgelesion.data.image_cache import decoding
from edgelesion.images import read_image, to_model_input
from edgelesion.source_figures import auc_estimate
from edgelesion.train.config import TrainConfig

FEATURES = RUNS / "source-probe"
# groups smaller than this are left out of the source classifiers: a direction fitted to a handful of images is noise
MIN_GROUP = 20
WEIGHTINGS = ("class", "group", "group-dro")
POOLINGS = ("avg", "max", "gem")
GEM_POWER = 3.0
DRO_UPDATES, DRO_STEP = 6, 1.0


def pooled(feature_map: np.ndarray) -> dict[str, np.ndarray]:
    """A batch of (n, h, w, channels) feature maps pooled over h and w in each of POOLINGS."""
    return {
        "avg": feature_map.mean(axis=(1, 2)),
        "max": feature_map.max(axis=(1, 2)),
        "gem": np.mean(np.maximum(feature_map, 0) ** GEM_POWER, axis=(1, 2)) ** (1 / GEM_POWER),
    }


def features(crop: float) -> dict[str, np.ndarray]:
    """Frozen Lite0 features of every image of the shared set at centre crop `crop`, pooled each way, with class and
    source (made once, then read)."""
    root = require_data()
    listing = (root.parent / "sources.csv").read_text()
    preprocessing = replace(TrainConfig.for_model("efficientnet-lite0").preprocessing, centre_crop=crop)
    # named by the image list and the decoding too, so another copy of the data or another resize never reads them
    key = hashlib.sha256(json.dumps([listing, decoding(preprocessing)]).encode()).hexdigest()[:12]
    target = FEATURES / f"features-pooled-crop{crop:g}-{key}.npz"
    if not target.is_file():
        from edgelesion._tf import keras
        from edgelesion.fileio import atomic_path
        from edgelesion.train.models.registry import create_model

        rows = list(csv.DictReader(io.StringIO(listing)))
        model = create_model("efficientnet-lite0", 9, preprocessing, pretrained=True)
        last_map = keras.Model(model.input, model.get_layer("avg_pool").input)

        def pixels(path: str) -> np.ndarray:
            return to_model_input(read_image(root / path, preprocessing.draft_side).image, preprocessing).astype(
                np.float32
            )

        batches = [
            pooled(last_map.predict(np.stack([pixels(r["path"]) for r in rows[i : i + 64]]), verbose=0))
            for i in range(0, len(rows), 64)
        ]
        FEATURES.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp, tmp.open("wb") as out:
            np.savez(
                out,
                **{pooling: np.concatenate([batch[pooling] for batch in batches]) for pooling in POOLINGS},
                label=np.array([r["path"].split("/")[0] for r in rows]),
                source=np.array([r["source"] for r in rows]),
            )
        print(f"features at crop {crop:g}: {target}")
    with np.load(target) as saved:
        return {key: saved[key] for key in saved.files}


def within_class_source_nullspace(x: np.ndarray, label: np.ndarray, source: np.ndarray, rounds: int) -> np.ndarray:
    """A projection removing, round by round, the directions that tell sources apart within each class."""
    projection = np.eye(x.shape[1])
    for _ in range(rounds):
        projected = x @ projection
        directions = []
        for name in np.unique(label):
            names, counts = np.unique(source[label == name], return_counts=True)
            kept = names[counts >= MIN_GROUP]
            if len(kept) < 2:
                continue
            rows = (label == name) & np.isin(source, kept)
            directions.extend(LogisticRegression(C=0.1, max_iter=2000).fit(projected[rows], source[rows]).coef_)
        if not directions:
            break
        basis, _ = np.linalg.qr(np.array(directions).T)
        projection = projection @ (np.eye(x.shape[1]) - basis @ basis.T)
    return projection


def group_weighted_probe(x: np.ndarray, label: np.ndarray, source: np.ndarray, weighting: str) -> LogisticRegression:
    """The probe fitted with `weighting`'s image weights (see the module's docstring), which average 1 as balanced
    class weights do: the regularisation strength C means the same under each."""
    if weighting == "class":
        return LogisticRegression(C=0.05, max_iter=3000, class_weight="balanced").fit(x, label)
    counts = Counter(zip(label, source))
    largest = {name: max((n, origin) for (c, origin), n in counts.items() if c == name)[1] for name in set(label)}
    groups = [
        (name, origin if counts[name, origin] >= MIN_GROUP else largest[name]) for name, origin in zip(label, source)
    ]
    _, first, group_of, sizes = np.unique(
        [f"{name}|{origin}" for name, origin in groups], return_index=True, return_inverse=True, return_counts=True
    )

    def fitted(share: np.ndarray) -> LogisticRegression:  # share: each group's part of the total weight
        return LogisticRegression(C=0.05, max_iter=3000).fit(x, label, sample_weight=len(x) * (share / sizes)[group_of])

    if weighting == "group":
        classes, group_class, sources_in_class = np.unique(label[first], return_inverse=True, return_counts=True)
        return fitted(1 / (len(classes) * sources_in_class[group_class]))
    share = np.full(len(sizes), 1 / len(sizes))
    probe = fitted(share)
    for _ in range(DRO_UPDATES):
        own = probe.predict_proba(x)[np.arange(len(x)), np.searchsorted(probe.classes_, label)]
        group_loss = np.bincount(group_of, -np.log(np.maximum(own, 1e-9))) / sizes
        share = share * np.exp(DRO_STEP * group_loss)
        share /= share.sum()
        probe = fitted(share)
    return probe


def probe_scores(
    data: dict[str, np.ndarray], rounds: int, weighting: str = "class", pooling: str = "avg"
) -> tuple[np.ndarray, np.ndarray]:
    """The held-out block's melanoma scores (melanomas and nevi, in file order) and which are melanomas."""
    x, label, source = data[pooling], data["label"], data["source"]
    train = source != HELD_OUT
    scored = (source == HELD_OUT) & np.isin(label, ["melanoma", LOOKALIKE])
    standard = StandardScaler().fit(x[train]).transform(x)
    projected = standard @ within_class_source_nullspace(standard[train], label[train], source[train], rounds)
    probe = group_weighted_probe(projected[train], label[train], source[train], weighting)
    probabilities = probe.predict_proba(projected[scored])
    classes = list(probe.classes_)
    melanoma, nevus = probabilities[:, classes.index("melanoma")], probabilities[:, classes.index(LOOKALIKE)]
    return melanoma / (melanoma + nevus), label[scored] == "melanoma"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=float, nargs="+", default=[1.0, 0.8, 0.6, 0.45], help="centre crop shares")
    parser.add_argument("--inlp", type=int, nargs="+", default=[0, 3, 10, 30], help="INLP rounds (class weights)")
    parser.add_argument(
        "--weightings", nargs="+", choices=WEIGHTINGS, default=list(WEIGHTINGS), help="image weights of the probe"
    )
    parser.add_argument("--poolings", nargs="+", choices=POOLINGS, default=list(POOLINGS), help="global poolings")
    args = parser.parse_args()
    baseline, truth = probe_scores(features(1.0), 0)
    probes = [("avg", w, r) for w in args.weightings for r in (args.inlp if w == "class" else [0])]
    probes += [(pooling, "class", 0) for pooling in args.poolings if pooling != "avg"]
    rows: list[dict[str, Any]] = []
    for crop in args.crops:
        data = features(crop)
        for pooling, weighting, rounds in probes:
            scores = (
                baseline
                if (crop, pooling, weighting, rounds) == (1.0, "avg", "class", 0)
                else probe_scores(data, rounds, weighting, pooling)[0]
            )
            rows.append(
                {
                    "crop": crop,
                    "pooling": pooling,
                    "weighting": weighting,
                    "inlp_rounds": rounds,
                    "held_out_auc": auc_estimate(scores[truth], scores[~truth]),
                    "vs_whole_image": paired_auc_difference(truth, baseline, scores),
                }
            )
            print(
                f"crop {crop:g}, {pooling} pool, {weighting}, INLP {rounds}: held-out AUC {rows[-1]['held_out_auc']['value']:.3f}"
            )
    name = cpu_kind_record_name("source_probe")
    record(
        name, {"held_out_source": HELD_OUT, "melanomas": int(truth.sum()), "nevi": int((~truth).sum()), "rows": rows}
    )
    table = markdown_table(
        [
            "centre crop",
            "pooling",
            "weighting",
            "INLP rounds",
            "held-out AUC melanoma vs nevus",
            "Δ vs whole image, average pool, class weights, no INLP [paired 95% CI]",
        ],
        [
            [
                f"{r['crop']:g}",
                r["pooling"],
                r["weighting"],
                str(r["inlp_rounds"]),
                f"{r['held_out_auc']['value']:.3f} [{r['held_out_auc']['ci95'][0]:.3f}, {r['held_out_auc']['ci95'][1]:.3f}]",
                f"{r['vs_whole_image']['value']:+.3f} [{r['vs_whole_image']['ci95'][0]:+.3f}, "
                f"{r['vs_whole_image']['ci95'][1]:+.3f}]",
            ]
            for r in rows
        ],
        "rllrrr",
    )
    intro = (
        f"# Linear probes on frozen ImageNet Lite0 features, {HELD_OUT} left out\n\nCommand: `python -m "
        f"benchmarks.source_probe --crops {' '.join(f'{c:g}' for c in args.crops)} --inlp "
        f"{' '.join(map(str, args.inlp))} --weightings {' '.join(args.weightings)} --poolings "
        f"{' '.join(args.poolings)}`. Trained on every other source (9 classes), scored on the block's "
        f"{int(truth.sum())} melanomas and {int((~truth).sum())} nevi. A screen: nothing is fine-tuned.\n"
    )
    write_table(name, [intro, *table])


if __name__ == "__main__":
    main()
