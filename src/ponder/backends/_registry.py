"""Backend kinds on the shared plugin registry: each kind is a pydantic config class and a factory.

Plugins: the ``ponder.backends`` entry-point group. The entry point is named after the backend kind
and names a module whose import registers it with :func:`register_backend`, or a factory
``(config: SomeConfig) -> Backend`` whose parameter annotation gives the config class.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from ponder._configured import (
    Configured,
    build,
    checked_config_type,
    configured,
    register_configured,
)
from ponder._registry import names, register_lazy, set_adopter
from ponder.backends._base import Backend

ConfigT = TypeVar("ConfigT", bound=BaseModel)
BackendFactory = Callable[[Any], Backend]


def register_backend(
    kind: str, config_type: type[ConfigT]
) -> Callable[[Callable[[ConfigT], Backend]], Callable[[ConfigT], Backend]]:
    """Register a backend factory under ``kind`` (decorator); ``config_type`` is its pydantic config,
    with a field ``kind: Literal[kind]``.

    Raises:
        DuplicateNameError: another factory already has the kind.
        ConfigError: the config type has no ``kind`` field accepting ``kind``.
    """

    def deco(factory: Callable[[ConfigT], Backend]) -> Callable[[ConfigT], Backend]:
        register_configured("backend", "backend", kind, config_type, factory)
        return factory

    return deco


def _adopt(kind: str, obj: object) -> Configured:
    """What the decorator registers, or a bare factory (an entry point's object): its first
    parameter's annotation is the config class."""
    if isinstance(obj, Configured):
        return obj
    if not callable(obj):
        raise TypeError(f"{obj!r} is neither a module nor a backend factory")
    params = list(inspect.signature(obj, eval_str=True).parameters.values())
    config_type = params[0].annotation if params else None
    if config_type is None or config_type is inspect.Parameter.empty:
        raise TypeError(
            f"backend factory {obj!r} must take one parameter annotated with its config class"
        )
    return Configured(checked_config_type("backend", kind, config_type), obj)


set_adopter("backend", _adopt)
# The openai client alone costs ~0.3 s to import: load it only when asked for.
register_lazy("backend", "openai", "ponder.backends._openai")


def backend_kinds() -> list[str]:
    """Names of all backend kinds: built-in and installed plugins (none of them is imported)."""
    return names("backend")


def backend_config_type(kind: str) -> type[BaseModel]:
    """The pydantic config class of backend ``kind``.

    Raises:
        UnknownNameError: no such backend (the message lists the kinds).
        PluginLoadError: the plugin that provides it failed to load.
    """
    return configured("backend", kind).config_type


def create_backend(config: BaseModel) -> Backend:
    """Instantiate the backend described by ``config`` (its ``kind`` field selects the factory;
    a config of another class is validated by the kind's own)."""
    backend: Backend = build("backend", "backend", config)
    return backend
