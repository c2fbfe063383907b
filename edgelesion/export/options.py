"""What an export makes and what each artifact must meet: options without TensorFlow, so `--help` stays light."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from edgelesion.errors import EdgelesionError
from edgelesion.export.calibration import CALIBRATION_IMAGES
from edgelesion.export.parity import DEFAULT_TOLERANCES, Tolerance
from edgelesion.thresholds import TARGET_SENSITIVITY

ARTIFACTS = tuple(DEFAULT_TOLERANCES)  # float32.tflite, float16.tflite, int8.tflite, float32.onnx, int8.onnx
# how the int8 artifacts are made: quantization-aware fine-tune, post-training quantization, or both and the closer one
INT8_METHODS = ("auto", "qat", "ptq")
INT8_ARTIFACTS = ("int8.tflite", "int8.onnx")

QatTarget = Literal["labels", "float-model"]
QAT_TARGETS = get_args(QatTarget)


@dataclass(frozen=True)
class QATConfig:
    """The QAT fine-tune: by default it distils the float model, the answers the int8 file is judged against.

    Fitting the training labels is more training, and on a model whose probabilities are flat it
    moves many top-1 predictions (seed model 3: agreement with the float model 74.6% after 3 epochs
    at 1e-4, 81.7% after 1 epoch at 1e-5, 92.6% after 1 epoch at 1e-6). Fitting the float model's
    probabilities instead (2 epochs at 1e-5) agreed better overall on Lite0 fold 0 (12 epochs: 0.969
    against 0.952, but 0.990 against 0.997 on sure images; 20 epochs: 0.972 / 0.997 against 0.954 /
    0.994, the only model where a QAT file ships) and seed models 3 and 1, worse on seed model 2
    (docs/experiments.md, "int8").
    """

    epochs: int = 2
    learning_rate: float = 1e-5  # Adam
    batch_size: int = 32
    # what the fine-tune fits: the float model's own probabilities on the training images
    # (distillation), or the training labels with the run's class weights
    target: QatTarget = "float-model"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"QAT epochs must be at least 1, not {self.epochs}")
        if self.target not in QAT_TARGETS:
            raise ValueError(f"QAT target {self.target!r} is not one of {', '.join(QAT_TARGETS)}")


@dataclass(frozen=True)
class OnnxInt8Scheme:
    """How int8.onnx is quantized. The default is what the export ships (see `quantize_static_int8`); the others
    exist to be measured against it (docs/experiments.md)."""

    activations: Literal["uint8", "int8"] = "uint8"
    eight_bit_weights: Literal["depthwise", "none", "all"] = "depthwise"  # which int8 weights keep 8 bits, the rest 7
    pixel_conv_weights: Literal["uint8", "int8"] = "uint8"  # the first convolution's: 8-bit uint8, or as the others

    def __post_init__(self) -> None:
        if (
            self.activations not in ("uint8", "int8")
            or self.eight_bit_weights not in ("depthwise", "none", "all")
            or self.pixel_conv_weights not in ("uint8", "int8")
        ):
            raise ValueError(f"unknown int8 ONNX scheme {self}")


@dataclass(frozen=True)
class ExportOptions:
    """Which artifacts to make, the QAT fine-tune, and what each must meet."""

    artifacts: tuple[str, ...] = ARTIFACTS
    qat: QATConfig = field(default_factory=QATConfig)
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    keep_failed: bool = False  # keep an artifact that misses its tolerance (marked as such in bundle.json)
    calibration_images: int = CALIBRATION_IMAGES
    melanoma_sensitivity: float = TARGET_SENSITIVITY  # the melanoma alert's target on the validation split
    int8: str = "auto"  # one of INT8_METHODS
    onnx_int8: OnnxInt8Scheme = OnnxInt8Scheme()  # how int8.onnx is quantized (recorded in its bundle.json entry)
    # cross-validations of the run's recipe for the model card, at most one k-fold and one leave-source-out (default:
    # the k-fold folder around a run that is its fold)
    cv_dirs: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.int8 not in INT8_METHODS:
            raise EdgelesionError(f"--int8 {self.int8!r}: choose one of {', '.join(INT8_METHODS)}")
        unknown = sorted(set(self.artifacts) - set(ARTIFACTS))
        if unknown or not self.artifacts:
            raise EdgelesionError(
                f"unknown artifact(s) {unknown or '(none given)'}: choose from {', '.join(ARTIFACTS)}"
            )
        if not 0.0 < self.melanoma_sensitivity <= 1.0:
            raise EdgelesionError(f"--melanoma-sensitivity {self.melanoma_sensitivity} must be in (0, 1]")
