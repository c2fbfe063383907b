"""Reading a dataset folder: bad files are skipped and listed, bad folders get a clear error."""

from __future__ import annotations

import shutil

import pytest

from edgelesion.data.dataset import load_dataset
from edgelesion.errors import EdgelesionError
from edgelesion.preprocessing import Preprocessing
from tests.conftest import write_dataset

PRE = Preprocessing(image_size=16)


def test_reads_every_image_with_labels_from_folder_names(dataset_dir):
    data = load_dataset(dataset_dir, PRE, progress=False)
    assert data.classes == ["basal cell carcinoma", "melanoma", "nevus"]
    assert data.images.shape == (36, 16, 16, 3)
    assert sorted({r.label for r in data.records}) == data.classes
    assert all((dataset_dir / r.relpath).is_file() for r in data.records)


def test_bad_files_are_skipped_and_listed_and_never_stop_the_run(dataset_dir):
    melanoma = dataset_dir / "melanoma"
    (melanoma / "zero.jpg").write_bytes(b"")
    (melanoma / "text.jpg").write_bytes(b"hello")
    truncated = (melanoma / "img_000.jpg").read_bytes()[:200]
    (melanoma / "truncated.jpg").write_bytes(truncated)
    (melanoma / "notes.txt").write_text("not an image")
    data = load_dataset(dataset_dir, PRE, progress=False)
    reasons = {s.relpath: s.reason for s in data.skipped}
    assert "empty file" in reasons["melanoma/zero.jpg"]
    assert "not a JPEG, PNG, BMP, GIF, TIFF or WebP image" in reasons["melanoma/text.jpg"]
    assert "corrupt or truncated" in reasons["melanoma/truncated.jpg"]
    assert "not a JPEG, PNG or BMP" in reasons["melanoma/notes.txt"]
    assert len(data.records) == 36


def test_png_and_bmp_are_read(tmp_path):
    root = write_dataset(tmp_path / "d", per_class=2)
    from PIL import Image

    Image.open(root / "nevus" / "img_000.jpg").save(root / "nevus" / "extra.png")
    Image.open(root / "nevus" / "img_001.jpg").save(root / "nevus" / "extra.BMP")
    data = load_dataset(root, PRE, progress=False)
    assert {"nevus/extra.png", "nevus/extra.BMP"} <= {r.relpath for r in data.records}


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(EdgelesionError, match="does not exist"):
        load_dataset(tmp_path / "nope", PRE)


def test_folder_without_class_subfolders(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(EdgelesionError, match="no class subfolders"):
        load_dataset(tmp_path / "flat", PRE)


def test_empty_class_folder_is_named(dataset_dir):
    (dataset_dir / "vascular lesion").mkdir()
    with pytest.raises(EdgelesionError, match="vascular lesion.*no readable images"):
        load_dataset(dataset_dir, PRE, progress=False)


def test_single_class_is_refused(dataset_dir):
    for name in ("nevus", "basal cell carcinoma"):
        shutil.rmtree(dataset_dir / name)
    with pytest.raises(EdgelesionError, match="only 1 class folder"):
        load_dataset(dataset_dir, PRE, progress=False)


def test_fingerprint_follows_content_and_labels(dataset_dir):
    before = load_dataset(dataset_dir, PRE, progress=False).fingerprint()
    assert load_dataset(dataset_dir, PRE, progress=False).fingerprint() == before
    shutil.move(dataset_dir / "nevus" / "img_000.jpg", dataset_dir / "melanoma" / "moved.jpg")
    assert load_dataset(dataset_dir, PRE, progress=False).fingerprint() != before
