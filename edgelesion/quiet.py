"""Output a user can act on, and nothing else: the lines TensorFlow's and LiteRT's C++ code writes straight to the
process's stderr (oneDNN and CUDA notices at import, the XNNPACK delegate on every new interpreter) are dropped,
unless EDGELESION_VERBOSE=1 (`--verbose` on the command line)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def verbose() -> bool:
    """Whether the user asked to see every library's own output."""
    return os.environ.get("EDGELESION_VERBOSE", "") not in ("", "0")


@contextmanager
def native_stderr_dropped() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block (C++ code writes there, past Python's sys.stderr),
    unless verbose."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)
