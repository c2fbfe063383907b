"""Run the edgelesion command line on N logical CPU devices: `python launch_on_cpus.py N ARGS...`.

TensorFlow's logical devices must be set before it starts, so tests run this in a subprocess; N 0 leaves the
devices as they are.
"""

import sys

from edgelesion._tf import tf
from edgelesion.cli import main

if __name__ == "__main__":
    devices = int(sys.argv[1])
    if devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    sys.exit(main(sys.argv[2:]))
