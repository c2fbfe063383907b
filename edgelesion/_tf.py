"""The one place TensorFlow is imported: Keras 2 (tf-keras) is selected before TensorFlow loads.

tensorflow-model-optimization does not support Keras 3, so TF_USE_LEGACY_KERAS=1 must be set
before the first `import tensorflow`; users never have to set it themselves.
"""

from __future__ import annotations

import os

from edgelesion.errors import EdgelesionError

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hide TensorFlow's C++ log lines; errors still raise

try:
    import tensorflow as tf
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
