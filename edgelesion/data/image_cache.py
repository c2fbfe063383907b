"""Decode each image of a dataset folder once into an on-disk cache, read memory-mapped ever after.

An entry holds, for one list of files (each path with its size and modification time) and one way of decoding them
(input side, resize filter, JPEG draft): `images.npy`, every image resized to uint8 (row i is file i; zeros where a
file could not be read), `index.json`, every file's sha256 and perceptual hash or why it could not be read, and
`entry.json`, what the entry is for. Entries are built in an owner-marked staging folder and renamed into place
whole, so a reader only ever sees a finished entry: of two processes building the same entry at once, the first
rename wins and the other uses it; a build whose process stopped is picked up where it stopped by the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import PIL
from tqdm import tqdm

from edgelesion.data.array_files import create_array, disk_full_error, is_disk_full, need_space, publish, write_at
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import (
    adopt_staging,
    discard,
    read_json,
    remove_all_litter,
    staging_dir,
    write_json,
)
from edgelesion.images import UnreadableImage, read_image, to_model_input
from edgelesion.preprocessing import Preprocessing

CACHE_FORMAT = 1
CHUNK = 256  # images decoded between two progress marks: the most an interrupted build decodes again


def default_cache_dir() -> Path:
    """$EDGELESION_CACHE, else ~/.cache/edgelesion."""
    return Path(os.environ.get("EDGELESION_CACHE", Path.home() / ".cache" / "edgelesion"))


def images_cache_dir(cache_dir: Path | None = None) -> Path:
    """The folder holding the decoded-image entries."""
    return (cache_dir or default_cache_dir()) / "images"


@dataclass(frozen=True)
class CachedFile:
    """What decoding one file gave: its hashes, or why it could not be read."""

    sha256: str | None = None
    phash: int | None = None  # 64-bit perceptual hash of the full-size image
    error: str | None = None


@dataclass
class CachedImages:
    """A finished cache entry: `images` (memory-mapped, row i is file i) and `files`, aligned."""

    folder: Path
    images: np.ndarray
    files: list[CachedFile]
    decoded_now: int  # files this call decoded: 0 when the entry was already built


def decoding(preprocessing: Preprocessing) -> dict[str, Any]:
    """What decides the decoded pixels: the preprocessing fields that change them (the in-model scaling does not)
    and the Pillow release that decodes and resizes. A whole image (no centre crop) is keyed as it was before the crop
    existed, so caches made then stay valid."""
    fields = {k: v for k, v in preprocessing.to_dict().items() if k not in ("scale", "offset")}
    if preprocessing.centre_crop == 1:
        del fields["centre_crop"]
    return {**fields, "pillow": PIL.__version__}


def images_identity(sha256: Sequence[str], preprocessing: Preprocessing) -> str:
    """A name for the decoded images of files with these contents, in this order: what a cache of images made
    from them (Augmentor's) is keyed by."""
    return hashlib.sha256(json.dumps([list(sha256), decoding(preprocessing)]).encode()).hexdigest()


Stat = tuple[str, int, int, int]  # a file's path, size, modification time and status change time (ns)


def file_listing(root: Path, relpaths: Sequence[str]) -> list[Stat]:
    """Each file's path, size, modification and status change times: what tells a cache entry that the files did not
    change, without reading them (a chmod that makes an unreadable file readable changes the status time). A file
    that cannot be stat'ed gets -1s (decoding then says why it cannot be read)."""
    listing = []
    for relpath in relpaths:
        try:
            status = os.stat(root / relpath)
            listing.append((relpath, status.st_size, status.st_mtime_ns, status.st_ctime_ns))
        except OSError:
            listing.append((relpath, -1, -1, -1))
    return listing


def entry_key(root: Path, listing: list[Stat], preprocessing: Preprocessing) -> str:
    """The entry's name: a hash of the folder, every file's path, size and times, and the decoding."""
    payload = json.dumps([CACHE_FORMAT, str(root.resolve()), decoding(preprocessing), listing])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _index_hash(listing: list[Any], files: list[CachedFile]) -> str:
    payload = json.dumps([listing, [[f.sha256, f.phash, f.error] for f in files]])
    return hashlib.sha256(payload.encode()).hexdigest()


def _row_bytes(preprocessing: Preprocessing) -> int:
    return preprocessing.image_size**2 * 3


def _open_entry(folder: Path, key: str, listing: list[Any], preprocessing: Preprocessing) -> CachedImages | None:
    """The entry in `folder` if it is whole and is the one wanted (key, shape, decoding, index hash), else None."""
    try:
        entry, index = read_json(folder / "entry.json"), read_json(folder / "index.json")
        size = preprocessing.image_size
        files = [CachedFile(*row) for row in index["files"]]
        if (
            entry.get("format") != CACHE_FORMAT
            or entry.get("key") != key
            or entry.get("decoding") != decoding(preprocessing)
            or index.get("listing") != [list(item) for item in listing]
            or index.get("index_sha256") != _index_hash(index["listing"], files)
        ):
            return None
        images = np.load(folder / "images.npy", mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if images.shape != (len(listing), size, size, 3) or images.dtype != np.uint8:
        return None
    return CachedImages(folder, images, files, decoded_now=0)


def _decode(path: Path, preprocessing: Preprocessing) -> tuple[CachedFile, np.ndarray | None]:
    try:
        decoded = read_image(path, preprocessing.draft_side)
    except UnreadableImage as exc:
        return CachedFile(error=str(exc)), None
    phash = int(str(imagehash.phash(decoded.image)), 16)
    return CachedFile(decoded.sha256, phash), to_model_input(decoded.image, preprocessing)


def _resume(staging: Path, key: str) -> list[CachedFile]:
    """The files a stopped build of `key` finished in `staging` (whole chunks only), rewriting its progress log
    without any torn last line; nothing (and an emptied folder) when it was building something else or its log
    cannot be read."""
    log = staging / "progress.jsonl"
    done: list[CachedFile] = []
    try:
        lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
        usable = bool(lines) and (staging / "images.npy").is_file() and json.loads(lines[0]).get("key") == key
    except (ValueError, AttributeError):  # a torn or garbled first line (ValueError covers bad UTF-8 too)
        usable = False
    if not usable:
        for item in staging.iterdir():
            shutil.rmtree(item) if item.is_dir() else item.unlink()
        return []
    kept = [lines[0]]
    for line in lines[1:]:
        try:
            chunk = json.loads(line)
            files = [CachedFile(*row) for row in chunk["files"]]
            in_order = chunk["start"] == len(done)
        except (ValueError, KeyError, TypeError):
            break
        if not in_order:
            break
        done += files
        kept.append(line)
    log.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    return done


def _header_length(path: Path) -> int:
    with open(path, "rb") as handle:
        np.lib.format.read_magic(handle)
        np.lib.format.read_array_header_1_0(handle)
        return handle.tell()


Known = tuple[CachedFile, np.ndarray, int]  # a file's result in an earlier entry, that entry's images and its row


def _entries_of(cache: Path, root: Path, preprocessing: Preprocessing) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The finished entries in `cache` made for folder `root` with this decoding, and each one's index."""
    for other in sorted(cache.iterdir()):
        if other.name.startswith("."):  # builds in progress and removals: never read or touched here
            continue
        try:
            entry = read_json(other / "entry.json")
            if entry.get("root") != str(root.resolve()) or entry.get("decoding") != decoding(preprocessing):
                continue
            yield other, read_json(other / "index.json")
        except (OSError, ValueError):
            continue


def _earlier_results(cache: Path, root: Path, preprocessing: Preprocessing) -> dict[tuple[str, int, int], Known]:
    """The decoded files of a finished entry of the same folder and decoding, made before some files were added,
    changed or removed, by path, size and modification time: a new build copies these instead of decoding them
    again. Files that could not be read are not among them: they are always tried again."""
    for other, index in _entries_of(cache, root, preprocessing):
        try:
            images = np.load(other / "images.npy", mmap_mode="r")
            files = [CachedFile(*row) for row in index["files"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        whole = index.get("index_sha256") == _index_hash(index["listing"], files)
        if whole and images.shape[0] == len(files) == len(index["listing"]):
            return {
                (item[0], item[1], item[2]): (f, images, row)
                for row, (item, f) in enumerate(zip(index["listing"], files))
                if f.error is None
            }
    return {}


def _build(
    staging: Path,
    root: Path,
    listing: list[Stat],
    key: str,
    preprocessing: Preprocessing,
    progress: bool,
) -> int:
    """Decode every file not yet in `staging` into it (copying those an earlier entry of the folder holds unchanged)
    and finish the entry; the number decoded."""
    files = _resume(staging, key)
    size, n = preprocessing.image_size, len(listing)
    array_path, log = staging / "images.npy", staging / "progress.jsonl"
    size_on_disk = (array_path.stat().st_blocks * 512) if array_path.is_file() else 0  # reserved by a stopped build
    need_space(staging, max(0, n * _row_bytes(preprocessing) - size_on_disk) + n * 256)
    if files:
        offset = _header_length(array_path)
    else:
        offset = create_array(array_path, (n, size, size, 3))
        log.write_text(json.dumps({"key": key, "root": str(root), "images": n}) + "\n", encoding="utf-8")
    earlier, decoded = _earlier_results(staging.parent, root, preprocessing), 0

    def result(item: Stat) -> tuple[CachedFile, np.ndarray | None, bool]:
        """The file's hashes and pixels, and whether it had to be decoded."""
        if (known := earlier.get((item[0], item[1], item[2]))) is not None:
            found, images, row = known
            return found, np.asarray(images[row]), False
        return (*_decode(root / item[0], preprocessing), True)

    label = f"decoding {root.name} once into the cache" + (f" (resumed at {len(files)})" if files else "")
    with (
        ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool,
        tqdm(total=n, initial=len(files), desc=label, unit="img", disable=not progress) as bar,
        open(array_path, "r+b") as handle,
        open(log, "a", encoding="utf-8") as marks,
    ):
        for start in range(len(files), n, CHUNK):
            chunk = listing[start : start + CHUNK]
            results = list(pool.map(result, chunk))
            for row, (_, pixels, _) in enumerate(results, start):
                if pixels is not None:
                    write_at(handle.fileno(), pixels.tobytes(), offset + row * _row_bytes(preprocessing))
            handle.flush()
            # a chunk is marked done only after its pixels are written: a resumed build trusts whole marks only
            marks.write(json.dumps({"start": start, "files": [list(asdict(f).values()) for f, _, _ in results]}) + "\n")
            marks.flush()
            files += [f for f, _, _ in results]
            decoded += sum(was_decoded for _, _, was_decoded in results)
            bar.update(len(chunk))
        os.fsync(handle.fileno())
    write_json(
        staging / "index.json",
        {
            "listing": listing,
            "files": [list(asdict(f).values()) for f in files],
            "index_sha256": _index_hash([list(item) for item in listing], files),
        },
    )
    write_json(
        staging / "entry.json",
        {
            "format": CACHE_FORMAT,
            "key": key,
            "root": str(root.resolve()),
            "decoding": decoding(preprocessing),
            "images": n,
            "unreadable": sum(f.error is not None for f in files),
            "bytes": array_path.stat().st_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    log.unlink()
    return decoded


def _remove_superseded(folder: Path, root: Path, listing: list[Stat], preprocessing: Preprocessing) -> None:
    """Remove the other entries of the same folder and decoding that hold a file since changed or gone (an entry of
    another list of the same unchanged files, as audit and train with a metadata CSV may read, is kept)."""
    now = {item[0]: item for item in listing}

    def changed(item: list[Any]) -> bool:
        return tuple(item) != now[item[0]] if item[0] in now else not (root / item[0]).exists()

    for other, index in _entries_of(folder.parent, root, preprocessing):
        if other != folder and any(changed(item) for item in index.get("listing", [])):
            discard(other, missing_ok=True)


def cached_images(
    root: Path,
    relpaths: Sequence[str],
    preprocessing: Preprocessing,
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> CachedImages:
    """The decoded images and hashes of `relpaths` under `root`, decoded only where no finished entry has them."""
    listing = file_listing(root, relpaths)
    key = entry_key(root, listing, preprocessing)
    target = images_cache_dir(cache_dir) / key
    found = _open_entry(target, key, listing, preprocessing)
    if found is not None:
        return found
    if target.exists():  # damaged or half-removed: never trusted, rebuilt
        discard(target, missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = adopt_staging(target)
    remove_all_litter(target.parent)  # stopped builds of other file lists: they would hold disk space for ever
    staging = staging or staging_dir(target)
    try:
        decoded = _build(staging, root, listing, key, preprocessing, progress)
    except OSError as exc:
        if is_disk_full(exc):
            error = disk_full_error(target.parent, "the image cache")
            raise EdgelesionError(
                f"{error}; the unfinished entry is never used as it is, and the next run finishes it "
                "(`edgelesion cache --clear` removes it)"
            ) from exc
        raise
    publish(staging, target)
    found = _open_entry(target, key, listing, preprocessing)
    if found is None:
        raise EdgelesionError(f"the image cache entry {target} could not be read back after building it")
    _remove_superseded(target, root, listing, preprocessing)
    found.decoded_now = decoded
    return found


@dataclass(frozen=True)
class CacheEntry:
    """One finished entry, as `edgelesion cache` lists it."""

    folder: Path
    root: str
    images: int
    bytes: int
    created: str


def cache_entries(cache_dir: Path | None = None) -> list[CacheEntry]:
    """The finished entries of the image cache, newest first."""
    folder = images_cache_dir(cache_dir)
    entries = []
    for item in folder.iterdir() if folder.is_dir() else []:
        try:
            described = read_json(item / "entry.json")
        except (OSError, ValueError):
            continue
        entries.append(
            CacheEntry(item, described["root"], described["images"], folder_bytes(item), described["created"])
        )
    return sorted(entries, key=lambda e: e.created, reverse=True)


def folder_bytes(folder: Path) -> int:
    """Bytes of every file under `folder`."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def clear_cache(cache_dir: Path | None = None) -> tuple[int, list[Path]]:
    """Remove every finished entry of the image cache and the augmentation cache, and the unfinished builds of
    stopped processes; the bytes freed, and the builds of running processes (left alone)."""
    root = cache_dir or default_cache_dir()
    freed, busy = 0, []
    for part in (root / "images", root / "augmented"):
        if not part.is_dir():
            continue
        before = folder_bytes(part)
        remove_all_litter(part)
        for item in sorted(part.iterdir()):
            if item.name.startswith("."):  # a build of a running process
                busy.append(item)
                continue
            discard(item, missing_ok=True)
        freed += before - folder_bytes(part)
    return freed, busy


def format_cache(cache_dir: Path | None = None) -> str:
    """Where the cache is, its entries (newest first) and the bytes each part holds."""
    root = cache_dir or default_cache_dir()
    entries = cache_entries(cache_dir)
    lines = [f"cache folder: {root} (EDGELESION_CACHE sets it)"]
    lines += [
        f"  {e.images:>9,} images  {e.bytes / 1e9:8.2f} GB  {e.created}  {e.root}  ({e.folder.name})" for e in entries
    ]
    images, augmented = folder_bytes(root / "images"), folder_bytes(root / "augmented")
    lines.append(
        f"decoded images: {len(entries)} entries, {images / 1e9:.2f} GB (with unfinished builds); Augmentor's "
        f"extra images: {augmented / 1e9:.2f} GB; total {(images + augmented) / 1e9:.2f} GB"
    )
    return "\n".join(lines)
