"""Task registry: built-in tasks, plus plugins from the ``ponder.tasks`` entry-point group."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from ponder.errors import ConfigError, NotFoundError, UserError
from ponder.tasks._base import Task

TaskFactory = Callable[..., Task]
"""Builds a task from keyword options: ``(**options) -> Task``."""

F = TypeVar("F", bound=TaskFactory)

ENTRY_POINT_GROUP = "ponder.tasks"
"""Entry-point group of task plugins: ``name = "module:factory"``."""

_BUILTIN_MODULES = (
    "ponder.tasks._gsm8k",
    "ponder.tasks._aime",
    "ponder.tasks._jsonl",
    "ponder.tasks._code",
)

_FACTORIES: dict[str, TaskFactory] = {}


def register_task(name: str) -> Callable[[F], F]:
    """Class or function decorator registering a task factory under ``name``.

    Example::

        @register_task("mytask")
        def make_my_task(*, few_shot: int = 0) -> Task: ...
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"invalid task name {name!r}")

    def decorate(factory: F) -> F:
        existing = _FACTORIES.get(name)
        if existing is not None and _qualname(existing) != _qualname(factory):
            raise ValueError(f"task {name!r} is already registered by {_qualname(existing)}")
        _FACTORIES[name] = factory
        return factory

    return decorate


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


@functools.cache
def _plugins() -> Mapping[str, EntryPoint]:
    """Installed task plugins by name (loaded only when asked for)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def task_names() -> list[str]:
    """Names of all available tasks (built-in and plugins), sorted."""
    _load_builtins()
    return sorted(set(_FACTORIES) | set(_plugins()))


def _factory(name: str) -> TaskFactory:
    _load_builtins()
    factory = _FACTORIES.get(name)
    if factory is not None:
        return factory
    ep = _plugins().get(name)
    if ep is None:
        raise NotFoundError(
            f"unknown task {name!r}; choose one of: {', '.join(task_names())}",
            hint=f"plugins add tasks through the {ENTRY_POINT_GROUP!r} entry-point group",
        )
    try:
        loaded = ep.load()
    except (ImportError, AttributeError) as exc:
        raise UserError(
            f"task plugin {name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
            hint="reinstall or uninstall the package that provides it",
        ) from exc
    if not callable(loaded):
        raise UserError(f"task plugin {name!r} ({ep.value}) is not a callable task factory")
    _FACTORIES.setdefault(name, loaded)
    return _FACTORIES[name]


def _check_options(name: str, factory: TaskFactory, options: Mapping[str, object]) -> None:
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature: let the factory judge
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    named = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    valid = sorted(p.name for p in named)
    unknown = [o for o in options if o not in valid]
    if unknown:
        which = ", ".join(repr(o) for o in unknown)
        raise ConfigError(
            f"task {name!r} has no option {which}; valid options: {', '.join(valid) or 'none'}",
            hint=f"drop {which} (it does not apply to {name!r})",
        )
    missing = [
        p.name for p in named if p.default is inspect.Parameter.empty and p.name not in options
    ]
    if missing:
        raise ConfigError(f"task {name!r} needs option {', '.join(repr(m) for m in missing)}")


def get_task(name: str, /, **options: Any) -> Task:
    """Build the task registered as ``name`` with ``options``.

    Raises:
        NotFoundError: no such task; the message lists the valid names.
        ConfigError: an option the task does not take, or a bad option value.
    """
    factory = _factory(name)
    _check_options(name, factory, options)
    task = factory(**options)
    if not isinstance(task, Task):
        raise UserError(
            f"the factory of task {name!r} returned a {type(task).__name__}, which is not a Task"
        )
    return task
