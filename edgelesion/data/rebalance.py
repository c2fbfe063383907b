"""Rebalance the training split: Augmentor copies (the seed's method), class weights, or nothing.

Augmentor is driven on images already decoded in memory, one at a time, with its global random
state seeded and restored: `Pipeline(dir)` would write an `output/` folder into the dataset and
`sample()` runs threaded with random file names, so neither is used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import Augmentor
import numpy as np
from PIL import Image
from sklearn.utils.class_weight import compute_class_weight
from tqdm import tqdm

from edgelesion.fileio import atomic_path

SEED_PRESET_EXTRA = 500  # the seed project added 500 Augmentor images to every class


class RebalanceMethod(str, Enum):
    """How the training split is rebalanced."""

    AUGMENTOR = "augmentor"
    CLASS_WEIGHTS = "class-weights"
    NONE = "none"


@dataclass(frozen=True)
class AugmentConfig:
    """Which Augmentor operations make the extra images, and how many."""

    target: str = "max"  # "max": fill each class up to the largest; "seed": +500 per class; or a count per class
    max_copies_per_image: int = 10  # no source image is copied more often than this
    rotate_probability: float = 0.7  # the seed: rotate(probability=0.7, 10 degrees either way)
    max_rotation: int = 10
    flips: bool = False  # also flip left-right / top-bottom, each with probability 0.5
    zoom: bool = False  # also zoom in by 1.0-1.2x with probability 0.5

    def __post_init__(self) -> None:
        if self.target not in ("max", "seed") and not str(self.target).isdigit():
            raise ValueError(f"augmentation target {self.target!r} must be 'max', 'seed' or a whole number of images")
        if self.max_copies_per_image < 1:
            raise ValueError(f"max_copies_per_image must be at least 1, not {self.max_copies_per_image}")


@dataclass
class Augmented:
    """Extra training images made by Augmentor, with the training-split index each was made from."""

    images: np.ndarray  # M x H x W x 3 uint8
    labels: np.ndarray  # M class indices
    sources: np.ndarray  # M indices into the training split
    shortfall: dict[int, int] = field(default_factory=dict)  # class -> images not made because of the cap
    cache_file: Path | None = None


def default_cache_dir() -> Path:
    """$EDGELESION_CACHE, else ~/.cache/edgelesion."""
    return Path(os.environ.get("EDGELESION_CACHE", Path.home() / ".cache" / "edgelesion"))


def extra_per_class(labels: np.ndarray, n_classes: int, config: AugmentConfig) -> dict[int, tuple[int, int]]:
    """Per class: (images wanted, images allowed by the per-image cap)."""
    counts = np.bincount(labels, minlength=n_classes)
    plan = {}
    for cls, count in enumerate(counts):
        if config.target == "seed":
            wanted = SEED_PRESET_EXTRA
        elif config.target == "max":
            wanted = int(counts.max() - count)
        else:
            wanted = max(0, int(config.target) - int(count))
        plan[cls] = (wanted, min(wanted, int(count) * config.max_copies_per_image))
    return plan


def build_pipeline(config: AugmentConfig) -> Augmentor.Pipeline:
    """An Augmentor pipeline with no source folder (it never touches the disk)."""
    pipeline = Augmentor.Pipeline()
    pipeline.rotate(
        probability=config.rotate_probability,
        max_left_rotation=config.max_rotation,
        max_right_rotation=config.max_rotation,
    )
    if config.flips:
        pipeline.flip_left_right(probability=0.5)
        pipeline.flip_top_bottom(probability=0.5)
    if config.zoom:
        pipeline.zoom(probability=0.5, min_factor=1.0, max_factor=1.2)
    return pipeline


def cache_key(images: np.ndarray, labels: np.ndarray, config: AugmentConfig, seed: int) -> str:
    """Content key: the same pixels (so the same sources, size, resize and JPEG decoding), labels, operations and
    seed give the same images."""
    payload = json.dumps(
        {
            "pixels": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
            "shape": list(images.shape),
            "labels": labels.tolist(),
            "config": asdict(config),
            "seed": seed,
            "augmentor": Augmentor.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def augment(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    config: AugmentConfig,
    *,
    seed: int,
    cache_dir: Path,
    progress: bool = True,
) -> Augmented:
    """Make extra images for the classes of the training split given; reuse the cache when inputs match."""
    cache_file = Path(cache_dir) / "augmented" / f"{cache_key(images, labels, config, seed)}.npz"
    plan = extra_per_class(labels, n_classes, config)
    shortfall = {c: wanted - allowed for c, (wanted, allowed) in plan.items() if wanted > allowed}
    if cache_file.exists():
        with np.load(cache_file) as cached:
            return Augmented(cached["images"], cached["labels"], cached["sources"], shortfall, cache_file)

    rng = np.random.default_rng(seed)
    sources = []
    for cls, (_, allowed) in sorted(plan.items()):
        members = np.flatnonzero(labels == cls)
        if allowed == 0:
            continue
        rounds = math.ceil(allowed / len(members))
        sources.append(np.concatenate([rng.permutation(members) for _ in range(rounds)])[:allowed])
    sources_arr = np.concatenate(sources) if sources else np.zeros(0, np.int64)

    transform = build_pipeline(config).torch_transform()  # a plain PIL -> PIL callable, despite the name
    saved_state = random.getstate(), np.random.get_state()
    try:
        Augmentor.Pipeline.set_seed(seed)
        made = [
            np.asarray(transform(Image.fromarray(images[i])), dtype=np.uint8)
            for i in tqdm(sources_arr, desc="augmenting", unit="img", disable=not progress)
        ]
    finally:
        random.setstate(saved_state[0])
        np.random.set_state(saved_state[1])
    shape = (0, *images.shape[1:])
    result = Augmented(
        np.stack(made) if made else np.zeros(shape, np.uint8), labels[sources_arr], sources_arr, shortfall, cache_file
    )
    with atomic_path(cache_file) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, images=result.images, labels=result.labels, sources=result.sources)
    return result


MAX_CLASS_WEIGHT = 5.0


def class_weights(labels: np.ndarray, n_classes: int, max_weight: float = MAX_CLASS_WEIGHT) -> dict[int, float]:
    """scikit-learn's 'balanced' class weights for the classes present, capped at `max_weight`.

    Uncapped, a class with a handful of images outweighs the rest (seborrheic keratosis keeps 2 images
    of 1,962 after conflicts: weight 87, and a fine-tune then predicts it everywhere).
    """
    present = np.unique(labels)
    weights = np.minimum(compute_class_weight("balanced", classes=present, y=labels), max_weight)
    return {int(c): float(w) for c, w in zip(present, weights)} | {
        c: 0.0 for c in range(n_classes) if c not in set(present.tolist())
    }
