"""Output a user can act on, and nothing else: the lines TensorFlow's and LiteRT's C++ code writes straight to the
process's stderr (oneDNN and CUDA notices at import, the XNNPACK delegate on every new interpreter) are dropped,
unless EDGELESION_VERBOSE=1 (`--verbose` on the command line)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def verbose() -> bool:
    """Whether the user asked to see every library's own output."""
    return os.environ.get("EDGELESION_VERBOSE", "") not in ("", "0")


# fd 2 is the process's: one redirect at a time, however many threads or nested blocks ask for it
_lock = threading.Lock()
_holders = 0
_saved_stderr: int | None = None


@contextmanager
def native_stderr_dropped() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block (C++ code writes there, past Python's sys.stderr),
    unless verbose. Nested and concurrent blocks share one redirect, undone when the last one ends."""
    if verbose():
        yield
        return
    global _holders, _saved_stderr
    with _lock:
        if _holders == 0:
            sys.stderr.flush()
            _saved_stderr, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _saved_stderr is not None:
                os.dup2(_saved_stderr, 2)
                os.close(_saved_stderr)
                _saved_stderr = None
