"""mtl: the base layer of the toolkit.

Backbone registry (:mod:`mtl.backbones`), datasets and episodes (:mod:`mtl.data`), shared
training utilities (:mod:`mtl.utils`), and the multi-task and transfer-learning side.
Nothing in ``mtl`` imports ``meta``.
"""

from mtl.backbones import create_backbone, list_backbones, register_backbone

__version__ = "0.1.0"

__all__ = ["create_backbone", "list_backbones", "register_backbone", "__version__"]
