"""Read a folder of class subfolders into decoded, hashed images; skip and report bad files."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgelesion.data.image_cache import cached_images, images_cache_dir
from edgelesion.data.image_rows import ImageRows, as_rows
from edgelesion.data.metadata import Metadata, MetadataSpec, read_metadata
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import ensure_outside
from edgelesion.images import IMAGE_SUFFIXES
from edgelesion.preprocessing import Preprocessing

NO_ROW = "no row in the metadata CSV"  # why an image a metadata CSV does not describe is skipped


@dataclass(frozen=True)
class ImageRecord:
    """One image file: its path relative to the dataset root (POSIX form), its label (class folder or metadata
    CSV), and what a metadata CSV says of where it comes from: its source and its lesion/patient groups."""

    relpath: str
    label: str
    source: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not used, and why."""

    relpath: str
    reason: str


@dataclass
class LoadedDataset:
    """Every readable image of a dataset folder, decoded to model input, with content hashes.

    `records`, `images`, `sha256` and `phash` are aligned: entry i describes the same file. The images are rows of
    the decoded-image cache, read from disk as they are indexed (an array in memory is wrapped as it is).
    """

    root: Path
    classes: list[str]
    records: list[ImageRecord]
    images: ImageRows  # N images, H x W x 3 uint8
    sha256: list[str]
    phash: np.ndarray  # N, uint64: 64-bit perceptual hash of the full-size image
    skipped: list[SkippedFile] = field(default_factory=list)
    metadata: Metadata | None = None
    unmatched_rows: list[str] = field(default_factory=list)  # metadata keys that match no file
    decoded: int = 0  # files decoded to load it: 0 when the cache already held them all

    def __post_init__(self) -> None:
        self.images = as_rows(self.images)

    @property
    def sources(self) -> list[str] | None:
        """Every image's source, in record order; None without a source column."""
        if self.metadata is None or self.metadata.spec.source_column is None:
            return None
        return [str(r.source) for r in self.records]

    @property
    def labels(self) -> np.ndarray:
        """Class index of every image, in `classes` order."""
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[r.label] for r in self.records], dtype=np.int64)

    def fingerprint(self) -> str:
        """sha256 over the file list, labels and file contents (skipped files by name and reason), and with
        metadata, each image's source and groups."""
        digest = hashlib.sha256()
        for record, sha in sorted(zip(self.records, self.sha256), key=lambda item: item[0].relpath):
            described = f"{record.relpath}\t{record.label}\t{sha}"
            if self.metadata is not None:
                described += f"\t{record.source}\t{','.join(record.groups)}"
            digest.update(f"{described}\n".encode())
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
            images=self.images.take(indices),
            sha256=[self.sha256[i] for i in indices],
            phash=self.phash[indices],
            metadata=self.metadata,
        )


def _check_root(root: Path) -> None:
    if not root.exists():
        raise EdgelesionError(f"data folder {root} does not exist: pass --data with a folder of class subfolders")
    if not root.is_dir():
        raise EdgelesionError(
            f"data folder {root} is a file, not a folder: pass the folder that holds the class subfolders"
        )


def class_folders(root: str | Path) -> list[str]:
    """Names of the class subfolders of `root`, sorted; checks that the folder is usable."""
    root = Path(root)
    _check_root(root)
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise EdgelesionError(
            f"data folder {root} has no class subfolders: put each class's images in a subfolder named after the class"
            " (or give labels in a metadata CSV with --label-column)"
        )
    return names


def list_files(root: Path, classes: list[str]) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Every file under each class folder: image candidates, and files skipped for their suffix."""
    records, skipped = [], []
    for label in classes:
        found, unusable = _image_files(root, root / label)
        records += [ImageRecord(relpath, label) for relpath in found]
        skipped += unusable
    return records, skipped


def _image_files(root: Path, folder: Path) -> tuple[list[str], list[SkippedFile]]:
    """Relative paths of the image files under `folder` (any depth), and the files skipped for their suffix."""
    found, skipped = [], []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        relpath = path.relative_to(root).as_posix()
        if path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(relpath)
        else:
            skipped.append(SkippedFile(relpath, f"not a JPEG, PNG or BMP file (suffix {path.suffix or 'none'!r})"))
    return found, skipped


def list_with_metadata(root: Path, metadata: Metadata) -> tuple[list[ImageRecord], list[SkippedFile], list[str]]:
    """Every image file with what the CSV says of it: labels from the CSV (any folder layout) or from class folders.

    Images without a row are skipped and listed (never silently); the third list holds the keys of rows that match
    no image file.
    """
    if metadata.spec.has_labels:
        _check_root(root)
        candidates, skipped = _image_files(root, root)
        labelled = [(relpath, None) for relpath in candidates]
    else:
        records, skipped = list_files(root, class_folders(root))
        labelled = [(r.relpath, r.label) for r in records]
    records, matched = [], set()
    for relpath, folder_label in labelled:
        found = metadata.lookup(relpath)
        if found is None:
            skipped.append(SkippedFile(relpath, f"{NO_ROW} {metadata.spec.csv.name}"))
            continue
        key, entry = found
        if key in matched:
            raise EdgelesionError(
                f"the metadata key {key!r} matches two files (one is {relpath}): image ids must be "
                "unique file names, or key the CSV by path relative to the data folder"
            )
        matched.add(key)
        records.append(ImageRecord(relpath, entry.label or str(folder_label), entry.source, entry.groups))
    return records, skipped, sorted(set(metadata.entries) - matched)


def _described_files(root: Path, table: Metadata) -> tuple[list[str], list[ImageRecord], list[SkippedFile], list[str]]:
    """The classes, image candidates, skipped files and unmatched rows of a folder described by a metadata CSV;
    images without a row and rows without an image are counted on the terminal."""
    candidates, skipped, unmatched = list_with_metadata(root, table)
    if not candidates:
        raise EdgelesionError(
            f"no image under {root} has a row in {table.spec.csv}: check --key-column and that the "
            "CSV describes this folder"
        )
    if unmatched:
        print(
            f"note: {len(unmatched)} rows of {table.spec.csv} match no image file under {root} "
            f"(first: {', '.join(unmatched[:3])}); audit.json lists them all"
        )
    if without := sum(s.reason.startswith(NO_ROW) for s in skipped):
        print(
            f"note: {without} images under {root} have no row in {table.spec.csv} and are skipped, each listed "
            "with the skipped files"
        )
    present = {r.label for r in candidates}
    classes = [c for c in table.classes if c in present] if table.classes else sorted(present)
    return classes, candidates, skipped, unmatched


def load_dataset(
    root: str | Path,
    preprocessing: Preprocessing,
    *,
    classes: list[str] | None = None,
    min_classes: int = 2,
    progress: bool = True,
    metadata: MetadataSpec | None = None,
) -> LoadedDataset:
    """Every image under `root`'s class folders, decoded once into the image cache ($EDGELESION_CACHE, else
    ~/.cache/edgelesion) and read from there; unreadable files are skipped and listed.

    `classes` fixes the class list (for a test folder scored by a trained model): its folders
    may be a subset of it, but a folder that is not one of them is an error. With `metadata`, each
    image gets its source and groups from that CSV, and its label too where the CSV has labels.
    """
    root = Path(root)
    table = read_metadata(metadata) if metadata is not None else None
    unmatched: list[str] = []
    if table is None:
        found = class_folders(root)
        candidates, skipped = list_files(root, found)
    else:
        found, candidates, skipped, unmatched = _described_files(root, table)
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise EdgelesionError(
                f"{root} has classes the model does not know: {', '.join(map(repr, unknown))}; "
                f"the model's classes are {', '.join(map(repr, classes))}"
            )
    if len(found) < min_classes:
        raise EdgelesionError(
            f"{root} has only {len(found)} class {'folder' if table is None else 'in its metadata labels'} "
            f"({', '.join(found)}): a classifier needs at least {min_classes} classes"
        )

    size = preprocessing.image_size
    images = ImageRows([np.zeros((0, size, size, 3), np.uint8)])
    records, shas, phashes, decoded = [], [], [], 0
    if candidates:
        ensure_outside(images_cache_dir(), root, flag="the image cache (EDGELESION_CACHE)")
        cached = cached_images(root, [r.relpath for r in candidates], preprocessing, progress=progress)
        rows = []
        for row, (record, result) in enumerate(zip(candidates, cached.files)):
            if result.error is not None:
                skipped.append(SkippedFile(record.relpath, result.error))
                continue
            rows.append(row)
            records.append(record)
            shas.append(str(result.sha256))
            phashes.append(result.phash)
        images, decoded = ImageRows([cached.images]).take(rows), cached.decoded_now
    empty = [label for label in found if not any(r.label == label for r in records)]
    if empty and table is None:
        raise EdgelesionError(
            f"class folder(s) {', '.join(repr(str(root / e)) for e in empty)} hold no readable images: "
            "add images or remove the folder"
        )
    return LoadedDataset(
        root=root,
        classes=list(classes),
        records=records,
        images=images,
        sha256=shas,
        phash=np.array(phashes, dtype=np.uint64),
        skipped=sorted(skipped, key=lambda s: s.relpath),
        metadata=table,
        unmatched_rows=unmatched,
        decoded=decoded,
    )
