"""Plugin kinds built from a pydantic config: backends, executors and process scorers.

Each such plugin is a config class with a field ``kind: Literal[name]`` and a factory
``(config) -> object``; this module registers them on the one registry (:mod:`ponder._registry`),
finds them, validates a spec against the right config class, and builds them, the same way for
every such kind. The kinds' packages keep their own decorators (``register_backend``, ...) as thin
wrappers.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ponder._registry import Kind, lookup, names, register
from ponder.errors import ConfigError


@dataclass(frozen=True)
class Configured:
    """What a config-built kind registers: the config class and the factory."""

    config_type: type[BaseModel]
    factory: Callable[[Any], Any]


def checked_config_type(label: str, name: str, config_type: object) -> type[BaseModel]:
    """``config_type`` if it is a pydantic model whose ``kind`` field accepts ``name``.

    Raises:
        ConfigError: it is not, saying what to declare.
    """
    if not (isinstance(config_type, type) and issubclass(config_type, BaseModel)):
        raise ConfigError(
            f"{label} {name!r}: its config type {config_type!r} is not a pydantic model"
        )
    field = config_type.model_fields.get("kind")
    allowed = typing.get_args(field.annotation) if field is not None else ()
    if field is None or (
        typing.get_origin(field.annotation) is typing.Literal and name not in allowed
    ):
        raise ConfigError(
            f"{label} {name!r}: {config_type.__name__} needs a field `kind` that accepts {name!r}",
            hint=f'declare `kind: Literal["{name}"] = "{name}"` on {config_type.__name__}',
        )
    return config_type


def register_configured(
    kind: Kind, label: str, name: str, config_type: type[BaseModel], factory: Callable[[Any], Any]
) -> None:
    """Register ``factory`` under ``name`` with its config class (checked)."""
    checked = checked_config_type(label, name, config_type)
    register(kind, name, Configured(checked, factory), source=factory)


def adopter(label: str, decorator: str) -> Callable[[str, object], Configured]:
    """The registry's check of a config-built kind: only what its decorator registers."""

    def adopt(name: str, obj: object) -> Configured:
        if isinstance(obj, Configured):
            return obj
        raise TypeError(f"{label} {name!r}: {obj!r} is not registered with {decorator}")

    return adopt


def configured(kind: Kind, name: str) -> Configured:
    """The registration of ``name``.

    Raises:
        UnknownNameError: no such name (the message lists the names).
        PluginLoadError: the plugin that provides it failed to load.
    """
    found = lookup(kind, name)
    if not isinstance(found, Configured):
        raise AssertionError(f"{kind} {name!r} is registered as {found!r}")
    return found


def config_of(kind: Kind, label: str, spec: Mapping[str, Any] | BaseModel) -> BaseModel:
    """The validated config of ``spec``: a mapping with ``kind``, or a config (re-validated by
    its kind's own class when it is of another).

    Raises:
        ConfigError: no ``kind``, or an invalid field (each named, with what is wrong).
        UnknownNameError: no such kind.
    """
    name = spec.get("kind") if isinstance(spec, Mapping) else getattr(spec, "kind", None)
    if not isinstance(name, str):
        raise ConfigError(f"a {label} needs a kind", hint=f"set kind: {' | '.join(names(kind))}")
    config_type = configured(kind, name).config_type
    if isinstance(spec, config_type):
        return spec
    data = dict(spec) if isinstance(spec, Mapping) else spec.model_dump()
    try:
        return config_type.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            validation_problem(e, list(config_type.model_fields)) for e in exc.errors()
        )
        raise ConfigError(
            f"invalid {name} {label}: {problems}", hint="fix the field(s) named above"
        ) from None


def build(kind: Kind, label: str, spec: Mapping[str, Any] | BaseModel) -> Any:
    """The plugin ``spec`` describes, built by its kind's factory (see :func:`config_of`)."""
    config = config_of(kind, label, spec)
    return configured(kind, str(dict(config)["kind"])).factory(config)


def validation_problem(error: Any, fields: list[str], noun: str = "field") -> str:
    """One validation problem as ``field: what is wrong`` (inputs not echoed: may be secret);
    an unknown name gets the closest of ``fields`` and the list (``noun``: what they are called)."""
    name = ".".join(str(p) for p in error["loc"]) or "?"
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{name}: is not a{'n' if noun[0] in 'aeiou' else ''} {noun}{hint}; {noun}s: {', '.join(fields)}"
    if error["type"] == "missing":
        return f"{name}: is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{name}: {message}"
