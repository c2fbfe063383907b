"""Training settings as one dataclass, written whole into every run folder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edgelesion.data.audit import NEAR_DUPLICATE_MAX_DISTANCE, ConflictPolicy
from edgelesion.metrics import MIN_SUPPORT, POSITIVE_CLASS
from edgelesion.preprocessing import Preprocessing
from edgelesion.data.rebalance import AugmentConfig, RebalanceMethod


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result, besides the data."""

    model: str = "seed-dropout"  # a name from edgelesion.train.models.list_models()
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3  # Adam
    seed: int = 0
    rebalance: RebalanceMethod = RebalanceMethod.AUGMENTOR
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    conflict_policy: ConflictPolicy = ConflictPolicy.EXCLUDE
    near_duplicate_max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE
    folds: int = 5  # validation is one of this many group-stratified folds
    fold: int = 0  # which fold is validation
    min_support: int = MIN_SUPPORT  # classes with fewer validation images are not scored
    positive_class: str = POSITIVE_CLASS
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rebalance", RebalanceMethod(self.rebalance))
        object.__setattr__(self, "conflict_policy", ConflictPolicy(self.conflict_policy))
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")

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
        data["preprocessing"] = Preprocessing(**data["preprocessing"])
        return cls(**data)

    def with_changes(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)
