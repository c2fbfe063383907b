"""Training side: model architectures, the training config, resumable training, evaluation.

Imports the data side and the shared leaves; TensorFlow (Keras 2) is imported through edgelesion._tf.
"""

from edgelesion.train.config import TrainConfig
from edgelesion.train.cross_validation import cross_validate, merge_cv
from edgelesion.train.evaluation import evaluate_run
from edgelesion.train.leave_source_out import cross_validate_sources, merge_sources
from edgelesion.train.training import resume, train

__all__ = [
    "TrainConfig",
    "cross_validate",
    "cross_validate_sources",
    "evaluate_run",
    "merge_cv",
    "merge_sources",
    "resume",
    "train",
]
