"""Launching the edgelesion command line for distributed runs, shared by the tests and benchmarks.distributed.

`python launch_on_cpus.py N ARGS...` runs the command line on N logical CPU devices: TensorFlow's logical devices
must be set before it starts, so runs go through a subprocess; N 0 leaves the devices as they are.

`PrivateNetwork` holds a private network namespace with its loopback up, and starts two workers of one multi-worker
training inside it (TensorFlow's gRPC server listens on every interface: nothing leaves the namespace).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKERS = ["127.0.0.1:23456", "127.0.0.1:23457"]


def command(devices: int, *args: str) -> list[str]:
    """The command line running `edgelesion ARGS` on `devices` logical CPU devices (0: as they are)."""
    return [sys.executable, str(Path(__file__).resolve()), str(devices), *args]


class PrivateNetworkRefused(RuntimeError):
    """This machine does not let a process make a network namespace (unshare -n needs root or user namespaces)."""


class PrivateNetwork:
    """A private network namespace with its loopback up, held by a sleeping process; workers join it with nsenter."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", "ip link set lo up && echo up && exec sleep infinity"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if self.holder.stdout is None or self.holder.stdout.readline().strip() != "up":
            self.holder.kill()
            raise PrivateNetworkRefused(self.holder.communicate()[1].strip()[:200])

    def workers(self, args: list[str], popen_options: Callable[[int], dict[str, Any]]) -> list[subprocess.Popen]:
        """Start the two workers of `edgelesion ARGS` (TF_CONFIG set); `popen_options(index)` gives each worker's
        Popen keywords, its `env` added to this process's environment (a file given as `stdout` is closed here once
        the worker holds it)."""
        started = []
        for index in range(len(WORKERS)):
            options = popen_options(index)
            task = {"cluster": {"worker": WORKERS}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, **options.pop("env", {}), "TF_CONFIG": json.dumps(task)}
            joined = ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", *command(0, *args)]
            started.append(subprocess.Popen(joined, env=env, **options))
            if hasattr(options.get("stdout"), "close"):
                options["stdout"].close()
        return started

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


if __name__ == "__main__":
    from edgelesion._tf import tf
    from edgelesion.cli import main

    devices = int(sys.argv[1])
    if devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    sys.exit(main(sys.argv[2:]))
