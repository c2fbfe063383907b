"""Synthetic fixtures: small image datasets written to temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Keep TensorFlow quiet and single-machine friendly in tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CLASS_TINTS = {
    "melanoma": (90, -40, -40),
    "nevus": (-40, 90, -40),
    "basal cell carcinoma": (-40, -40, 90),
}


def synthetic_image(rng: np.random.Generator, tint: tuple[int, int, int], size: int = 48) -> Image.Image:
    """A random smooth image (distinct perceptual hash) with a class-specific colour tint."""
    coarse = rng.integers(40, 200, size=(4, 4, 3)).astype(np.float64)
    image = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC), float)
    image = np.clip(image + np.array(tint) + rng.normal(0, 6, image.shape), 0, 255)
    return Image.fromarray(image.astype(np.uint8))


def write_dataset(root: Path, per_class: int = 12, classes: dict[str, tuple[int, int, int]] | None = None,
                  seed: int = 0) -> Path:
    """A folder of class subfolders (names with spaces) holding `per_class` distinct JPEGs each."""
    rng = np.random.default_rng(seed)
    for name, tint in (classes or CLASS_TINTS).items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            synthetic_image(rng, tint).save(folder / f"img_{i:03d}.jpg", quality=95)
    return root


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    """Three classes of 12 distinct synthetic images."""
    return write_dataset(tmp_path / "data")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own augmentation cache, never the user's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGELESION_CACHE", str(cache))
    return cache


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime)
            for p in sorted(folder.rglob("*"))}
