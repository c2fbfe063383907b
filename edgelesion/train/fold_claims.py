"""Claims on cross-validation folds, so that several jobs sharing one cv folder each train different folds.

A job claims fold K by creating `fold-K.claim` exclusively (a hard link, which never replaces a file, on network file
systems too) and keeps it fresh while it trains: a thread touches it every CLAIM_REFRESH_SECONDS. A claim is stale,
and the next job takes it over, when its process is gone (same host) or it has not been touched for
CLAIM_STALE_SECONDS (a job on another machine that stopped). Finishing the fold removes the claim.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edgelesion.fileio import create_exclusively, process_gone

CLAIM_REFRESH_SECONDS = 60.0
CLAIM_STALE_SECONDS = 600.0  # ten missed refreshes
# tells this process from an earlier one with the same pid (a restarted container's process is often pid 1 again)
PROCESS_TOKEN = secrets.token_hex(8)


def claim_owner() -> dict[str, object]:
    """Who claims: this host and process, and when."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process": PROCESS_TOKEN,
        "claimed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_claim(path: Path) -> dict[str, object] | None:
    """The owner a claim names, or None where there is no (readable) claim."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def claim_is_stale(path: Path, stale_seconds: float = CLAIM_STALE_SECONDS) -> bool:
    """A claim whose process is gone (this host: no such pid, or the pid is now another process), or that nobody
    has touched for `stale_seconds`."""
    owner = read_claim(path)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False  # released meanwhile: nothing to take over, it can simply be claimed
    if owner and owner.get("host") == socket.gethostname():
        pid = int(str(owner.get("pid")))
        if process_gone(pid) or (pid == os.getpid() and owner.get("process") != PROCESS_TOKEN):
            return True
    return age > stale_seconds


def try_claim(path: Path, stale_seconds: float = CLAIM_STALE_SECONDS) -> bool:
    """Claim `path` for this process: whether it is now ours. A stale claim is moved aside and taken over; of jobs
    taking it over at once, one gets it."""
    mine = json.dumps(claim_owner())
    if create_exclusively(path, mine):
        return True
    if not claim_is_stale(path, stale_seconds):
        return False
    stale = read_claim(path)
    aside = path.with_name(f".{path.name}.{secrets.token_hex(4)}.taken-over")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return create_exclusively(path, mine)
    moved = read_claim(aside)
    if moved != stale:  # another job took it over between our look and our move: give its fresh claim back
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink()
        return False
    aside.unlink()
    return create_exclusively(path, mine)


@contextlib.contextmanager
def kept_fresh(path: Path, refresh_seconds: float = CLAIM_REFRESH_SECONDS) -> Iterator[None]:
    """Touch the claim `path` every `refresh_seconds` while the block runs, then remove it (if still ours)."""
    done = threading.Event()
    owner = read_claim(path)

    def refresh() -> None:
        while not done.wait(refresh_seconds):
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)

    thread = threading.Thread(target=refresh, name=f"claim {path.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if read_claim(path) == owner:
            path.unlink(missing_ok=True)


def run_unless_claimed(claim: Path, label: str, finished: Callable[[], bool], work: Callable[[], None]) -> None:
    """Run `work` (train or resume one fold) holding `claim`, unless the fold is finished or another job holds it."""
    if finished():
        print(f"{label}: finished, kept")
        return
    if not try_claim(claim):
        owner = read_claim(claim) or {}
        print(f"{label}: being trained by process {owner.get('pid')} on {owner.get('host')} ({claim}), skipped")
        return
    with kept_fresh(claim):
        if not finished():  # not finished by another job between our look and our claim
            work()
