"""Rebalance the training split: Augmentor copies (the seed's method), class weights, or nothing.

Augmentor is driven on images already decoded (rows of the image cache), one at a time, with its global random
state seeded and restored: `Pipeline(dir)` would write an `output/` folder into the dataset and `sample()` runs
threaded with random file names, so neither is used. The extra images are written one by one into the augmentation
cache and read back memory-mapped, never held in memory all at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import Augmentor
import numpy as np
from PIL import Image
from sklearn.utils.class_weight import compute_class_weight
from tqdm import tqdm

from edgelesion.data.array_files import create_array, disk_full_error, is_disk_full, need_space, publish, write_at
from edgelesion.data.image_cache import default_cache_dir
from edgelesion.data.image_rows import ImageRows, as_rows
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import discard, staging_dir

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

    images: np.ndarray  # M x H x W x 3 uint8, memory-mapped from the cache
    labels: np.ndarray  # M class indices
    sources: np.ndarray  # M indices into the training split
    shortfall: dict[int, int] = field(default_factory=dict)  # class -> images not made because of the cap
    cache_folder: Path | None = None


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


def cache_key(content: str, labels: np.ndarray, config: AugmentConfig, seed: int) -> str:
    """Content key: the same source images (`content` names them: file hashes and decoding), labels, operations and
    seed give the same images."""
    payload = json.dumps(
        {
            "content": content,
            "labels": labels.tolist(),
            "config": asdict(config),
            "seed": seed,
            "augmentor": Augmentor.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


EMPTY_STAND_IN = 1  # rows written when no image is made: numpy cannot memory-map an empty array


def _read_augmented(folder: Path, shortfall: dict[int, int]) -> Augmented | None:
    try:
        labels, sources = np.load(folder / "labels.npy"), np.load(folder / "sources.npy")
        images = np.load(folder / "images.npy", mmap_mode="r")[: len(labels)]  # see EMPTY_STAND_IN
    except (OSError, ValueError):
        return None
    return Augmented(images, labels, sources, shortfall, folder) if len(images) == len(labels) else None


def _source_indices(labels: np.ndarray, plan: dict[int, tuple[int, int]], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sources = []
    for cls, (_, allowed) in sorted(plan.items()):
        members = np.flatnonzero(labels == cls)
        if allowed == 0:
            continue
        rounds = math.ceil(allowed / len(members))
        sources.append(np.concatenate([rng.permutation(members) for _ in range(rounds)])[:allowed])
    return np.concatenate(sources) if sources else np.zeros(0, np.int64)


def augment(
    images: ImageRows | np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    config: AugmentConfig,
    *,
    seed: int,
    content: str,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Augmented:
    """Make extra images for the classes of the training split given (`content` names those images); reuse the
    cache when inputs match."""
    images = as_rows(images)
    folder = (cache_dir or default_cache_dir()) / "augmented" / cache_key(content, labels, config, seed)
    plan = extra_per_class(labels, n_classes, config)
    shortfall = {c: wanted - allowed for c, (wanted, allowed) in plan.items() if wanted > allowed}
    cached = _read_augmented(folder, shortfall)
    if cached is not None:
        return cached
    if folder.exists():  # unreadable (a removal that was interrupted): never trusted, made again
        discard(folder, missing_ok=True)
    sources = _source_indices(labels, plan, seed)
    staging = staging_dir(folder)
    try:
        _make_images(staging, images, labels, sources, config, seed, progress)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise disk_full_error(folder.parent, "the augmentation cache") from exc
        raise
    publish(staging, folder)
    made_images = _read_augmented(folder, shortfall)
    if made_images is None:
        raise EdgelesionError(f"the augmentation cache {folder} could not be read back after writing it")
    return made_images


def _make_images(
    staging: Path,
    images: ImageRows,
    labels: np.ndarray,
    sources: np.ndarray,
    config: AugmentConfig,
    seed: int,
    progress: bool,
) -> None:
    """Augmentor's image of each of `sources`, written one by one into `staging` with their labels and sources."""
    shape = (max(len(sources), EMPTY_STAND_IN), *images.shape[1:])
    need_space(staging, int(np.prod(shape)))
    offset = create_array(staging / "images.npy", shape)
    transform = build_pipeline(config).torch_transform()  # a plain PIL -> PIL callable, despite the name
    saved_state = random.getstate(), np.random.get_state()
    try:
        Augmentor.Pipeline.set_seed(seed)
        with open(staging / "images.npy", "r+b") as handle:
            for n, i in enumerate(tqdm(sources, desc="augmenting", unit="img", disable=not progress)):
                made = np.asarray(transform(Image.fromarray(images[int(i)])), dtype=np.uint8)
                if made.shape != shape[1:]:
                    raise RuntimeError(f"Augmentor returned a {made.shape} image for a {shape[1:]} one")
                write_at(handle.fileno(), made.tobytes(), offset + n * made.nbytes)
    finally:
        random.setstate(saved_state[0])
        np.random.set_state(saved_state[1])
    np.save(staging / "labels.npy", labels[sources])
    np.save(staging / "sources.npy", sources)


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
