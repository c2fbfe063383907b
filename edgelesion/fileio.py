"""Atomic writes: every file edgelesion writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgelesion.errors import EdgelesionError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Every temporary file or folder beside a target is named .TARGET.owner-HOST-PID.RANDOM.KIND, so that a later
# command can tell one whose process was killed (removed) from one still in use (kept).
_OWNED = re.compile(
    r"^\.(?P<target>.+)\.owner-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.(?P<random>[^.]+)\."
    r"(?P<kind>staging|old|tmp.*)$"
)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _owner_prefix(target: Path) -> str:
    return f".{target.name}.owner-{_host()}-{os.getpid()}."


def process_gone(pid: int) -> bool:
    """Whether no process `pid` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_litter(target: Path) -> list[Path]:
    """Remove the temporary files and folders beside `target` left by processes of this host that have stopped
    (killed mid-write), saying so; a left-over old copy whose replacement never arrived is put back instead.

    Returns what was removed or put back. Litter of a live process, or of another host, is left alone.
    """
    handled: list[Path] = []
    if not target.parent.is_dir():
        return handled
    for entry in target.parent.iterdir():
        match = _OWNED.match(entry.name)
        if (
            not match
            or match["target"] != target.name
            or match["host"] != _host()
            or not process_gone(int(match["pid"]))
        ):
            continue
        try:  # another command may be cleaning the same place
            if match["kind"] == "old" and not target.exists():
                os.replace(entry, target)
                print(
                    f"put back {target}: a replacement was interrupted (process {match['pid']} stopped) after the "
                    "old copy was moved aside",
                    file=sys.stderr,
                )
            else:
                discard(entry, target)
                print(
                    f"removed {entry}: left by process {match['pid']}, which stopped before finishing", file=sys.stderr
                )
        except FileNotFoundError:
            continue
        handled.append(entry)
    return handled


def discard(path: Path, target: Path | None = None, *, missing_ok: bool = False) -> None:
    """Remove a file or folder (litter of `target`, else its own), moved first to a name of this process: a folder
    another process adopts or opens at this moment is never emptied under it, and a removal that is itself killed
    is litter that a later command removes. With `missing_ok`, a path already gone (another process took it) is
    no error."""
    doomed = path.with_name(f"{_owner_prefix(target or path)}{secrets.token_hex(4)}.tmp-removing")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    shutil.rmtree(doomed) if doomed.is_dir() and not doomed.is_symlink() else doomed.unlink()


def remove_all_litter(folder: Path) -> list[Path]:
    """`remove_litter` for every target in `folder` that has litter beside it."""
    targets = {m["target"] for e in (folder.iterdir() if folder.is_dir() else []) if (m := _OWNED.match(e.name))}
    return [removed for name in sorted(targets) for removed in remove_litter(folder / name)]


def staging_dir(target: Path) -> Path:
    """A new empty folder beside `target` to build it in, before replace_dir or a rename moves it into place
    (removing the litter of killed earlier attempts first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_litter(target)
    staging = Path(tempfile.mkdtemp(prefix=_owner_prefix(target), suffix=".staging", dir=target.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the result is an ordinary folder
    return staging


def adopt_staging(target: Path) -> Path | None:
    """A staging folder for `target` left by a stopped process of this host, renamed as this process's own so that
    the build it holds can be finished; None where there is none. Of two processes adopting at once, one gets it."""
    if not target.parent.is_dir():
        return None
    for entry in sorted(target.parent.iterdir()):
        match = _OWNED.match(entry.name)
        if (
            match
            and match["target"] == target.name
            and match["kind"] == "staging"
            and match["host"] == _host()
            and process_gone(int(match["pid"]))
        ):
            mine = target.parent / f"{_owner_prefix(target)}{secrets.token_hex(4)}.staging"
            try:
                os.rename(entry, mine)
            except FileNotFoundError:
                continue
            return mine
    return None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_litter(target)
    fd, tmp = tempfile.mkstemp(prefix=_owner_prefix(target), suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def create_exclusively(target: str | os.PathLike, text: str) -> bool:
    """Write `text` to `target` only if no file is there yet, whole; whether this call made it. The file is written
    beside it and hard-linked into place: a link never replaces a file, on network file systems too."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_owner_prefix(target), suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.link(tmp, target)
        except FileExistsError:
            # over NFS a link whose reply was lost is retried and reported as existing: two names mean it is ours
            return os.stat(tmp).st_nlink == 2
        return True
    finally:
        os.unlink(tmp)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write `text` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON to `target` atomically."""
    write_text(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(target: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write rows under `header` as CSV to `target` atomically."""
    with atomic_path(target) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV file with a header row into a list of dicts."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def replace_dir(staging: Path, target: Path) -> None:
    """Move a fully written `staging` folder onto `target` (new or old), removing any old `target` only after."""
    old = target.with_name(f"{_owner_prefix(target)}0.old")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_outside(out: str | os.PathLike, data_root: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse an output folder inside the user's dataset folder: edgelesion never writes there."""
    out_path, root = Path(out).resolve(), Path(data_root).resolve()
    if out_path == root or root in out_path.parents:
        raise EdgelesionError(
            f"{flag} {out} is inside the dataset folder {data_root}: edgelesion never writes "
            "there; choose a folder outside it"
        )
