"""Mixed-precision training: Keras' mixed policies, refused where the hardware lacks them; exported models are
always float32.

Under a mixed policy the layers compute in bfloat16 or float16 while their variables stay float32, and the
classifier head and its softmax compute in float32 (the head is built so). The policy is saved inside the run's
`.keras` files; export and QAT rebuild the model in float32 and copy the weights (`float32_copy`), so the exported
artifacts are those of a float32 model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from edgelesion._tf import keras, tf
from edgelesion.errors import EdgelesionError
from edgelesion.provenance import cpu_flags
from edgelesion.train.config import TrainConfig
from edgelesion.train.models import create_model

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions oneDNN runs bfloat16 matrix multiplies with


def _gpu_capabilities() -> list[tuple[int, int]]:
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            capabilities.append(tuple(capability))
    return capabilities


def check_precision(precision: str) -> None:
    """Refuse a mixed policy this machine cannot run fast: bfloat16 needs a GPU of compute capability 8.0 or a CPU
    with avx512_bf16 or amx_bf16; float16 needs a GPU of compute capability 7.0."""
    if precision == "float32":
        return
    gpus = _gpu_capabilities()  # where a GPU is visible TensorFlow trains on it, so it alone decides
    if precision == "mixed_bfloat16":
        if any(c >= (8, 0) for c in gpus) or (not gpus and any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)):
            return
        raise EdgelesionError(
            "--precision mixed_bfloat16 needs a GPU of compute capability 8.0 or more, or (with no GPU visible) a "
            "CPU with bfloat16 instructions (avx512_bf16 or amx_bf16 in /proc/cpuinfo); this machine has neither: "
            "use float32"
        )
    if any(c >= (7, 0) for c in gpus):
        return
    raise EdgelesionError(
        "--precision mixed_float16 needs a GPU of compute capability 7.0 or more (none is visible): use float32, "
        "or mixed_bfloat16 on a CPU with bfloat16 instructions"
    )


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[None]:
    """Keras' global dtype policy set to `precision` inside the block, and put back after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def float32_copy(model: keras.Model, config: TrainConfig) -> keras.Model:
    """`model` as a float32 model: rebuilt under the float32 policy with its weights (which a mixed policy keeps in
    float32 already); a float32 model is returned as it is."""
    if config.precision == "float32":
        return model
    with precision_policy("float32"):
        copy = create_model(config.model, int(model.output_shape[-1]), config.preprocessing, pretrained=False)
    copy.set_weights(model.get_weights())
    return copy


def loss_scale_state(model: keras.Model) -> dict[str, float] | None:
    """mixed_float16's dynamic loss scale and its count of good steps, which a `.keras` file does not keep (a
    resumed run must start from them to end where an uninterrupted one does); None without loss scaling."""
    optimizer = model.optimizer
    if not isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
        return None
    return {"scale": float(optimizer.loss_scale), "good_steps": int(optimizer.dynamic_counter)}


def restore_loss_scale(model: keras.Model, saved: dict[str, float] | None) -> None:
    """Put back what `loss_scale_state` recorded."""
    optimizer = model.optimizer
    if saved and isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
        # tf-keras keeps the scale in this variable of its loss-scale state and has no public setter
        optimizer._loss_scale._current_loss_scale.assign(saved["scale"])
        optimizer.dynamic_counter.assign(int(saved["good_steps"]))
