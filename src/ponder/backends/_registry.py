"""Backend kinds on the shared plugin registry: each kind is a pydantic config class and a factory.

Plugins: the ``ponder.backends`` entry-point group. The entry point is named after the backend kind
and names a module whose import registers it with :func:`register_backend`, or a factory
``(config: SomeConfig) -> Backend`` whose parameter annotation gives the config class.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from ponder._registry import lookup, names, register, register_lazy, set_adopter
from ponder.backends._base import Backend
from ponder.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound=BaseModel)
BackendFactory = Callable[[Any], Backend]


@dataclass(frozen=True)
class _BackendKind:
    config_type: type[BaseModel]
    factory: BackendFactory


def _check_config_type(kind: str, config_type: object) -> type[BaseModel]:
    if not (isinstance(config_type, type) and issubclass(config_type, BaseModel)):
        raise ConfigError(
            f"backend {kind!r}: its config type {config_type!r} is not a pydantic model"
        )
    field = config_type.model_fields.get("kind")
    allowed = typing.get_args(field.annotation) if field is not None else ()
    if field is None or (
        typing.get_origin(field.annotation) is typing.Literal and kind not in allowed
    ):
        raise ConfigError(
            f"backend {kind!r}: {config_type.__name__} needs a field `kind` that accepts {kind!r}",
            hint=f'declare `kind: Literal["{kind}"] = "{kind}"` on {config_type.__name__}',
        )
    return config_type


def register_backend(
    kind: str, config_type: type[ConfigT]
) -> Callable[[Callable[[ConfigT], Backend]], Callable[[ConfigT], Backend]]:
    """Register a backend factory under ``kind`` (decorator); ``config_type`` is its pydantic config,
    with a field ``kind: Literal[kind]``.

    Raises:
        DuplicateNameError: another factory already has the kind.
        ConfigError: the config type has no ``kind`` field accepting ``kind``.
    """
    checked = _check_config_type(kind, config_type)

    def deco(factory: Callable[[ConfigT], Backend]) -> Callable[[ConfigT], Backend]:
        register("backend", kind, _BackendKind(checked, factory), source=factory)
        return factory

    return deco


def _adopt(kind: str, obj: object) -> _BackendKind:
    """What the decorator registers, or a bare factory (an entry point's object): its first
    parameter's annotation is the config class."""
    if isinstance(obj, _BackendKind):
        return obj
    if not callable(obj):
        raise TypeError(f"{obj!r} is neither a module nor a backend factory")
    params = list(inspect.signature(obj, eval_str=True).parameters.values())
    config_type = params[0].annotation if params else None
    if config_type is None or config_type is inspect.Parameter.empty:
        raise TypeError(
            f"backend factory {obj!r} must take one parameter annotated with its config class"
        )
    return _BackendKind(_check_config_type(kind, config_type), obj)


set_adopter("backend", _adopt)
# The openai client alone costs ~0.3 s to import: load it only when asked for.
register_lazy("backend", "openai", "ponder.backends._openai")


def _kind(kind: str) -> _BackendKind:
    found = lookup("backend", kind)
    if not isinstance(found, _BackendKind):
        raise AssertionError(f"backend {kind!r} is registered as {found!r}")
    return found


def backend_kinds() -> list[str]:
    """Names of all backend kinds: built-in and installed plugins (none of them is imported)."""
    return names("backend")


def backend_config_type(kind: str) -> type[BaseModel]:
    """The pydantic config class of backend ``kind``.

    Raises:
        UnknownNameError: no such backend (the message lists the kinds).
        PluginLoadError: the plugin that provides it failed to load.
    """
    return _kind(kind).config_type


def create_backend(config: BaseModel) -> Backend:
    """Instantiate the backend described by ``config`` (its ``kind`` field selects the factory)."""
    kind = getattr(config, "kind", None)
    if not isinstance(kind, str):
        raise ConfigError(
            "backend config has no 'kind' field", hint=f"set kind: {'|'.join(backend_kinds())}"
        )
    entry = _kind(kind)
    if not isinstance(config, entry.config_type):
        config = entry.config_type.model_validate(config.model_dump())
    return entry.factory(config)
