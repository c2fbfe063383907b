"""Atomic writes leave no litter: what a killed process left beside a target is removed by the next command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from edgelesion import fileio
from edgelesion.fileio import staging_dir, write_json


def test_the_staging_folder_of_a_killed_process_is_removed_by_the_next_one_and_nothing_else_is(tmp_path, capsys):
    target = tmp_path / "bundle"
    code = (
        "import sys, time; from pathlib import Path; from edgelesion.fileio import staging_dir; "
        f"s = staging_dir(Path({str(target)!r})); (s / 'half.tflite').write_bytes(b'x'); print(s, flush=True); "
        "time.sleep(120)"
    )
    killed = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    left = tmp_path / killed.stdout.readline().strip()
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert (left / "half.tflite").is_file()  # SIGKILL runs no cleanup: this is the litter
    host = fileio._host()
    in_use = tmp_path / f".bundle.owner-{host}-{os.getpid()}.abcd1234.staging"  # a live process's: kept
    elsewhere = tmp_path / f".bundle.owner-otherhost-{killed.pid}.efgh5678.staging"  # another machine's: kept
    other_target = tmp_path / f".bundle2.owner-{host}-{killed.pid}.ijkl9012.staging"  # not this target's: kept
    for folder in (in_use, elsewhere, other_target):
        folder.mkdir()
    fresh = staging_dir(target)
    assert not left.exists() and fresh.is_dir() and all(f.is_dir() for f in (in_use, elsewhere, other_target))
    assert f"removed {left}: left by process {killed.pid}, which stopped before finishing" in capsys.readouterr().err
    stale_tmp = tmp_path / f".results.json.owner-{host}-{killed.pid}.mnop3456.tmp.json"
    stale_tmp.write_text("{")
    write_json(tmp_path / "results.json", {"ok": True})  # atomic writes clean their own place too
    assert not stale_tmp.exists() and (tmp_path / "results.json").read_text().strip().endswith("}")


def test_an_old_copy_moved_aside_by_a_killed_replacement_is_put_back(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "bundle"
    old = tmp_path / f".bundle.owner-{fileio._host()}-{dead.pid}.0.old"  # killed between the two renames
    old.mkdir()
    (old / "bundle.json").write_text("{}")
    staging_dir(target)
    assert (target / "bundle.json").read_text() == "{}" and not old.exists()
    assert f"put back {target}" in capsys.readouterr().err
