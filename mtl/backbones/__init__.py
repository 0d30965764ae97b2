"""The common backbone registry: ``register_backbone``, ``create_backbone``, ``list_backbones``."""

from mtl.backbones.registry import (
    create_backbone,
    describe_backbone,
    list_backbones,
    register_backbone,
)

__all__ = ["create_backbone", "describe_backbone", "list_backbones", "register_backbone"]

from mtl.backbones import models as _models  # noqa: E402,F401  (registers the built-ins)
from mtl.backbones.base import Backbone  # noqa: E402

__all__ += ["Backbone"]
