"""Training settings as dataclasses (the run, its online augmentation), written whole into every run folder, and each
model's measured recipe."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edgelesion.data.audit import NEAR_DUPLICATE_MAX_DISTANCE, ConflictPolicy
from edgelesion.data.rebalance import AugmentConfig, RebalanceMethod
from edgelesion.metrics import LOOKALIKES, MIN_SUPPORT, POSITIVE_CLASS
from edgelesion.preprocessing import LEGACY_DRAFT_MARGIN, Preprocessing

LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("auto", "none", "mirrored", "multi-worker")  # train/distribution.py
# Each architecture's own input normalisation: what its weights were trained with.
MODEL_INPUTS = {
    "efficientnet-lite0": Preprocessing(image_size=224, scale=1 / 128, offset=-127 / 128),  # google/automl: (p-127)/128
}


@dataclass(frozen=True)
class OnlineAugment:
    """What each training image may undergo, on raw 0-255 pixels (the model scales them itself)."""

    enabled: bool = False
    flips: bool = True  # left-right and up-down, each with probability 1/2
    rotate90: bool = True  # 0, 90, 180 or 270 degrees
    min_crop: float = 0.8  # random square crop of this share of the side or more, resized back (zoom)
    brightness: float = 0.1  # +- this share of the 0-255 range
    contrast: float = 0.2  # factor in [1 - c, 1 + c]
    saturation: float = 0.2  # factor in [1 - s, 1 + s]
    hue: float = 0.02  # +- this share of the colour wheel
    pixel_noise: float = 0.0  # standard deviation, in grey levels, of Gaussian noise added to every pixel value
    # Illumination and camera colour differ between clinics; these three vary them so a model cannot lean on them.
    gamma: float = 0.0  # gamma exp(u), u uniform in [-gamma, gamma]
    white_balance: float = 0.0  # each channel's gain in [1 - w, 1 + w], drawn apart: a colour cast
    grayscale: float = 0.0  # probability that an image loses its colour
    # Dermoscopes leave a dark circular frame in some clinics' images and none in others'; drawing one at random on
    # any image makes the frame say nothing about the class.
    frame: float = 0.0  # probability of a dark circle's outside, radius 0.8-1.2 half-sides, its centre moved by 0.1
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha): each image blended with the next in its batch (0: none)

    def __post_init__(self) -> None:
        if not 0.1 <= self.min_crop <= 1.0:
            raise ValueError(f"min_crop {self.min_crop} must be between 0.1 and 1 (1: no crop)")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} {getattr(self, name)} must be in [0, 1)")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue {self.hue} must be in [0, 0.5]")
        if not 0.0 <= self.pixel_noise <= 32.0:
            raise ValueError(f"pixel_noise {self.pixel_noise} must be between 0 and 32 grey levels")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma {self.gamma} must be between 0 and 1 (gamma exp(u), |u| <= 1)")
        if not 0.0 <= self.white_balance < 1.0:
            raise ValueError(f"white_balance {self.white_balance} must be in [0, 1)")
        if not 0.0 <= self.grayscale <= 1.0:
            raise ValueError(f"grayscale {self.grayscale} must be a probability")
        if not 0.0 <= self.frame <= 1.0:
            raise ValueError(f"frame {self.frame} must be a probability")
        if not 0.0 <= self.mixup <= 1.0:
            raise ValueError(f"mixup {self.mixup} must be between 0 (off) and 1 (Beta(1, 1): uniform mixing)")

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (targets then are class distributions, not class indices)."""
        return self.enabled and self.mixup > 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result, besides the data."""

    model: str = "seed-dropout"  # a name from edgelesion.train.models.list_models()
    pretrained: bool = True  # start from the model's ImageNet weights, where it has them
    epochs: int = 20  # in all, head epochs included
    batch_size: int = 32
    learning_rate: float = 1e-3  # Adam; the whole network's peak rate after the head epochs
    lr_schedule: str = "constant"  # or "cosine": warm-up, then cosine decay to 0 over the remaining epochs
    warmup_epochs: int = 0  # linear warm-up at the start of the whole-network epochs
    head_epochs: int = 0  # first epochs train only the classifier head, the backbone frozen
    head_learning_rate: float = 1e-3  # constant, during the head epochs
    freeze_batchnorm: bool = False  # BatchNorm layers keep their pretrained statistics (inference mode)
    label_smoothing: float = 0.0
    patience: int = 0  # stop after this many epochs without a better validation balanced accuracy (0: never)
    seed: int = 0  # the fold split (unless split_seed is set), initialisation, augmentation and batch order
    split_seed: int | None = None  # the fold split's own seed: seed replicates of one split vary only the training
    rebalance: RebalanceMethod = RebalanceMethod.AUGMENTOR
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # Augmentor copies (rebalance=augmentor)
    online_augment: OnlineAugment = field(default_factory=OnlineAugment)  # fresh draws every epoch, in the pipeline
    conflict_policy: ConflictPolicy = ConflictPolicy.EXCLUDE
    near_duplicate_max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE
    folds: int = 5  # validation is one of this many group-stratified folds
    fold: int = 0  # which fold is validation
    min_support: int = MIN_SUPPORT  # classes with fewer validation images are not scored
    positive_class: str = POSITIVE_CLASS
    lookalikes: tuple[str, ...] = LOOKALIKES  # what the positive class is told from within each source
    held_out_source: str | None = None  # leave-source-out: this source is kept out of training and scored alone
    preprocessing: Preprocessing | None = None  # None: the model's own (MODEL_INPUTS), else the seed's 180 px, 1/255
    precision: str = "float32"  # or a Keras mixed policy: "mixed_bfloat16", "mixed_float16" (train/precision.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rebalance", RebalanceMethod(self.rebalance))
        object.__setattr__(self, "conflict_policy", ConflictPolicy(self.conflict_policy))
        object.__setattr__(self, "lookalikes", tuple(self.lookalikes))
        if self.preprocessing is None:
            object.__setattr__(self, "preprocessing", MODEL_INPUTS.get(self.model, Preprocessing()))
        if self.split_seed == self.seed:  # the same split either way: one way to write it
            object.__setattr__(self, "split_seed", None)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule {self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        if not 0 <= self.head_epochs < self.epochs:
            raise ValueError(f"head_epochs {self.head_epochs} must be at least 0 and fewer than epochs {self.epochs}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing {self.label_smoothing} must be in [0, 1)")

    @property
    def fold_split_seed(self) -> int:
        """The seed that draws the folds: split_seed, or seed when it is not set."""
        return self.seed if self.split_seed is None else self.split_seed

    @classmethod
    def for_model(cls, model: str, **changes: Any) -> TrainConfig:
        """The model's measured recipe (benchmarks/README.md), with `changes` on top."""
        return cls(**{"model": model, **MODEL_RECIPES.get(model, {}), **changes})

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate of 0-based `epoch`: constant for the head, then warm-up and the schedule."""
        if epoch < self.head_epochs:
            return self.head_learning_rate
        step, steps = epoch - self.head_epochs, self.epochs - self.head_epochs
        if step < self.warmup_epochs:
            return self.learning_rate * (step + 1) / (self.warmup_epochs + 1)
        if self.lr_schedule == "cosine":
            done = (step - self.warmup_epochs) / max(1, steps - self.warmup_epochs)
            return self.learning_rate * 0.5 * (1 + math.cos(math.pi * done))
        return self.learning_rate

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (enums as their values)."""
        data = asdict(self)
        data["rebalance"] = self.rebalance.value
        data["conflict_policy"] = self.conflict_policy.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict."""
        data = dict(data)
        data["augment"] = AugmentConfig(**data["augment"])
        data["online_augment"] = OnlineAugment(**data.get("online_augment", {}))
        # runs written before reduced JPEG decoding existed decoded every JPEG in full
        data["preprocessing"] = Preprocessing(
            **{"jpeg_draft": False, "jpeg_draft_margin": LEGACY_DRAFT_MARGIN, **data["preprocessing"]}
        )
        return cls(**data)

    def with_changes(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)


# The fine-tuning recipe of each pretrained model, as measured (benchmarks/README.md, "Lite0 recipe").
MODEL_RECIPES: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": {
        "epochs": 20,
        "head_epochs": 3,
        "head_learning_rate": 1e-3,
        "learning_rate": 2e-4,
        "lr_schedule": "cosine",
        "warmup_epochs": 1,
        "freeze_batchnorm": True,
        "label_smoothing": 0.1,
        "patience": 0,
        "rebalance": RebalanceMethod.CLASS_WEIGHTS,
        "online_augment": OnlineAugment(enabled=True),
    },
}


@dataclass(frozen=True)
class DistributeConfig:
    """Where training runs: a strategy from STRATEGIES and, if set, the longest a collective may wait for the other
    workers (TensorFlow starts a waiting thread per collective for it, so it is off unless asked for: a worker
    that exits or is killed is noticed by the coordination service's heartbeats without it).

    It decides where the work happens, not the result's recipe: a run may resume under another strategy (the
    global batch and learning rate stay the config's), and its distribution.json lists where each epoch ran.
    """

    strategy: str = "auto"
    collective_timeout: float | None = None
    # TensorFlow's op determinism: a resumed run ends where an uninterrupted one does; on a GPU, ops without a
    # deterministic kernel then raise, and False lets them run (results then vary from run to run)
    deterministic: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.collective_timeout is not None and self.collective_timeout <= 0:
            raise ValueError(f"--collective-timeout {self.collective_timeout} must be a positive number of seconds")


DEFAULT_DISTRIBUTE = DistributeConfig()  # the strategy `auto` picks
