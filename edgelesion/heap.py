"""Large buffers go straight back to the system: glibc's malloc serves blocks of 4 MiB and more with their own maps.

glibc raises its mmap threshold each time a mapped block is freed (up to 32 MiB); after that, TensorFlow's
activations and gradients of that size come from malloc's arenas (one per thread), which keep what is freed.
Training's resident memory then wanders by a gigabyte within an epoch, and its peak grows with the number of steps,
so with the dataset. A fixed threshold ends the raising; at 4 MiB it costs Lite0's training no CPU time that
alternating epochs can measure, where 1 MiB costs several percent (both: benchmarks/results/large_datasets_*.md).

A user's own MALLOC_MMAP_THRESHOLD_ (or glibc tunables) is left as it is; elsewhere than glibc nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD_BYTES = 4 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, malloc.h


def map_large_buffers() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD_BYTES for this process; whether it was set here."""
    if platform.libc_ver()[0] != "glibc" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    if "glibc.malloc.mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
