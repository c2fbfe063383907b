"""The one place TensorFlow is imported: Keras 2 (tf-keras) is selected before TensorFlow loads, quietly.

tensorflow-model-optimization does not support Keras 3, so TF_USE_LEGACY_KERAS=1 must be set
before the first `import tensorflow`; users never have to set it themselves.

TensorFlow's C++ start-up lines (oneDNN, CUDA drivers, absl) are written to the process's stderr before its
own log level applies, so the import runs with file descriptor 2 pointed at /dev/null; its Python loggers and
the warnings of the libraries around it are kept to errors. A user can act on none of it.
EDGELESION_VERBOSE=1 (`--verbose` on the command line) shows it all.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from edgelesion.errors import EdgelesionError

VERBOSE = os.environ.get("EDGELESION_VERBOSE", "") not in ("", "0")
os.environ["TF_USE_LEGACY_KERAS"] = "1"
if not VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ log lines after start-up
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """File descriptor 2 pointed at /dev/null for the block (C++ code writes there directly)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


def quiet_libraries() -> None:
    """Keep TensorFlow's, tf2onnx's and the optimisation toolkit's Python loggers and warnings to errors."""
    for name in ("tensorflow", "tf2onnx", "absl", "h5py", "tensorflow_model_optimization"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("tensorflow", "tf_keras", "keras", "tf2onnx", "tensorflow_model_optimization", "onnx", "absl"):
        warnings.filterwarnings("ignore", module=module)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


try:
    if VERBOSE:
        import tensorflow as tf
    else:
        with _stderr_to_devnull():
            import tensorflow as tf
        quiet_libraries()
    import tf_keras as keras
except ImportError as exc:  # pragma: no cover - depends on the install
    raise EdgelesionError(
        "training needs TensorFlow, which the base install leaves out: pip install 'edgelesion[train]'"
    ) from exc

if not tf.keras.__name__.startswith("tf_keras"):
    raise EdgelesionError(  # pragma: no cover - only when TensorFlow was imported before edgelesion set Keras 2
        "TensorFlow was imported with Keras 3 before edgelesion could select Keras 2: "
        "import edgelesion's training modules first, or set TF_USE_LEGACY_KERAS=1"
    )

__all__ = ["keras", "tf"]
