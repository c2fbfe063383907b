"""Folds as separate jobs: a fold is claimed by one job at a time, a stopped job's claim is taken over, and jobs
sharing one cv folder train each fold exactly once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgelesion.errors import EdgelesionError
from edgelesion.fileio import read_json
from edgelesion.train.fold_claims import claim_owner, kept_fresh, read_claim, run_claimed, try_claim


def test_of_many_jobs_claiming_at_once_exactly_one_gets_the_fold(tmp_path):
    for attempt in range(20):
        claim, start, won = tmp_path / f"fold-{attempt}.claim", threading.Barrier(4), []

        def contend(claim: Path = claim, start: threading.Barrier = start, won: list[bool] = won) -> None:
            start.wait()
            won.append(try_claim(claim) is not None)

        threads = [threading.Thread(target=contend) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(won) == [False, False, False, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"fold-{k}.claim" for k in range(20))  # no litter


def owned_by(claim: Path, **changes: object) -> None:
    claim.write_text(json.dumps({**claim_owner(), **changes}))


def test_a_stopped_jobs_claim_is_taken_over_and_a_live_ones_is_not(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True)
    claim = tmp_path / "fold-0.claim"
    owned_by(claim, pid=int(gone.stdout))
    assert try_claim(claim) == read_claim(claim) and read_claim(claim)["pid"] == os.getpid()
    owned_by(claim, pid=os.getppid())  # a live process of this host
    assert try_claim(claim) is None
    owned_by(claim, process="earlier")  # this pid, an earlier process's: a restarted container's
    assert try_claim(claim) and read_claim(claim)["process"] != "earlier"
    owned_by(claim, pid=int(gone.stdout), pid_namespace=1)  # another container's pids: not seen from here
    assert try_claim(claim) is None
    owned_by(claim, host="another-machine", pid=1)  # kept fresh by its job
    assert try_claim(claim) is None
    os.utime(claim, (time.time() - 3600, time.time() - 3600))  # its job stopped touching it an hour ago
    assert try_claim(claim) and read_claim(claim)["host"] == claim_owner()["host"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold-0.claim"]


TAKEN_OVER_IN_THE_BACKGROUND = """
import json, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a non-interactive shell starts a background job
from edgelesion.errors import EdgelesionError
from edgelesion.train.fold_claims import claim_owner, kept_fresh, try_claim
claim = Path(sys.argv[1])
try:
    with kept_fresh(claim, try_claim(claim), refresh_seconds=0.05):
        claim.write_text(json.dumps({**claim_owner(), "host": "another-machine", "pid": 1}))
        for _ in range(100):
            time.sleep(0.05)
except EdgelesionError as stopped:
    print(stopped)
print("ignored again" if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else "changed")
"""


def test_a_job_started_in_the_background_also_stops_when_its_claim_is_taken_over(tmp_path):
    job = [sys.executable, "-c", TAKEN_OVER_IN_THE_BACKGROUND, str(tmp_path / "fold-3.claim")]
    said = subprocess.run(job, capture_output=True, check=True, text=True).stdout
    assert "taken over by process 1 on another-machine" in said and said.endswith("ignored again\n")


def test_a_claim_is_touched_while_held_and_removed_after(tmp_path):
    claim = tmp_path / "fold-1.claim"
    owner = try_claim(claim)
    os.utime(claim, (1, 1))
    with kept_fresh(claim, owner, refresh_seconds=0.05):
        time.sleep(0.3)
        assert claim.stat().st_mtime > 1
    assert not claim.exists()


def test_a_job_whose_claim_was_taken_over_stops(tmp_path):
    claim = tmp_path / "fold-2.claim"
    owner = try_claim(claim)
    taken_over = pytest.raises(EdgelesionError, match="taken over by process 1 on another-machine")
    with taken_over, kept_fresh(claim, owner, refresh_seconds=0.05):
        owned_by(claim, host="another-machine", pid=1)
        for _ in range(100):  # short sleeps: the interrupt lands between them, long before the 5 s are up
            time.sleep(0.05)
    assert read_claim(claim)["host"] == "another-machine"  # the other job's claim is left alone


def test_a_job_waits_for_folds_held_elsewhere_and_takes_over_a_stopped_one(tmp_path):
    held, stopped = tmp_path / "fold-0.claim", tmp_path / "fold-1.claim"
    owned_by(held, pid=os.getppid())
    owned_by(stopped, host="another-machine", pid=1)
    os.utime(stopped, (time.time() - 3600, time.time() - 3600))
    done, trained = set(), []

    def work(label: str) -> None:
        trained.append(label)
        done.add(label)

    def other_job_finishes() -> None:
        time.sleep(0.3)
        done.add("fold 0")
        held.unlink()

    threading.Thread(target=other_job_finishes).start()
    run_claimed(
        {
            label: (claim, lambda label=label: label in done, lambda label=label: work(label))
            for label, claim in (("fold 0", held), ("fold 1", stopped))
        },
        wait_seconds=0.05,
    )
    assert trained == ["fold 1"] and done == {"fold 0", "fold 1"}


JOB = """
import sys
from pathlib import Path
from edgelesion.preprocessing import Preprocessing
from edgelesion.train.config import TrainConfig
from edgelesion.train.cross_validation import cross_validate
config = TrainConfig(model="seed-simple", epochs=1, batch_size=8, folds=3, min_support=2, rebalance="none",
                     preprocessing=Preprocessing(image_size=24))
cross_validate(Path(sys.argv[1]), Path(sys.argv[2]), config, progress=False)
"""


def test_jobs_sharing_a_cv_folder_train_each_fold_once(dataset_dir, tmp_path):
    out = tmp_path / "cv"
    jobs = [
        subprocess.Popen([sys.executable, "-c", JOB, str(dataset_dir), str(out)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [job.communicate()[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0]
    trained = [set(map(int, re.findall(r"^fold (\d) of 3$", text, re.MULTILINE))) for text in outputs]
    assert trained[0] | trained[1] == {0, 1, 2} and not trained[0] & trained[1]
    assert read_json(out / "cv_summary.json")["finished_folds"] == [0, 1, 2]
    assert not list(out.glob("*.claim")) and not list(out.glob(".*"))
