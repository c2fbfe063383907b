"""Training side: model architectures, the training config and named recipes, resumable training, evaluation.

Imports the data side and the shared leaves; TensorFlow (Keras 2) is imported through edgelesion._tf, by the
modules that train, on first use of their entry points.
"""

from edgelesion._lazy import lazy_entry_points

__getattr__, __all__ = lazy_entry_points(
    __name__,
    {
        "TrainConfig": "edgelesion.train.config",
        "OnlineAugment": "edgelesion.train.config",
        "RECIPES": "edgelesion.train.recipes",
        "RECOMMENDED_RECIPE": "edgelesion.train.recipes",
        "recipe_config": "edgelesion.train.recipes",
        "cross_validate": "edgelesion.train.cross_validation",
        "merge_cv": "edgelesion.train.cross_validation",
        "cross_validate_sources": "edgelesion.train.leave_source_out",
        "merge_sources": "edgelesion.train.leave_source_out",
        "evaluate_run": "edgelesion.train.evaluation",
        "train": "edgelesion.train.training",
        "resume": "edgelesion.train.training",
    },
)
