"""Quantization-aware fine-tuning (tensorflow-model-optimization) of a run's best float model.

The QAT model is the float model's core (the graph after its scaling layer, see `scaling`), with
its input range fixed to exactly what pixels 0 and 255 become, so that converted with a uint8
input, a camera pixel p means exactly the scaled pixel.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry as default_registry,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_scheme as default_scheme,
)

from edgelesion._tf import keras, tf
from edgelesion.data.image_rows import ImageRows
from edgelesion.errors import EdgelesionError
from edgelesion.export.options import QATConfig
from edgelesion.export.scaling import core_model, input_range, scaling_layer
from edgelesion.fileio import read_json, replace_dir, staging_dir, write_json
from edgelesion.train.config import OnlineAugment, TrainConfig
from edgelesion.train.evaluation import predict
from edgelesion.train.models import HEAD
from edgelesion.train.training import accuracy_metric, fit_one_epoch


def _short(weight: tf.Variable) -> str:
    """A variable's name without its layer scope: 'post_activation_min:0'."""
    return weight.name.split("/")[-1]


# Weights of convolutions (not depthwise) and hidden Dense layers train on a 7-bit grid (int8 values -63..63): int8.onnx
# is made from the int8.tflite file (tflite_to_onnx.convert_int8_tflite), and onnxruntime's uint8 x int8 kernels on x86 CPUs
# without VNNI (AVX2 only) add pairs of products in 16 bits, which saturate on 8-bit weights (2 x 255 x 127 > 32767)
# but not on 7-bit ones (2 x 255 x 63 < 32767). Depthwise kernels cannot saturate and keep 8 bits.
WEIGHT_BITS = 7
WEIGHT_LEVELS = 2 ** (WEIGHT_BITS - 1) - 1  # 63: the largest weight magnitude on that grid (narrow range)


class DenseQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Dense as tfmot's default 8-bit scheme quantizes it, but with one kernel scale per output unit, on a
    `kernel_bits` grid: WEIGHT_BITS for a hidden layer, 8 for the classifier head, whose file keeps the values of
    the converter's 8-bit grid in float (tflite_export.float_head_tail).

    tfmot 0.8 quantizes a Dense kernel per tensor (one scale for the seed models' whole 30,976 x 128
    kernel), where TFLite's and onnxruntime's post-training paths use one scale per output channel.
    A per-channel fake-quantized kernel trains, but TFLite 2.21's converter refuses it ("'tfl.transpose'
    op has mismatched quantized axes": it transposes the kernel for FULLY_CONNECTED after quantizing
    it). So the graph handed to the converter (`for_conversion`) leaves the kernel out
    (`quantize_kernel=False`) and the converter quantizes it per output channel, symmetrically from
    each channel's largest magnitude on 8 bits. A hidden layer's kernel is handed over already on its 7-bit grid
    (`for_conversion`), so the 8-bit values are that grid rescaled, and tflite_export.on_weight_grid restores it.
    """

    def __init__(
        self, quantize_kernel: bool = True, quantize_output: bool = True, kernel_bits: int = WEIGHT_BITS
    ) -> None:
        self.quantize_kernel = quantize_kernel
        self.quantize_output = quantize_output  # False: the layer's output stays float (the classifier head's logits)
        self.kernel_bits = kernel_bits
        quantizers = tfmot.quantization.keras.quantizers
        self.kernel_quantizer = quantizers.LastValueQuantizer(
            num_bits=kernel_bits, per_axis=True, symmetric=True, narrow_range=True
        )
        self.activation_quantizer = quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False
        )

    def get_weights_and_quantizers(self, layer: keras.layers.Dense) -> list:
        return [(layer.kernel, self.kernel_quantizer)] if self.quantize_kernel else []

    def get_activations_and_quantizers(self, layer: keras.layers.Dense) -> list:
        return [(layer.activation, self.activation_quantizer)] if self.quantize_output else []

    def set_quantize_weights(self, layer: keras.layers.Dense, quantize_weights: list) -> None:
        if self.quantize_kernel:
            layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer: keras.layers.Dense, quantize_activations: list) -> None:
        if self.quantize_output:
            layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer: keras.layers.Dense) -> list:
        return []

    def get_config(self) -> dict:
        return {
            "quantize_kernel": self.quantize_kernel,
            "quantize_output": self.quantize_output,
            "kernel_bits": self.kernel_bits,
        }


class NarrowConvQuantizeConfig(default_registry.Default8BitConvQuantizeConfig):
    """A full (not depthwise) convolution as tfmot's default 8-bit scheme quantizes it, its kernel on the
    WEIGHT_BITS per-channel grid."""

    def __init__(self, weight_attrs: list[str], activation_attrs: list[str], quantize_output: bool) -> None:
        super().__init__(weight_attrs, activation_attrs, quantize_output)
        self.weight_quantizer.num_bits = WEIGHT_BITS


class _NarrowConvRegistry(default_registry.Default8BitQuantizeRegistry):
    def get_quantize_config(self, layer: keras.layers.Layer) -> tfmot.quantization.keras.QuantizeConfig:
        if type(layer) is keras.layers.Conv2D:
            return NarrowConvQuantizeConfig(["kernel"], ["activation"], False)
        return super().get_quantize_config(layer)


class NarrowConvScheme(default_scheme.Default8BitQuantizeScheme):
    """tfmot's default 8-bit scheme with NarrowConvQuantizeConfig for full convolutions. A scheme's registry is
    consulted after tfmot's layout transforms, so Conv + BatchNorm + ReLU6 still fold as they do by default
    (annotating a convolution with its own config would turn those transforms off)."""

    def get_quantize_registry(self) -> default_registry.Default8BitQuantizeRegistry:
        return _NarrowConvRegistry()


# what a QAT checkpoint was trained with: one made under another scheme is started again
QAT_SCHEME = (
    "tfmot default 8-bit, 7-bit convolution and per-channel hidden Dense kernels, BatchNorm frozen, float logits"
)


def _quantized(core: keras.Model, *, quantize_dense_kernels: bool, quantize_logits: bool = True) -> keras.Model:
    """tfmot's default 8-bit QAT model of `core` (float weights kept), Dense layers by DenseQuantizeConfig; the
    classifier head (`HEAD`) with its logits fake-quantized or not."""
    q = tfmot.quantization.keras
    if not quantize_logits and HEAD not in [layer.name for layer in core.layers]:
        raise EdgelesionError(f"model {core.name} has no classifier head named {HEAD!r}: it was not made by edgelesion")

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        clone = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.Dense):
            config = DenseQuantizeConfig(
                quantize_dense_kernels,
                quantize_output=quantize_logits or layer.name != HEAD,
                kernel_bits=8 if layer.name == HEAD else WEIGHT_BITS,
            )
            return q.quantize_annotate_layer(clone, config)
        return clone

    annotated = keras.models.clone_model(core, clone_function=annotate)
    annotated.set_weights(core.get_weights())
    with q.quantize_scope({"DenseQuantizeConfig": DenseQuantizeConfig}):
        return q.quantize_apply(q.quantize_annotate_model(annotated), NarrowConvScheme())


def quantize_core(core: keras.Model, scaled_range: tuple[float, float]) -> keras.Model:
    """The 8-bit QAT model of `core` (QAT_SCHEME), its input range fixed to `scaled_range`, as its int8 file
    computes: the classifier head's logits in float, not fake-quantized (tflite_export.float_head_tail), its
    kernel on a per-channel int8 grid.

    The input quantizer tracks the smallest and largest values seen; starting it at exactly the
    range that scaled pixels span, which they never leave, keeps it there. (tfmot's fix_input_output_range is not
    used: in tfmot 0.8.1 it re-initialises the weights, and it clamps the last layer's
    pre-softmax logits to the output range, which flattens every prediction.) BatchNorm layers are
    frozen (inference mode): their statistics stay the float model's, which the converter folds
    into the convolutions, instead of drifting with the QAT batches.
    """
    quantized = _quantized(core, quantize_dense_kernels=True, quantize_logits=False)
    input_quantizer = quantized.layers[1]  # tfmot's QuantizeLayer, right after the input
    for weight in input_quantizer.weights:
        if _short(weight).endswith("_min:0"):
            weight.assign(scaled_range[0])
        elif _short(weight).endswith("_max:0"):
            weight.assign(scaled_range[1])
    for layer in quantized.layers:
        if isinstance(getattr(layer, "layer", None), keras.layers.BatchNormalization):
            layer.trainable = False
        if any(_short(weight).startswith(LOGIT_RANGES) for weight in layer.weights):
            raise EdgelesionError(
                f"layer {layer.name} quantizes the input of its activation, which edgelesion does "
                f"only for the classifier head {HEAD!r} (in float): not a model edgelesion made"
            )
    return quantized


def _own_name(layer: keras.layers.Layer, weight: tf.Variable) -> str:
    """A weight's name within its layer, the same in two copies of a model ('kernel:0', '_min:0')."""
    name = _short(weight)
    return name.removeprefix(layer.name)


def for_conversion(float_model: keras.Model, quantized_core: keras.Model) -> keras.Model:
    """The QAT core as TFLite's converter takes it: the same weights and ranges, Dense kernels left to the converter,
    which quantizes them per output channel (see DenseQuantizeConfig) and so gets them already on the grid QAT
    trained (`_dense_kernels_on_grid`), and the logits fake-quantized at tfmot's initial range: the converter makes
    the head int8 whatever it is told, and float_head_tail then moves it back to float, discarding that range."""
    twin = _quantized(core_model(float_model), quantize_dense_kernels=False)
    for target, source in zip(twin.layers, quantized_core.layers, strict=True):
        weights = {_own_name(source, weight): weight for weight in source.weights}
        on_grid = _dense_kernels_on_grid(source)
        for weight in target.weights:
            name = _own_name(target, weight)
            if name in weights:
                weight.assign(on_grid.get(name, weights[name]))
            elif not _short(weight).startswith(LOGIT_RANGES):
                raise EdgelesionError(f"the QAT model lacks {weight.name}: it was made under another scheme")
    return twin


def _dense_kernels_on_grid(layer: keras.layers.Layer) -> dict[str, np.ndarray]:
    """A QAT Dense layer's kernel as the QAT model computes with it (its quantizer at the stored range), by own name
    ('kernel:0'); nothing for other layers. The converter, left to quantize it, rounds the float kernel to 255
    levels; rounding that to the 7-bit grid again would move about one value in ten by a step."""
    config = getattr(layer, "quantize_config", None)
    if not isinstance(config, DenseQuantizeConfig) or not config.quantize_kernel:
        return {}
    variables = {_own_name(layer, weight): weight for weight in layer.weights}
    kernel = config.kernel_quantizer(
        variables["kernel:0"],
        training=False,
        weights={"min_var": variables["kernel_min:0"], "max_var": variables["kernel_max:0"]},
    )
    return {"kernel:0": kernel.numpy()}


# tfmot's moving-average range variables: a layer's own activation ('post_activation_min/max', e.g. Dense with
# ReLU), the output of a layer quantized as a whole ('output_min/max': ReLU6, Add, BatchNorm), and the input of an
# activation quantized before it ('pre_activation_min/max': the softmax head's logits, in the conversion graph only)
OUTPUT_RANGES = ("post_activation_", "output_")
LOGIT_RANGES = ("pre_activation_",)


def calibrate_activation_ranges(quantized: keras.Model, float_model: keras.Model, pixels: np.ndarray) -> None:
    """Start every moving-average activation range at the float activations' observed range.

    tfmot starts these ranges at [-6, 6] and moves them by an EMA with decay 0.999, so a short
    fine-tune (a few hundred steps) leaves them mostly uncalibrated and the QAT model far from the
    float one (seed model 1's logits, when they were still fake-quantized: clipped, 81% agreement with
    its float model). tfmot has no calibration call, so the ranges are set here from the float core's
    own layer outputs on the calibration pixels (0 is always kept in range, as TFLite requires).
    """
    wrappers = [layer for layer in quantized.layers if any(_short(w).startswith(OUTPUT_RANGES) for w in layer.weights)]
    # the float model's own graph (node 0): its layers are shared with the core, which is called second
    probed = [float_model.get_layer(w.layer.name) for w in wrappers]
    probe = keras.Model(float_model.input, [layer.get_output_at(0) for layer in probed])
    outputs = probe.predict(pixels.astype(np.float32), batch_size=32, verbose=0)
    for wrapper, observed in zip(wrappers, outputs if isinstance(outputs, list) else [outputs]):
        for weight in wrapper.weights:
            if _short(weight).startswith(OUTPUT_RANGES) and _short(weight).endswith("_min:0"):
                weight.assign(min(0.0, float(observed.min())))
            elif _short(weight).startswith(OUTPUT_RANGES) and _short(weight).endswith("_max:0"):
                weight.assign(max(0.0, float(observed.max())))


def _recorded_config(state: dict) -> QATConfig:
    """The QATConfig a fine-tune's state.json records; one written before `target` existed fitted the labels."""
    return QATConfig(**{"target": "labels", **state["config"]})


def _compiled_quantized_core(float_model: keras.Model, config: QATConfig) -> keras.Model:
    quantized = quantize_core(core_model(float_model), input_range(float_model))
    loss = "sparse_categorical_crossentropy" if config.target == "labels" else "kl_divergence"
    quantized.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=loss,
        metrics=[accuracy_metric(one_hot=config.target != "labels")],
    )
    # the optimizer's variables made here, not in the first epoch's trace, which TensorFlow would then trace twice
    quantized.optimizer.build(quantized.trainable_variables)
    return quantized


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of a model's weights: which float model a QAT fine-tune started from."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def load_quantized_core(float_model: keras.Model, work_dir: Path) -> keras.Model:
    """The QAT core saved by a finished qat_finetune in `work_dir`."""
    saved = work_dir / "checkpoint"
    if not (saved / "state.json").is_file():
        raise EdgelesionError(f"{work_dir} holds no QAT fine-tune: export the run first")
    state = read_json(saved / "state.json")
    if state.get("scheme") != QAT_SCHEME:
        raise EdgelesionError(f"the QAT fine-tune in {work_dir} used another quantization scheme: export the run again")
    quantized = _compiled_quantized_core(float_model, _recorded_config(state))
    tf.train.Checkpoint(model=quantized, optimizer=quantized.optimizer).read(
        str(saved / "ckpt")
    ).assert_existing_objects_matched()
    return quantized


def qat_finetune(
    float_model: keras.Model,
    x: ImageRows,
    y: np.ndarray,
    weights: dict[int, float] | None,
    calibration: np.ndarray,
    work_dir: Path,
    config: QATConfig,
    train_config: TrainConfig,
    *,
    progress: bool = True,
) -> keras.Model:
    """Fine-tune the QAT core of `float_model` on (x, y) with class `weights`, checkpointing each epoch in `work_dir`;
    with `config.target` "float-model", on the float model's probabilities for x instead (no class weights).

    Activation ranges start from the `calibration` pixels (see calibrate_activation_ranges).
    Returns the quantized core (input: scaled pixels). Epochs are seeded like training's, so a
    resumed fine-tune ends where an uninterrupted one would. A fine-tune of another float model
    (the run was resumed to a new best epoch since) is started again, never reused.
    """
    saved = work_dir / "checkpoint"  # the checkpoint and its state.json, swapped in together
    source = weights_fingerprint(float_model)
    fresh = {"epochs_done": 0, "config": asdict(config), "float_weights_sha256": source, "scheme": QAT_SCHEME}
    state = read_json(saved / "state.json") if (saved / "state.json").is_file() else fresh
    if state.get("float_weights_sha256") != source:
        print(f"the run's model changed since the QAT fine-tune in {work_dir}: starting it again")
        state = fresh
    elif state.get("scheme") != QAT_SCHEME:
        print(f"the QAT fine-tune in {work_dir} used another quantization scheme: starting it again")
        state = fresh
    if _recorded_config(state) != config:
        raise EdgelesionError(
            f"{work_dir} holds a QAT fine-tune with other settings ({state['config']}): remove that folder "
            "or export with the same --qat-epochs, --qat-learning-rate and --qat-target"
        )
    keras.utils.set_random_seed(train_config.seed)
    quantized = _compiled_quantized_core(float_model, config)
    checkpoint = tf.train.Checkpoint(model=quantized, optimizer=quantized.optimizer)
    if not state["epochs_done"]:
        calibrate_activation_ranges(quantized, float_model, calibration)
    else:
        checkpoint.read(str(saved / "ckpt")).assert_existing_objects_matched()
        done = state["epochs_done"] == config.epochs
        print(
            f"reusing the finished QAT fine-tune in {work_dir}"
            if done
            else f"resuming QAT after epoch {state['epochs_done']} of {config.epochs}"
        )
    # plain epochs on scaled pixels: the training recipe's head stage, schedule, smoothing and
    # pixel augmentation (which works on raw 0-255 pixels) are not part of the short QAT fine-tune
    epochs = train_config.with_changes(
        epochs=config.epochs,
        batch_size=config.batch_size,
        head_epochs=0,
        warmup_epochs=0,
        label_smoothing=0.0,
        patience=0,
        online_augment=OnlineAugment(),
    )
    if state["epochs_done"] < config.epochs:
        if config.target == "float-model":
            labels, weights = tf.constant(predict(float_model, x)), None
        else:
            labels = tf.constant(y)
    scaling = scaling_layer(float_model)  # the quantized core takes scaled pixels
    for epoch in range(state["epochs_done"], config.epochs):
        logs, _ = fit_one_epoch(
            quantized, x, labels, epoch, epochs, weights, progress, scaling=(scaling.scale, scaling.offset)
        )
        if not np.isfinite(logs["loss"]):
            raise EdgelesionError(f"QAT diverged at epoch {epoch + 1} (loss {logs['loss']}): lower --qat-learning-rate")
        # .keras files cannot hold tfmot's layers, so a TensorFlow checkpoint (weights and optimizer
        # state) and its state.json are written into a staging folder and swapped in whole.
        staging = staging_dir(saved)
        checkpoint.write(str(staging / "ckpt"))
        state["epochs_done"] = epoch + 1
        write_json(staging / "state.json", state)
        replace_dir(staging, saved)
    return quantized
