"""Training side: model architectures, the training config, resumable training, evaluation.

Imports the data side and the shared leaves; TensorFlow (Keras 2) is imported through edgelesion._tf.
"""

from edgelesion.train.config import TrainConfig
from edgelesion.train.evaluation import evaluate_run
from edgelesion.train.training import resume, train

__all__ = ["TrainConfig", "evaluate_run", "resume", "train"]
