"""A timm-style registry of backbones shared by every trainer in the toolkit.

Register a constructor with :func:`register_backbone`, build it with :func:`create_backbone`,
discover names with :func:`list_backbones`.  A constructor takes keyword arguments only and
returns an :class:`~mtl.backbones.base.Backbone`.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from mtl.errors import ConfigError

F = TypeVar("F", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_backbone(name: str | None = None, *, overwrite: bool = False) -> Callable[[F], F]:
    """Decorator registering a backbone constructor under ``name`` (default: the function name).

    Example::

        @register_backbone("tiny")
        def tiny(num_classes: int | None = None, **kw) -> Backbone: ...

    Registering a taken name raises unless ``overwrite=True``.
    """

    def decorator(fn: F) -> F:
        key = (name or fn.__name__).lower()
        if key in _REGISTRY and not overwrite and _REGISTRY[key] is not fn:
            raise ConfigError(
                f"backbone name {key!r} is already registered; pass overwrite=True to replace it"
            )
        _REGISTRY[key] = fn
        doc = (fn.__doc__ or "").strip().splitlines()
        _DESCRIPTIONS[key] = doc[0] if doc else ""
        return fn

    return decorator


def list_backbones(pattern: str = "*") -> list[str]:
    """Sorted names of registered backbones matching a shell-style ``pattern`` (e.g. ``"conv*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern.lower()))


def describe_backbone(name: str) -> str:
    """The one-line description of a registered backbone (the first docstring line)."""
    return _DESCRIPTIONS[_resolve(name)]


def _resolve(name: str) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"backbone name must be a string, got {type(name).__name__} {name!r}")
    key = name.lower()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown backbone {name!r}{hint} (registered: {', '.join(list_backbones())})"
        )
    return key


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered backbone ``name`` with keyword arguments.

    ``num_classes=k`` adds a linear head of ``k`` outputs; without it the module returns
    features of size ``model.out_features``.  The name and arguments are kept on the
    module as ``model.backbone_name`` and ``model.backbone_kwargs`` so checkpoints can
    record how to rebuild it.
    """
    key = _resolve(name)
    try:
        model = _REGISTRY[key](**kwargs)
    except TypeError as exc:  # unknown keyword for this constructor
        raise ConfigError(f"backbone {key!r} does not accept these arguments: {exc}") from exc
    model.backbone_name = key
    model.backbone_kwargs = dict(kwargs)
    return model
