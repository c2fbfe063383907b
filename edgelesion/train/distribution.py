"""Training spread over devices and machines with TensorFlow's own tf.distribute strategies.

- `none`: the default strategy, one device.
- `mirrored`: `MirroredStrategy` over this machine's GPUs (its logical CPU devices where it has no GPU).
- `multi-worker`: `MultiWorkerMirroredStrategy` over the processes `TF_CONFIG` describes, or TF's SLURM cluster
  resolver inside a SLURM job step.
- `auto`: multi-worker when `TF_CONFIG` names more than one task, mirrored when more than one GPU is visible, else
  none.

The batch size is global: every step trains on `batch_size` images in all, split evenly over the replicas, with the
learning rate stated per global batch, so a run's optimisation does not depend on the number of devices. Each
process's input pipeline takes its own replicas' slices of every global batch (`replica_batches`). The chief
(worker 0) writes the run folder; the other workers make every call the chief makes (saving reads synchronised
variables, a collective) but write into temporary folders of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edgelesion._tf import tf
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import read_json, write_json
from edgelesion.train.config import DistributeConfig
from edgelesion.train.runs import RunDir


@dataclass(frozen=True)
class Distribution:
    """The strategy this process trains under and its place in it."""

    strategy: Any  # tf.distribute.Strategy
    kind: str  # "none", "mirrored" or "multi-worker"
    workers: int
    replicas: int  # in sync, over all workers

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run folder (worker 0, or the `chief` task)."""
        return bool(self.strategy.extended.should_checkpoint)

    @property
    def distributed(self) -> bool:
        """Whether a strategy other than the default one spreads the steps."""
        return self.kind != "none"

    def agreed(self, value: float) -> float:
        """`value` as every worker agrees on it: its mean over the replicas (the same figure where every worker
        computed the same one), so decisions taken on it are the same on every worker."""
        if self.workers == 1:
            return value
        local = self.strategy.run(lambda: tf.constant(value, tf.float64))
        return float(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None))

    def check_same_start(self, epochs_done: int, run: Path) -> None:
        """Refuse to train when the workers read different finished epochs from `run` (another job changed it
        while they started): they would train different weights in step."""
        if self.agreed(float(epochs_done)) != epochs_done:
            raise EdgelesionError(
                f"the workers found different finished epochs in {run} (this one {epochs_done}): another job changed "
                "it while they started; start every worker again once it is settled"
            )

    @property
    def devices(self) -> list[str]:
        """This process's devices that train (TensorFlow's first GPU, else its CPU, under no strategy)."""
        if self.distributed:
            return list(self.strategy.extended.worker_devices)
        return [d.name for d in (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[:1]]

    def check_batch(self, batch_size: int) -> None:
        """Refuse a global batch that does not split evenly over the replicas."""
        if batch_size % self.replicas:
            raise EdgelesionError(
                f"--batch-size {batch_size} does not split evenly over {self.replicas} replicas: give a multiple of "
                f"{self.replicas} (the batch size is global, the learning rate stated for it)"
            )

    def record(self, batch_size: int, deterministic: bool) -> dict[str, Any]:
        """What distribution.json keeps of this process's strategy for a run of global batch `batch_size`."""
        return {
            "deterministic": deterministic,
            "strategy": self.kind,
            "workers": self.workers,
            "replicas": self.replicas,
            "devices": self.devices,
            "global_batch": batch_size,
            "per_replica_batch": batch_size // self.replicas,
            "sharding": (
                "each global batch of the epoch's seeded order is split into one consecutive slice per replica; "
                "each worker's input pipeline reads only its replicas' slices; an epoch's last, short batch is cut "
                "to a multiple of the replicas"
                if self.distributed
                else "one device trains every batch"
            ),
        }


def _cluster_tasks() -> int:
    """How many tasks TF_CONFIG's cluster names (0 without TF_CONFIG)."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return 0
    try:
        cluster = json.loads(text).get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise EdgelesionError(f"TF_CONFIG is not a JSON object with a 'cluster': {exc}") from exc
    return sum(len(tasks) for name, tasks in cluster.items() if name in ("chief", "worker"))


def _in_slurm_step() -> bool:
    return "SLURM_STEP_ID" in os.environ and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1


def _multi_worker(timeout: float | None) -> Any:
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    if _cluster_tasks():
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if _in_slurm_step():  # the resolver counts GPUs with nvidia-smi, which a CPU node lacks: count them here
        gpus = len(tf.config.list_physical_devices("GPU"))
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(gpus_per_node=gpus)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    raise EdgelesionError(
        "--strategy multi-worker needs the cluster described: set TF_CONFIG in every worker's environment, or start "
        "the workers as one SLURM job step (srun); docs/scaling.md shows both"
    )


@cache
def distribution_for(config: DistributeConfig) -> Distribution:
    """The strategy `config` asks for, made once per process (a multi-worker strategy cannot be made twice)."""
    name = config.strategy
    if name == "auto":  # physical devices: listing logical ones starts the runtime, after which no cluster can join
        many_gpus = len(tf.config.list_physical_devices("GPU")) > 1
        name = "multi-worker" if _cluster_tasks() > 1 else "mirrored" if many_gpus else "none"
    if name == "none":
        return Distribution(tf.distribute.get_strategy(), "none", 1, 1)
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
        return Distribution(strategy, "mirrored", 1, strategy.num_replicas_in_sync)
    strategy = _multi_worker(config.collective_timeout)
    spec = strategy.cluster_resolver.cluster_spec()
    workers = sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs)
    return Distribution(strategy, "multi-worker", workers, strategy.num_replicas_in_sync)


def replica_batches(
    order: np.ndarray, batch_size: int, replicas: int, pipeline: int, pipelines: int
) -> list[np.ndarray]:
    """Input pipeline `pipeline` of `pipelines`: its replicas' slices of each global batch of `order`, in order.

    Global batch j is `order[j*batch_size:(j+1)*batch_size]`, split into `replicas` equal consecutive slices, of
    which pipeline p reads slices p*R .. p*R+R-1 (R = replicas // pipelines); tf.distribute gives the R elements of
    each step to the pipeline's R local replicas in turn. With one replica these are the global batches. A last,
    short batch is cut to a multiple of the replicas (every replica then averages as many images), and dropped
    when it holds fewer images than replicas.
    """
    local = replicas // pipelines
    batches = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        batch = batch[: len(batch) - len(batch) % replicas]
        if len(batch):
            batches.extend(np.split(batch, replicas)[pipeline * local : (pipeline + 1) * local])
    return batches


def steps_per_epoch(images: int, batch_size: int, replicas: int) -> int:
    """How many steps an epoch of `images` takes (a last batch with fewer images than replicas is dropped)."""
    full, rest = divmod(images, batch_size)
    return full + (rest >= replicas)


@contextlib.contextmanager
def worker_output(run: RunDir, distribution: Distribution) -> Iterator[RunDir]:
    """Where this process writes: `run` on the chief; on any other worker a temporary folder of its own, removed
    when training ends (a killed worker leaves it in TMPDIR, named edgelesion-worker-*)."""
    if distribution.is_chief:
        yield run
        return
    with tempfile.TemporaryDirectory(prefix="edgelesion-worker-") as folder:
        own = RunDir(Path(folder))
        own.checkpoints.mkdir()
        yield own


def record_distribution(
    run: RunDir, distribution: Distribution, batch_size: int, first_epoch: int, deterministic: bool
) -> None:
    """Add to the run's distribution.json where training goes on from `first_epoch` (0-based), and say so when the
    number of replicas changed since the last stretch."""
    stretches = read_json(run.distribution) if run.distribution.is_file() else []
    record = {"from_epoch": first_epoch + 1, **distribution.record(batch_size, deterministic)}
    if stretches and stretches[-1]["replicas"] != record["replicas"]:
        print(
            f"note: {run.root} trained on {stretches[-1]['replicas']} replicas and goes on on {record['replicas']}: "
            f"the global batch ({batch_size}) and learning rate stay the same; the float sums, each replica's "
            "dropout draws and the cut of each epoch's last batch differ"
        )
    write_json(run.distribution, [*stretches, record])


# what a collective raises when a peer is gone (heartbeats stopped) or it waited past the collective timeout
WORKER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError)


@contextlib.contextmanager
def stopping_with_the_others(distribution: Distribution) -> Iterator[None]:
    """Inside the block, a collective that failed because another worker is gone stops this one with a clear
    error."""
    try:
        yield
    except WORKER_FAILURES as exc:
        if distribution.workers == 1:
            raise
        raise worker_failure(exc) from exc


FAILURE_WORDS = ("aborted by", "unhealthy", "connect", "Deadline")


def worker_failure(exc: Exception) -> EdgelesionError:
    """The error a worker's training stops with when another worker stopped or stopped answering."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    # TensorFlow's first line is often only "Graph execution error:"; the cause is on the line that names the peer
    cause = next((line for line in lines if any(word in line for word in FAILURE_WORDS)), lines[0])
    return EdgelesionError(
        "another worker of this multi-worker training stopped or stopped answering, so this one stops too "
        f"({type(exc).__name__}: {cause[:300]}); that worker's own output says why. Then start every worker "
        "again, with --resume to go on from the last finished epoch's checkpoint"
    )
