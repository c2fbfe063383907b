"""Read a folder of class subfolders into decoded, hashed images; skip and report bad files."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from tqdm import tqdm

from edgelesion.errors import EdgelesionError
from edgelesion.images import IMAGE_SUFFIXES, UnreadableImage, read_image, to_model_input
from edgelesion.preprocessing import Preprocessing


@dataclass(frozen=True)
class ImageRecord:
    """One image file: its path relative to the dataset root (POSIX form) and its class folder."""

    relpath: str
    label: str


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not used, and why."""

    relpath: str
    reason: str


@dataclass
class LoadedDataset:
    """Every readable image of a dataset folder, decoded to model input, with content hashes.

    `records`, `images`, `sha256` and `phash` are aligned: entry i describes the same file.
    """

    root: Path
    classes: list[str]
    records: list[ImageRecord]
    images: np.ndarray  # N x H x W x 3, uint8
    sha256: list[str]
    phash: np.ndarray  # N, uint64: 64-bit perceptual hash of the full-size image
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """Class index of every image, in `classes` order."""
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[r.label] for r in self.records], dtype=np.int64)

    def fingerprint(self) -> str:
        """sha256 over the file list, labels and file contents (skipped files by name and reason)."""
        digest = hashlib.sha256()
        for record, sha in sorted(zip(self.records, self.sha256), key=lambda item: item[0].relpath):
            digest.update(f"{record.relpath}\t{record.label}\t{sha}\n".encode())
        for skipped in sorted(self.skipped, key=lambda s: s.relpath):
            digest.update(f"{skipped.relpath}\tskipped\t{skipped.reason}\n".encode())
        return digest.hexdigest()

    def subset(self, indices: np.ndarray | list[int]) -> LoadedDataset:
        """The images at `indices`, in that order (same classes, no skipped list)."""
        indices = np.asarray(indices, dtype=np.int64)
        return LoadedDataset(
            root=self.root,
            classes=self.classes,
            records=[self.records[i] for i in indices],
            images=self.images[indices],
            sha256=[self.sha256[i] for i in indices],
            phash=self.phash[indices],
        )


def class_folders(root: str | Path) -> list[str]:
    """Names of the class subfolders of `root`, sorted; checks that the folder is usable."""
    root = Path(root)
    if not root.exists():
        raise EdgelesionError(f"data folder {root} does not exist: pass --data with a folder of class subfolders")
    if not root.is_dir():
        raise EdgelesionError(f"data folder {root} is a file, not a folder: pass the folder that holds the class subfolders")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise EdgelesionError(
            f"data folder {root} has no class subfolders: put each class's images in a subfolder named after the class"
        )
    return names


def list_files(root: Path, classes: list[str]) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Every file under each class folder: image candidates, and files skipped for their suffix."""
    records, skipped = [], []
    for label in classes:
        for path in sorted((root / label).rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            relpath = path.relative_to(root).as_posix()
            if path.suffix.lower() in IMAGE_SUFFIXES:
                records.append(ImageRecord(relpath, label))
            else:
                skipped.append(SkippedFile(relpath, f"not a JPEG, PNG or BMP file (suffix {path.suffix or 'none'!r})"))
    return records, skipped


def load_dataset(
    root: str | Path,
    preprocessing: Preprocessing,
    *,
    classes: list[str] | None = None,
    min_classes: int = 2,
    progress: bool = True,
) -> LoadedDataset:
    """Decode every image under `root`'s class folders; unreadable files are skipped and listed.

    `classes` fixes the class list (for a test folder scored by a trained model): its folders
    may be a subset of it, but a folder that is not one of them is an error.
    """
    root = Path(root)
    found = class_folders(root)
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise EdgelesionError(
                f"{root} has class folders the model does not know: {', '.join(map(repr, unknown))}; "
                f"the model's classes are {', '.join(map(repr, classes))}"
            )
    if len(found) < min_classes:
        raise EdgelesionError(
            f"{root} has only {len(found)} class folder ({', '.join(found)}): a classifier needs at least "
            f"{min_classes} classes, each in its own subfolder"
        )
    candidates, skipped = list_files(root, found)

    def decode(record: ImageRecord) -> tuple[str, int, np.ndarray] | str:
        try:
            decoded = read_image(root / record.relpath, preprocessing.draft_side)
        except UnreadableImage as exc:
            return str(exc)
        phash = int(str(imagehash.phash(decoded.image)), 16)
        return decoded.sha256, phash, to_model_input(decoded.image, preprocessing)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(
            tqdm(pool.map(decode, candidates), total=len(candidates), desc=f"reading {root.name}",
                 unit="img", disable=not progress)
        )
    records, arrays, shas, phashes = [], [], [], []
    for record, result in zip(candidates, results):
        if isinstance(result, str):
            skipped.append(SkippedFile(record.relpath, result))
            continue
        records.append(record)
        shas.append(result[0])
        phashes.append(result[1])
        arrays.append(result[2])
    empty = [label for label in found if not any(r.label == label for r in records)]
    if empty:
        raise EdgelesionError(
            f"class folder(s) {', '.join(repr(str(root / e)) for e in empty)} hold no readable images: "
            "add images or remove the folder"
        )
    size = preprocessing.image_size
    return LoadedDataset(
        root=root,
        classes=list(classes),
        records=records,
        images=np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8),
        sha256=shas,
        phash=np.array(phashes, dtype=np.uint64),
        skipped=sorted(skipped, key=lambda s: s.relpath),
    )
