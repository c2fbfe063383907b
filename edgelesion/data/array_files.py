"""uint8 arrays written to disk whole or not at all: reserved up front, written in full, published by one rename."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np

from edgelesion.errors import EdgelesionError

HEADROOM = 64 << 20  # bytes a build leaves free beyond its own size


def need_space(folder: Path, needed: int) -> None:
    """Refuse to start writing `needed` bytes into `folder` unless the disk keeps HEADROOM free after them."""
    free = shutil.disk_usage(folder).free
    if free < needed + HEADROOM:
        raise EdgelesionError(
            f"the cache needs {needed / 1e9:.2f} GB more at {folder.parent} but the disk has "
            f"{free / 1e9:.2f} GB free: free some space, or point EDGELESION_CACHE at a larger disk"
        )


def create_array(path: Path, shape: tuple[int, ...]) -> int:
    """Write an .npy header for a uint8 array of `shape` and reserve its bytes; the header's length."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|u1", "fortran_order": False, "shape": shape})
        offset = handle.tell()
        handle.flush()
        reserve = getattr(os, "posix_fallocate", None)  # not on macOS
        try:  # reserved now, a full disk fails here rather than part-way through
            if reserve is None:
                raise OSError(errno.EOPNOTSUPP, "no posix_fallocate")
            reserve(handle.fileno(), 0, offset + int(np.prod(shape)))
        except OSError as exc:
            if is_disk_full(exc):
                raise
            handle.truncate(offset + int(np.prod(shape)))  # a file system without preallocation
    return offset


def write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of `data` at `offset` (os.pwrite may write less than asked, on a full disk or a network file
    system; the rest is written again, and a disk with no room left raises ENOSPC)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def is_disk_full(exc: OSError) -> bool:
    """An error of a disk (or quota) with no room left."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def publish(staging: Path, target: Path) -> None:
    """Rename a finished `staging` folder to `target`; where another process put the same entry there first, keep
    theirs and remove ours."""
    try:
        os.rename(staging, target)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        shutil.rmtree(staging, ignore_errors=True)


def disk_full_error(folder: Path, what: str) -> EdgelesionError:
    """The error a full disk gives while writing `what` into `folder`."""
    return EdgelesionError(
        f"the disk holding {what} {folder} is full: free some space or point EDGELESION_CACHE at a larger disk"
    )
