"""Claims on cross-validation folds, so that several jobs sharing one cv folder each train different folds.

A job claims fold K by creating `fold-K.claim` exclusively (a hard link, which never replaces a file, on network file
systems too) and keeps it fresh while it trains: a thread touches it every CLAIM_REFRESH_SECONDS. A claim is stale,
and another job takes it over, when its process is gone (a process of this host, boot and pid namespace) or it has
not been touched for CLAIM_STALE_SECONDS by the file system's own clock (a job elsewhere that stopped). Takeovers are
serialised by an exclusively created `fold-K.claim.takeover` file, and the stale claim is replaced in one rename, so
the claim file is never missing while a fold is held. A job that finds its claim taken over stops training that fold.
Finishing the fold removes the claim.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgelesion.errors import EdgelesionError
from edgelesion.fileio import create_exclusively, process_gone

CLAIM_REFRESH_SECONDS = 60.0
# a waiting job looks at the claims it waits for this often: a stat or two, cheap on any file system, so it merges
# within seconds of the last fold finishing rather than up to a refresh later
CLAIM_POLL_SECONDS = 5.0
CLAIM_STALE_SECONDS = 600.0  # ten missed refreshes
TAKEOVER_STALE_SECONDS = 60.0  # a takeover takes milliseconds: a lock this old belongs to a job killed during one
# tells this process from an earlier one with the same pid (a restarted container's process is often pid 1 again)
PROCESS_TOKEN = secrets.token_hex(8)


def _boot_id() -> str | None:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return None


def _pid_namespace() -> int | None:
    with contextlib.suppress(OSError):
        return os.stat("/proc/self/ns/pid").st_ino
    return None


def claim_owner() -> dict[str, Any]:
    """Who claims: this host (name, boot, pid namespace: containers sharing a host name each have their own pids),
    this process, and when."""
    return {
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pid_namespace": _pid_namespace(),
        "pid": os.getpid(),
        "process": PROCESS_TOKEN,
        "claimed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_claim(path: Path) -> dict[str, Any] | None:
    """The owner a claim names, or None where there is no (readable) claim."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _file_system_now(folder: Path) -> float:
    """The time of the file system holding `folder` (a network file system's server may differ from this clock)."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".clock-") as probe:
        return os.fstat(probe.fileno()).st_mtime


def _age(path: Path) -> float | None:
    """Seconds since `path` was last touched, by its file system's clock; None where it is gone."""
    try:
        return _file_system_now(path.parent) - path.stat().st_mtime
    except FileNotFoundError:
        return None


def _owner_gone(owner: dict[str, Any] | None) -> bool:
    """A claim's process that can be seen from here (same host, boot and pid namespace) and has stopped, or whose
    pid is now another process's."""
    if not owner:
        return False
    here = claim_owner()
    if any(owner.get(key) != here[key] for key in ("host", "boot", "pid_namespace")):
        return False
    pid = int(owner.get("pid", -1))
    return process_gone(pid) or (pid == os.getpid() and owner.get("process") != PROCESS_TOKEN)


def claim_is_stale(path: Path, stale_seconds: float = CLAIM_STALE_SECONDS) -> bool:
    """A claim whose process is gone, or that nobody has touched for `stale_seconds`."""
    owner, age = read_claim(path), _age(path)
    return age is not None and (_owner_gone(owner) or age > stale_seconds)


def try_claim(path: Path, stale_seconds: float = CLAIM_STALE_SECONDS) -> dict[str, Any] | None:
    """Claim `path` for this process: the claim written, or None where another job holds it. A stale claim is taken
    over; of jobs taking it over at once, one gets it."""
    mine = claim_owner()
    text = json.dumps(mine)
    if create_exclusively(path, text):
        return mine
    lock = path.with_name(path.name + ".takeover")
    if not create_exclusively(lock, text):
        if (age := _age(lock)) is not None and age > TAKEOVER_STALE_SECONDS:
            lock.unlink(missing_ok=True)  # left by a job killed mid-takeover; the next try takes the lock
        return None
    try:
        if not claim_is_stale(path, stale_seconds):
            return None
        replacement = path.with_name(f".{path.name}.{PROCESS_TOKEN}.new")
        replacement.write_text(text, encoding="utf-8")
        os.replace(replacement, path)  # the claim is never missing: no job can create one meanwhile
        return mine if read_claim(path) == mine else None
    finally:
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def kept_fresh(path: Path, owner: dict[str, Any], refresh_seconds: float = CLAIM_REFRESH_SECONDS) -> Iterator[None]:
    """Touch `owner`'s claim `path` every `refresh_seconds` while the block runs, then remove it if still theirs.
    Where another job has taken the claim over, this job is interrupted (KeyboardInterrupt in the main thread)."""
    done, lost = threading.Event(), threading.Event()

    def refresh() -> None:
        while not done.wait(refresh_seconds):
            if read_claim(path) not in (owner, None):
                lost.set()
                _thread.interrupt_main()
                return
            with contextlib.suppress(OSError):  # a network file system's hiccup: tried again next time
                os.utime(path)

    thread = threading.Thread(target=refresh, name=f"claim {path.name}", daemon=True)
    thread.start()
    try:
        with _interruptible(lost):
            yield
    except KeyboardInterrupt:
        if lost.is_set():
            taker = read_claim(path) or {}
            raise EdgelesionError(
                f"{path} was taken over by process {taker.get('pid')} on {taker.get('host')} (this job stopped "
                "touching it for too long): this job stops training that fold; the other job resumes it"
            ) from None
        raise
    finally:
        done.set()
        thread.join()
        if read_claim(path) == owner:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _interruptible(lost: threading.Event) -> Iterator[None]:
    """Let the refresh thread's interrupt_main() reach the main thread, which it does only while SIGINT has a Python
    handler. A job started in the background by a non-interactive shell (a batch script's `edgelesion cv ... &`)
    ignores SIGINT: for the block, SIGINT gets a handler that raises for a lost claim and otherwise does what a real
    interrupt did before (nothing where it was ignored; a KeyboardInterrupt where it ended the process)."""
    previous = signal.getsignal(signal.SIGINT)
    set_outside_python = previous is None
    if set_outside_python or callable(previous) or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum: int, frame: Any) -> None:
        if lost.is_set() or previous == signal.SIG_DFL:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# label -> (its claim file, whether it is finished, what trains it)
Claims = dict[str, tuple[Path, Callable[[], bool], Callable[[], None]]]


def _holder(claim: Path) -> str:
    """Who holds `claim`, for a message."""
    holder = read_claim(claim) or {}
    return f"process {holder.get('pid')} on {holder.get('host')} ({claim})"


def run_claimed(
    claims: Claims,
    wait_seconds: float = CLAIM_POLL_SECONDS,
) -> None:
    """Train every fold in `claims` (label -> its claim file, whether it is finished, what trains it) that no other
    job holds; then wait for the folds others hold, taking over any whose job stopped, until all are finished."""
    waiting_for: set[str] = set()
    for label, (_, finished, _) in claims.items():
        if finished():
            print(f"{label}: finished, kept")
    while unfinished := [label for label, (_, finished, _) in claims.items() if not finished()]:
        held_elsewhere = []
        for label in unfinished:
            claim, finished, work = claims[label]
            if finished():
                continue
            owner = try_claim(claim)
            if owner is None:
                held_elsewhere.append(label)
                if label not in waiting_for:
                    print(
                        f"{label}: being trained by {_holder(claim)}; "
                        f"waiting for it (taken over if its claim is not touched for {CLAIM_STALE_SECONDS:.0f} s)",
                        file=sys.stderr,
                    )
                    waiting_for.add(label)
                continue
            with kept_fresh(claim, owner):
                if not finished():  # not finished by another job between our look and our claim
                    work()
        if held_elsewhere:
            time.sleep(wait_seconds)


def run_claimed_in_step(claims: Claims, *, chief: bool) -> None:
    """Train the one fold in `claims` with the other workers of a multi-worker strategy: the chief claims it (and
    stops with an error, which stops the others, if another job holds it); the other workers train it in step.

    Unlike `run_claimed`, the chief does not look again after claiming: the workers decided together from one look,
    and a chief alone turning back would leave them waiting in step. A fold another job finishes between that look
    and the claim is resumed after its last epoch, so it is scored again, not trained again."""
    if len(claims) != 1:
        raise EdgelesionError(
            f"a multi-worker strategy trains one fold at a time over its workers, not {len(claims)}: pick the fold "
            "with --only-folds K (with --leave-source-out, --only-sources SOURCE); each fold may be its own job"
        )
    ((label, (claim, finished, work)),) = claims.items()
    if finished():
        print(f"{label}: finished, kept")
        return
    if not chief:
        work()
        return
    owner = try_claim(claim)
    if owner is None:
        raise EdgelesionError(
            f"{label} is being trained by {_holder(claim)}: "
            "start this multi-worker job on another fold, or again once that job has stopped"
        )
    with kept_fresh(claim, owner):
        work()
