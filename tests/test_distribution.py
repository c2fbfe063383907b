"""Training under tf.distribute: MirroredStrategy over two logical CPU devices and MultiWorkerMirroredStrategy over
two local worker processes each train as one device does at the same global batch; only the chief writes the run;
a killed worker stops the other with a clear error, and a restart resumes to the uninterrupted run's weights.

Each run is a subprocess: logical devices and a multi-worker strategy must be set before TensorFlow starts. The
workers run inside one private network namespace (TensorFlow's gRPC server listens on every interface).

Losses agree to float rounding, not bit for bit: each replica sums its own slice's gradients and the replicas' sums
are added, a different order of float additions from one device's sum over the whole batch.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgelesion.cli import main
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import read_csv, read_json
from edgelesion.train.distribution import Distribution, replica_batches, steps_per_epoch
from tests.conftest import write_dataset
from tests.launch_on_cpus import PrivateNetwork, PrivateNetworkRefused, command

RELATIVE_TOLERANCE = 1e-4  # float rounding of differently ordered sums (measured: within 1e-6 here)
TRAIN = [
    "--model", "seed-simple", "--weights", "none", "--image-size", "32", "--rebalance", "none",
    "--batch-size", "8", "--folds", "3", "--min-support", "2",
]  # fmt: skip


def step_losses(run: Path) -> np.ndarray:
    return np.array([float(row["loss"]) for row in read_csv(run / "steps.csv")])


def final_weights(run: Path) -> list[np.ndarray]:
    from edgelesion._tf import keras

    state = read_json(run / "checkpoints" / "state.json")
    return keras.models.load_model(run / "checkpoints" / state["checkpoint"]).get_weights()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("distributed") / "data", per_class=24)


@pytest.fixture(scope="module")
def one_device(data: Path) -> Path:
    """The reference: the same training on one device (in this process: no devices to set)."""
    out = data.parent / "one-device"
    assert main(["train", "--data", str(data), "--out", str(out), *TRAIN, "--epochs", "4", "--strategy", "none"]) == 0
    return out


def test_each_worker_reads_its_replicas_slices_of_every_global_batch():
    order = np.arange(21)
    # 2 workers of 2 replicas: global batches of 8 are cut into 4 slices of 2; the last batch, of 5, into 4 of 1
    first = replica_batches(order, 8, replicas=4, pipeline=0, pipelines=2)
    second = replica_batches(order, 8, replicas=4, pipeline=1, pipelines=2)
    assert [list(b) for b in first] == [[0, 1], [2, 3], [8, 9], [10, 11], [16], [17]]
    assert [list(b) for b in second] == [[4, 5], [6, 7], [12, 13], [14, 15], [18], [19]]
    assert [list(b) for b in replica_batches(order, 8, 1, 0, 1)] == [list(order[s : s + 8]) for s in (0, 8, 16)]
    assert steps_per_epoch(21, 8, 4) == 3 and steps_per_epoch(17, 8, 4) == 2


def test_mirrored_over_two_devices_trains_as_one_device_does(data, one_device):
    out = data.parent / "mirrored"
    args = ["train", "--data", str(data), "--out", str(out), *TRAIN, "--epochs", "4", "--strategy", "mirrored"]
    subprocess.run(command(2, *args), check=True, capture_output=True)
    np.testing.assert_allclose(step_losses(out), step_losses(one_device), rtol=RELATIVE_TOLERANCE)
    (record,) = read_json(out / "distribution.json")
    assert record["strategy"] == "mirrored" and record["replicas"] == 2
    assert record["global_batch"] == 8 and record["per_replica_batch"] == 4 and len(record["devices"]) == 2


def test_a_batch_that_does_not_split_over_the_replicas_is_refused():
    with pytest.raises(EdgelesionError, match="--batch-size 7 does not split evenly over 2 replicas"):
        Distribution(strategy=None, kind="mirrored", workers=1, replicas=2).check_batch(7)


@pytest.fixture(scope="module")
def network() -> Iterator[PrivateNetwork]:
    try:
        network = PrivateNetwork()
    except PrivateNetworkRefused as refusal:
        pytest.skip(
            "multi-worker tests run their workers in a private network namespace (TensorFlow's gRPC server listens "
            f"on every interface), which this machine refuses: {refusal}"
        )
    yield network
    network.close()


def start_workers(network: PrivateNetwork, tmp: Path, *args: str) -> list[subprocess.Popen]:
    """Two workers of one multi-worker training, each with its own TMPDIR (where it keeps its saves)."""

    def options(index: int) -> dict:
        (tmp / f"worker-{index}-tmp").mkdir(parents=True, exist_ok=True)
        return {
            "env": {"TMPDIR": str(tmp / f"worker-{index}-tmp")},
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "text": True,
        }

    return network.workers([*args, "--strategy", "multi-worker"], options)


def finish(workers: list[subprocess.Popen]) -> list[tuple[int, str]]:
    results = []
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)  # a guard against a hang, not a speed check
        results.append((worker.returncode, stderr))
    return results


@pytest.fixture(scope="module")
def two_workers(data: Path, network: PrivateNetwork) -> Path:
    out = data.parent / "two-workers"
    args = ["train", "--data", str(data), "--out", str(out), *TRAIN, "--epochs", "4"]
    results = finish(start_workers(network, data.parent, *args))
    assert [code for code, _ in results] == [0, 0], [stderr[-2000:] for _, stderr in results]
    return out


def test_two_workers_train_as_one_device_does_and_only_the_chief_writes(data, one_device, two_workers):
    np.testing.assert_allclose(step_losses(two_workers), step_losses(one_device), rtol=RELATIVE_TOLERANCE)
    (record,) = read_json(two_workers / "distribution.json")
    assert record["strategy"] == "multi-worker" and record["workers"] == 2 and record["per_replica_batch"] == 4
    assert (two_workers / "evaluation" / "validation" / "metrics.json").is_file()
    for index in range(2):  # each worker's temporary folder was removed; the second wrote nowhere else
        assert list((data.parent / f"worker-{index}-tmp").iterdir()) == []


def test_a_killed_worker_stops_the_other_and_a_restart_resumes_to_the_same_weights(data, network, two_workers):
    out = data.parent / "killed"
    chief, second = start_workers(network, data.parent, "train", "--out", str(out), "--data", str(data),
                                  *TRAIN, "--epochs", "4")  # fmt: skip
    state = out / "checkpoints" / "state.json"
    while not (state.is_file() and read_json(state)["epochs_done"] >= 1):
        assert chief.poll() is None, chief.communicate()[1][-2000:]
        time.sleep(0.05)
    second.send_signal(signal.SIGKILL)
    code, stderr = finish([chief])[0]
    second.wait()
    assert code != 0 and "another worker of this multi-worker training stopped" in stderr
    assert "Traceback" not in stderr
    assert read_json(state)["epochs_done"] < 4

    shutil.rmtree(data.parent / "worker-1-tmp")  # what a killed worker leaves in its temporary folder
    results = finish(start_workers(network, data.parent, "train", "--resume", "--out", str(out)))
    assert [code for code, _ in results] == [0, 0], [stderr[-2000:] for _, stderr in results]
    assert read_json(state)["epochs_done"] == 4
    for resumed, uninterrupted in zip(final_weights(out), final_weights(two_workers)):
        np.testing.assert_allclose(resumed, uninterrupted, rtol=RELATIVE_TOLERANCE, atol=1e-6)


def test_resuming_on_another_number_of_replicas_is_recorded_and_said(tmp_path, capsys):
    from edgelesion.train.config import DistributeConfig
    from edgelesion.train.distribution import distribution_for, record_distribution
    from edgelesion.train.runs import RunDir

    run = RunDir(tmp_path)
    (tmp_path / "distribution.json").write_text(json.dumps([{"from_epoch": 1, "strategy": "mirrored", "replicas": 2}]))
    record_distribution(run, distribution_for(DistributeConfig("none")), 8, first_epoch=3, deterministic=True)
    stretches = read_json(run.distribution)
    assert [(s["from_epoch"], s["strategy"], s["replicas"]) for s in stretches] == [(1, "mirrored", 2), (4, "none", 1)]
    assert "trained on 2 replicas and goes on on 1: the global batch (8) and learning rate stay the same;" in (
        capsys.readouterr().out
    )


def test_a_lost_worker_is_named_by_tensorflows_line_about_it_not_its_first_line():
    from edgelesion._tf import tf
    from edgelesion.train.distribution import worker_failure

    lost = tf.errors.UnavailableError(
        None,
        None,
        "Graph execution error:\n\nDetected at node CollectiveReduceV2\nCollective ops is aborted by: Error reported "
        "from /job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n/job:worker/task:1",
    )
    message = str(worker_failure(lost))
    assert "The following tasks are unhealthy (stopped sending heartbeats)" in message
    assert "Graph execution error" not in message and "with --resume" in message
