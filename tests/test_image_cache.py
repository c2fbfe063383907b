"""The decoded-image cache: each file decoded once, never a stale or half-built entry trusted, builds that stop are
finished later, two builds at once end in one entry, a full disk says so."""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_image

from edgelesion.cli import main
from edgelesion.data import image_cache
from edgelesion.data.dataset import load_dataset
from edgelesion.data.image_cache import cache_entries, cached_images, images_cache_dir
from edgelesion.data.image_rows import ImageRows
from edgelesion.errors import EdgelesionError
from edgelesion.images import read_image, to_model_input
from edgelesion.preprocessing import Preprocessing

PRE = Preprocessing(image_size=16)


def decoded_directly(root: Path, relpaths: list[str]) -> np.ndarray:
    return np.stack([to_model_input(read_image(root / r, PRE.draft_side).image, PRE) for r in relpaths])


def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a file was decoded again")

    monkeypatch.setattr(image_cache, "read_image", refuse)


def test_a_second_load_decodes_nothing_and_gives_the_same_images(dataset_dir, monkeypatch):
    first = load_dataset(dataset_dir, PRE, progress=False)
    assert first.decoded == 36
    assert isinstance(first.images.arrays[0], np.memmap)  # read from disk, not held in memory
    no_decoding(monkeypatch)
    second = load_dataset(dataset_dir, PRE, progress=False)
    assert second.decoded == 0
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    assert second.fingerprint() == first.fingerprint() and np.array_equal(second.phash, first.phash)
    relpaths = [r.relpath for r in second.records]
    assert np.array_equal(np.asarray(second.images), decoded_directly(dataset_dir, relpaths))


def test_a_centre_crop_has_its_own_entry_and_whole_images_keep_the_key_they_had_before_the_crop(dataset_dir):
    whole = load_dataset(dataset_dir, PRE, progress=False)
    cropped = replace(PRE, centre_crop=0.5)
    centre = load_dataset(dataset_dir, cropped, progress=False)
    before_the_crop = {"image_size", "resize_method", "color_order", "jpeg_draft", "jpeg_draft_margin", "pillow"}
    assert centre.decoded == 36 and set(image_cache.decoding(PRE)) == before_the_crop
    relpaths = [r.relpath for r in centre.records]
    expected = np.stack([to_model_input(read_image(dataset_dir / r).image, cropped) for r in relpaths])
    assert np.array_equal(np.asarray(centre.images), expected)
    assert not np.array_equal(np.asarray(centre.images), np.asarray(whole.images))


def test_a_changed_or_added_file_is_decoded_the_rest_copied_and_the_old_entry_goes(dataset_dir):
    load_dataset(dataset_dir, PRE, progress=False)
    changed, added = dataset_dir / "nevus" / "img_000.jpg", dataset_dir / "nevus" / "new.jpg"
    synthetic_image(np.random.default_rng(99), (0, 0, 0)).save(changed, quality=95)
    os.utime(changed, ns=(1, 1))  # even a file given back an old time is seen: its size and time both count
    synthetic_image(np.random.default_rng(98), (0, 0, 0)).save(added, quality=95)
    again = load_dataset(dataset_dir, PRE, progress=False)
    assert again.decoded == 2  # the 35 others are copied from the earlier entry
    relpaths = [r.relpath for r in again.records]
    assert len(relpaths) == 37 and np.array_equal(np.asarray(again.images), decoded_directly(dataset_dir, relpaths))
    assert len(cache_entries()) == 1


def test_unreadable_files_are_remembered_with_their_reason(dataset_dir, monkeypatch):
    (dataset_dir / "melanoma" / "broken.jpg").write_bytes(b"not a jpeg")
    first = load_dataset(dataset_dir, PRE, progress=False)
    no_decoding(monkeypatch)
    second = load_dataset(dataset_dir, PRE, progress=False)
    assert [s.relpath for s in second.skipped] == ["melanoma/broken.jpg"] and second.skipped == first.skipped
    assert len(second.records) == 36


@pytest.mark.parametrize("damage", ["truncate images", "edit index"])
def test_a_damaged_entry_is_never_trusted(dataset_dir, damage):
    first = load_dataset(dataset_dir, PRE, progress=False)
    expected = np.asarray(first.images)  # read before the damage: a file cut short under a live mapping faults
    (entry,) = cache_entries()
    if damage == "truncate images":
        with open(entry.folder / "images.npy", "r+b") as handle:
            handle.truncate(1000)
    else:
        index = (entry.folder / "index.json").read_text()
        (entry.folder / "index.json").write_text(index.replace(first.sha256[0], "0" * 64))
    again = load_dataset(dataset_dir, PRE, progress=False)
    assert again.decoded == 36 and again.sha256 == first.sha256
    assert np.array_equal(np.asarray(again.images), expected)


def test_a_build_whose_process_was_killed_is_finished_by_the_next(dataset_dir, isolated_cache):
    relpaths = sorted(p.relative_to(dataset_dir).as_posix() for p in dataset_dir.rglob("*.jpg"))
    script = f"""
import os
from pathlib import Path
from edgelesion.data import image_cache
from edgelesion.preprocessing import Preprocessing
image_cache.CHUNK = 8
decode, calls = image_cache._decode, []
def dies_after_two_chunks(path, preprocessing):
    calls.append(path)
    if len(calls) > 16:
        os._exit(9)  # killed part-way through the third chunk
    return decode(path, preprocessing)
image_cache._decode = dies_after_two_chunks
image_cache.cached_images(Path({str(dataset_dir)!r}), {relpaths!r}, Preprocessing(image_size=16), progress=False)
"""
    killed = subprocess.run(
        [sys.executable, "-c", script], check=False, env={**os.environ, "EDGELESION_CACHE": str(isolated_cache)}
    )
    assert killed.returncode == 9
    (left,) = images_cache_dir().iterdir()
    assert left.name.startswith(".") and left.name.endswith(".staging")  # unfinished: never used as an entry
    image_cache.CHUNK = 8
    finished = cached_images(dataset_dir, relpaths, PRE, progress=False)
    assert finished.decoded_now == 36 - 16  # the two marked chunks were kept
    assert np.array_equal(np.asarray(finished.images), decoded_directly(dataset_dir, relpaths))
    assert [p.name for p in images_cache_dir().iterdir()] == [finished.folder.name]


def test_two_builds_at_once_end_in_one_entry(dataset_dir, monkeypatch):
    relpaths = sorted(p.relative_to(dataset_dir).as_posix() for p in dataset_dir.rglob("*.jpg"))
    start, results, decode = threading.Barrier(2), [], image_cache._decode
    # slowed so that each build is still decoding when the other starts: both build, one entry is kept
    monkeypatch.setattr(image_cache, "_decode", lambda path, pre: time.sleep(0.01) or decode(path, pre))

    def build() -> None:
        start.wait()
        results.append(cached_images(dataset_dir, relpaths, PRE, progress=False))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0].folder == results[1].folder
    assert [r.decoded_now for r in results] == [36, 36]  # both really built
    assert [p.name for p in images_cache_dir().iterdir()] == [results[0].folder.name]  # no staging left behind
    assert all(np.array_equal(np.asarray(r.images), decoded_directly(dataset_dir, relpaths)) for r in results)


def test_too_little_free_disk_is_refused_before_decoding(dataset_dir, monkeypatch):
    monkeypatch.setattr(image_cache.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    with pytest.raises(EdgelesionError, match=r"cache needs .* GB more .* EDGELESION_CACHE"):
        load_dataset(dataset_dir, PRE, progress=False)
    assert cache_entries() == []


def test_a_disk_filling_up_mid_build_gives_a_clear_error_and_no_entry(dataset_dir, monkeypatch):
    writes = []

    def fills_up(fd: int, data: bytes, offset: int) -> int:
        writes.append(offset)
        if len(writes) > 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.pwrite(fd, data, offset)

    monkeypatch.setattr(image_cache.os, "pwrite", fills_up)
    with pytest.raises(EdgelesionError, match="is full"):
        load_dataset(dataset_dir, PRE, progress=False)
    assert cache_entries() == []
    monkeypatch.undo()
    assert load_dataset(dataset_dir, PRE, progress=False).decoded == 36


def test_the_cache_command_lists_entries_and_clears_them(dataset_dir, isolated_cache, capsys):
    load_dataset(dataset_dir, PRE, progress=False)
    assert main(["cache"]) == 0
    listed = capsys.readouterr().out
    assert str(isolated_cache) in listed and "36 images" in listed and str(dataset_dir.resolve()) in listed
    assert main(["cache", "--clear"]) == 0
    assert "freed" in capsys.readouterr().out and cache_entries() == []
    assert load_dataset(dataset_dir, PRE, progress=False).decoded == 36


def test_image_rows_index_like_the_array_they_stand_for():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (5, 4, 4, 3), np.uint8), rng.integers(0, 255, (3, 4, 4, 3), np.uint8)
    joined, expected = ImageRows([a]).concat(ImageRows([b])), np.concatenate([a, b])
    assert joined.shape == expected.shape and np.array_equal(np.asarray(joined), expected)
    picks = np.array([7, 0, 5, 5, 2])
    assert np.array_equal(joined[picks], expected[picks]) and np.array_equal(joined[2:6], expected[2:6])
    assert np.array_equal(joined.take(picks)[1:3], expected[picks][1:3]) and np.array_equal(joined[6], expected[6])
    assert [len(batch) for batch in joined.batches(3)] == [3, 3, 2]


def test_two_file_lists_of_one_folder_keep_their_own_entries(dataset_dir):
    relpaths = sorted(p.relative_to(dataset_dir).as_posix() for p in dataset_dir.rglob("*.jpg"))
    cached_images(dataset_dir, relpaths, PRE, progress=False)  # as audit reads the folder
    cached_images(dataset_dir, relpaths[:20], PRE, progress=False)  # as train with a metadata CSV may
    assert len(cache_entries()) == 2
    assert cached_images(dataset_dir, relpaths, PRE, progress=False).decoded_now == 0
    assert cached_images(dataset_dir, relpaths[:20], PRE, progress=False).decoded_now == 0


def test_a_file_that_became_readable_is_decoded_again(dataset_dir):
    fixed = dataset_dir / "melanoma" / "img_000.jpg"
    good, status = fixed.read_bytes(), fixed.stat()
    fixed.write_bytes(bytes(len(good)))  # same size, unreadable
    os.utime(fixed, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert "melanoma/img_000.jpg" in [s.relpath for s in load_dataset(dataset_dir, PRE, progress=False).skipped]
    fixed.write_bytes(good)  # restored with its old size and time: only its status change time tells
    os.utime(fixed, ns=(status.st_atime_ns, status.st_mtime_ns))
    again = load_dataset(dataset_dir, PRE, progress=False)
    assert again.decoded == 1 and not again.skipped and len(again.records) == 36


def test_a_stopped_build_with_a_garbled_log_starts_over(dataset_dir, isolated_cache):
    relpaths = sorted(p.relative_to(dataset_dir).as_posix() for p in dataset_dir.rglob("*.jpg"))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True)
    key = image_cache.entry_key(dataset_dir, image_cache.file_listing(dataset_dir, relpaths), PRE)
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())  # as owner marks spell it
    staging = images_cache_dir() / f".{key}.owner-{host}-{int(gone.stdout)}.ab12.staging"
    staging.mkdir(parents=True)
    (staging / "images.npy").write_bytes(b"\x00" * 100)
    (staging / "progress.jsonl").write_bytes(b"\x00\xff torn")
    built = cached_images(dataset_dir, relpaths, PRE, progress=False)
    assert built.decoded_now == 36 and [p.name for p in images_cache_dir().iterdir()] == [built.folder.name]


def test_short_writes_are_completed(dataset_dir, monkeypatch):
    write = os.pwrite
    monkeypatch.setattr(image_cache.os, "pwrite", lambda fd, data, offset: write(fd, bytes(data[:100]), offset))
    data = load_dataset(dataset_dir, PRE, progress=False)
    relpaths = [r.relpath for r in data.records]
    assert np.array_equal(np.asarray(data.images), decoded_directly(dataset_dir, relpaths))
