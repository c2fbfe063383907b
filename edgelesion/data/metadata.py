"""A metadata CSV beside a dataset: each image's source, its lesion and patient groups, and optionally its label.

One row per image. The key column holds a path relative to the data folder (`melanoma/ISIC_1.jpg`) or an image
id matched to file names without their suffix (`ISIC_1`, as the ISIC challenge archives ship). Labels come from
one label column, or from one-hot columns (the ISIC 2019 ground truth: a column per class holding 1.0 or 0.0); with
CSV labels, the data folder may be flat.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from edgelesion.errors import EdgelesionError
from edgelesion.images import IMAGE_SUFFIXES

# The key column when none is named: the first of these the CSV has (edgelesion's own, ISIC 2019, ISIC 2020,
# the ISIC archive's metadata export).
KEY_COLUMNS = ("path", "image", "image_name", "isic_id")


@dataclass(frozen=True)
class MetadataSpec:
    """Which CSV, and what its columns mean. `label_columns` items are `COLUMN` or `COLUMN=class name`."""

    csv: Path
    key_column: str | None = None  # None: the first of KEY_COLUMNS present
    source_column: str | None = None
    group_columns: tuple[str, ...] = ()
    label_column: str | None = None
    label_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "csv", Path(self.csv))
        object.__setattr__(self, "group_columns", tuple(self.group_columns))
        object.__setattr__(self, "label_columns", tuple(self.label_columns))
        if self.label_column and self.label_columns:
            raise EdgelesionError("--label-column and --label-columns both name labels: give one of them")

    @property
    def has_labels(self) -> bool:
        """Labels come from the CSV, not from class folders."""
        return bool(self.label_column or self.label_columns)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, the CSV as an absolute path."""
        return {
            "csv": str(self.csv.resolve()),
            "key_column": self.key_column,
            "source_column": self.source_column,
            "group_columns": list(self.group_columns),
            "label_column": self.label_column,
            "label_columns": list(self.label_columns),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetadataSpec:
        """Inverse of to_dict."""
        return cls(**data)


@dataclass(frozen=True)
class ImageMetadata:
    """What the CSV says of one image."""

    source: str | None
    groups: tuple[str, ...]  # "column=value" for every non-empty group column
    label: str | None


@dataclass
class Metadata:
    """A read metadata CSV: one entry per key, and the fingerprint of what was read."""

    spec: MetadataSpec
    fingerprint: str
    entries: dict[str, ImageMetadata]
    key_is_path: bool
    classes: list[str] = field(default_factory=list)  # the label columns' classes, in column order

    def lookup(self, relpath: str) -> tuple[str, ImageMetadata] | None:
        """The key and entry of the image at `relpath` (a POSIX path relative to the data folder), if any."""
        key = relpath if self.key_is_path else PurePosixPath(relpath).stem
        entry = self.entries.get(key)
        return None if entry is None else (key, entry)


def _label_columns(spec: MetadataSpec) -> list[tuple[str, str]]:
    """(column, class name) of every one-hot label column."""
    pairs = []
    for item in spec.label_columns:
        column, _, name = item.partition("=")
        pairs.append((column.strip(), (name or column).strip()))
    return pairs


def _one_hot_label(row: dict[str, str], columns: list[tuple[str, str]], where: str) -> str:
    hot = []
    for column, name in columns:
        try:
            value = float(row[column] or 0)
        except ValueError as exc:
            raise EdgelesionError(f"{where}: column {column!r} holds {row[column]!r}, not 0 or 1") from exc
        if value > 0.5:
            hot.append(name)
    if len(hot) != 1:
        raise EdgelesionError(
            f"{where}: {len(hot)} of the label columns are 1 ({', '.join(hot) or 'none'}); each image needs exactly one"
        )
    return hot[0]


def read_metadata(spec: MetadataSpec) -> Metadata:
    """Read and check the CSV: named columns exist, keys are unique, every row has what is asked of it."""
    path = spec.csv
    if not path.is_file():
        raise EdgelesionError(f"metadata CSV {path} does not exist: pass --metadata with a CSV file, one row per image")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EdgelesionError(f"metadata CSV {path} is not UTF-8 text ({exc}): save it as UTF-8 CSV") from exc
    reader = csv.DictReader(text.splitlines())
    columns = reader.fieldnames or []
    if not columns:
        raise EdgelesionError(f"metadata CSV {path} is empty: it needs a header row and one row per image")
    key = spec.key_column or next((c for c in KEY_COLUMNS if c in columns), None)
    if key is None:
        raise EdgelesionError(
            f"metadata CSV {path} has none of the key columns {', '.join(KEY_COLUMNS)}: name the "
            f"column of image paths or ids with --key-column (its columns: {', '.join(columns)})"
        )
    label_columns = _label_columns(spec)
    named = {
        "--key-column": [key],
        "--source-column": [spec.source_column] if spec.source_column else [],
        "--group-columns": list(spec.group_columns),
        "--label-column": [spec.label_column] if spec.label_column else [],
        "--label-columns": [c for c, _ in label_columns],
    }
    for option, wanted in named.items():
        if missing := [c for c in wanted if c not in columns]:
            raise EdgelesionError(
                f"{option} {', '.join(missing)}: no such column in {path} (its columns: {', '.join(columns)})"
            )
    entries: dict[str, ImageMetadata] = {}
    keys_seen: list[str] = []
    for number, row in enumerate(reader, start=2):
        where = f"{path}, line {number}"
        value = (row[key] or "").strip()
        if not value:
            raise EdgelesionError(f"{where}: the key column {key!r} is empty")
        if value in entries:
            raise EdgelesionError(f"{where}: {value!r} has a second row; give each image one row")
        source = (row[spec.source_column] or "").strip() if spec.source_column else None
        if spec.source_column and not source:
            raise EdgelesionError(
                f"{where}: the source column {spec.source_column!r} is empty for {value!r}; "
                "fill it (an unknown source can be written as 'unknown')"
            )
        groups = tuple(f"{c}={row[c].strip()}" for c in spec.group_columns if (row[c] or "").strip())
        label = None
        if spec.label_column:
            label = (row[spec.label_column] or "").strip()
            if not label:
                raise EdgelesionError(f"{where}: the label column {spec.label_column!r} is empty for {value!r}")
        elif label_columns:
            label = _one_hot_label(row, label_columns, where)
        entries[value] = ImageMetadata(source, groups, label)
        keys_seen.append(value)
    if not entries:
        raise EdgelesionError(f"metadata CSV {path} has a header but no rows")
    # a key naming a file by its path has a folder or a suffix; an id has neither
    key_is_path = any("/" in k or PurePosixPath(k).suffix.lower() in IMAGE_SUFFIXES for k in keys_seen)
    digest = hashlib.sha256(raw)
    digest.update(repr(sorted({**spec.to_dict(), "csv": None, "key_column": key}.items())).encode())
    return Metadata(spec, digest.hexdigest(), entries, key_is_path, [name for _, name in label_columns])
