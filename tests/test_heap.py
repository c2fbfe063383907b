"""Training's large buffers are mapped, not kept in malloc's arenas (glibc only): each case in a fresh process,
since the threshold is process-wide and glibc changes it as blocks are freed."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the mmap threshold is glibc's")

PROBE = """
import ctypes, sys
names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in names]
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes, libc.mallinfo2.restype = ctypes.c_void_p, [ctypes.c_void_p], MallInfo2
if sys.argv[1] == "heap":
    from edgelesion.heap import map_large_buffers
    print("set" if map_large_buffers() else "left")
elif sys.argv[1] == "tensorflow":
    import edgelesion._tf
size = 8 << 20
libc.free(libc.malloc(size))  # glibc's own threshold rises past 8 MiB here
before = libc.mallinfo2().hblkhd
block = libc.malloc(size)
print("mapped" if libc.mallinfo2().hblkhd - before >= size else "arena")
"""


def probe(how: str, **env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"} | env
    done = subprocess.run(
        [sys.executable, "-c", PROBE, how], check=False, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_freed_large_block_no_longer_sends_the_next_one_to_an_arena():
    assert probe("nothing") == ["arena"]  # glibc's dynamic threshold, which the setting exists to stop
    assert probe("heap") == ["set", "mapped"]


def test_importing_tensorflow_through_edgelesion_sets_it():
    assert probe("tensorflow") == ["mapped"]


def test_a_users_own_threshold_is_kept():
    assert probe("heap", MALLOC_MMAP_THRESHOLD_=str(16 << 20)) == ["left", "arena"]
