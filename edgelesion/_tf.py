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
import warnings

from edgelesion.errors import EdgelesionError
from edgelesion.quiet import native_stderr_dropped, verbose

os.environ["TF_USE_LEGACY_KERAS"] = "1"
if not verbose():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ log lines after start-up
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def quiet_libraries() -> None:
    """Keep TensorFlow's, tf2onnx's and the optimisation toolkit's Python loggers and warnings to errors."""
    for name in ("tensorflow", "tf2onnx", "absl", "h5py", "tensorflow_model_optimization"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("tensorflow", "tf_keras", "keras", "tf2onnx", "tensorflow_model_optimization", "onnx", "absl"):
        warnings.filterwarnings("ignore", module=module)  # theirs only: a user's own warnings stay


try:
    with native_stderr_dropped():
        import tensorflow as tf
    if not verbose():
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
