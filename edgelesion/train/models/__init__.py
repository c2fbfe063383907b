"""Model architectures by name: a new architecture is a module here that registers itself.

Importing this package registers every architecture, so `create_model` and `list_models` see them all.
"""

from edgelesion.train.models import efficientnet_lite, seed  # noqa: F401  (each registers its models)
from edgelesion.train.models.registry import HEAD, create_model, list_models, register_model

__all__ = ["HEAD", "create_model", "list_models", "register_model"]
