"""Synthetic fixtures: small image datasets written to temporary folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

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


def write_dataset(
    root: Path, per_class: int = 12, classes: dict[str, tuple[int, int, int]] | None = None, seed: int = 0
) -> Path:
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
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own image and augmentation cache, never the user's (beside its tmp_path, not in it)."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("EDGELESION_CACHE", str(cache))
    return cache


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime) for p in sorted(folder.rglob("*"))}


def write_sources_csv(data: Path, target: Path) -> Path:
    """A metadata CSV beside `data`: each image's source, 'clinic-a' or 'clinic-b' by its number's parity."""
    rows = [
        f"{p.relative_to(data).as_posix()},clinic-{'ab'[int(p.stem[-3:]) % 2]}" for p in sorted(data.rglob("*.jpg"))
    ]
    target.write_text("path,source\n" + "\n".join(rows) + "\n")
    return target


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A small run on synthetic data with a metadata CSV of sources (so export and benchmark carry them), trained
    long enough to be confident (near-uniform probabilities would make any top-1 parity check noise)."""
    from edgelesion.data.metadata import MetadataSpec
    from edgelesion.preprocessing import Preprocessing
    from edgelesion.train.config import TrainConfig
    from edgelesion.train.training import train

    root = tmp_path_factory.mktemp("trained")
    data = write_dataset(root / "data", per_class=24)
    config = TrainConfig(
        epochs=8, batch_size=8, folds=3, min_support=2, preprocessing=Preprocessing(image_size=32), rebalance="none"
    )
    metadata = MetadataSpec(write_sources_csv(data, root / "sources.csv"), source_column="source")
    train(data, root / "run", config, metadata=metadata, progress=False)
    return root / "run"


@pytest.fixture(scope="session")
def lite0_run(tmp_path_factory) -> Path:
    """A pretrained Lite0 run at 32 px: one head epoch, then one whole-network epoch (its recipe otherwise)."""
    from dataclasses import replace

    from edgelesion.train.config import TrainConfig
    from edgelesion.train.training import train

    root = tmp_path_factory.mktemp("lite0")
    recipe = TrainConfig.for_model("efficientnet-lite0", epochs=2, head_epochs=1, batch_size=8, folds=3, min_support=2)
    config = recipe.with_changes(preprocessing=replace(recipe.preprocessing, image_size=32))
    train(write_dataset(root / "data"), root / "run", config, progress=False)
    return root / "run"


def rewrite_bundle(folder: Path, manifest: dict) -> None:
    """Write an edited bundle.json sealed again as the exporter seals it (a test standing in for another bundle)."""
    import json

    from edgelesion.infer.bundle_reader import sealed

    (folder / "bundle.json").write_text(json.dumps(sealed(manifest)))


def fast_export_options():
    """All five artifacts, one QAT epoch, a small calibration sample."""
    from edgelesion.export.options import ExportOptions, QATConfig

    return ExportOptions(qat=QATConfig(epochs=1), calibration_images=16)


@pytest.fixture(scope="session")
def bundle_dir(trained_run, tmp_path_factory) -> Path:
    """The bundle of every artifact exported from `trained_run`."""
    from edgelesion.export.exporting import export_run

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_run(trained_run, out, fast_export_options(), progress=False)
    return out


@contextmanager
def interrupted_at(module: ModuleType, epoch: int) -> Iterator[None]:
    """Inside the block, `module.fit_one_epoch` raises KeyboardInterrupt on reaching `epoch`, as Ctrl-C would."""
    real_fit = module.fit_one_epoch

    def fit(model, x, y, current_epoch, *args, **kwargs):
        if current_epoch == epoch:
            raise KeyboardInterrupt
        return real_fit(model, x, y, current_epoch, *args, **kwargs)

    module.fit_one_epoch = fit
    try:
        yield
    finally:
        module.fit_one_epoch = real_fit
