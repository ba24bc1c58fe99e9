"""Tasks on the shared plugin registry: built-in tasks, plus plugins from the ``ponder.tasks``
entry-point group (``name = "module:factory"``, or a module that registers with :func:`register_task`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from ponder._registry import (
    callable_adopter,
    lookup,
    names,
    register_lazy,
    registering,
    set_adopter,
)
from ponder.errors import ConfigError, UserError
from ponder.tasks._base import Task

TaskFactory = Callable[..., Task]
"""Builds a task from keyword options: ``(**options) -> Task``."""

F = TypeVar("F", bound=TaskFactory)

# The code tasks import the code verifier's types: load them when first asked for.
for _name in ("humaneval", "jsonl-code", "mbpp"):
    register_lazy("task", _name, "ponder.tasks._code")


set_adopter("task", callable_adopter("task factory"))


def register_task(name: str) -> Callable[[F], F]:
    """Class or function decorator registering a task factory under ``name``.

    Example::

        @register_task("mytask")
        def make_my_task(*, few_shot: int = 0) -> Task: ...

    Raises:
        DuplicateNameError: another factory already has the name.
    """
    return registering("task", name)


def task_names() -> list[str]:
    """Names of all available tasks (built-in and plugins), sorted."""
    return names("task")


def _factory(name: str) -> TaskFactory:
    return cast(TaskFactory, lookup("task", name))


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
        UnknownNameError: no such task; the message lists the valid names.
        PluginLoadError: the plugin that provides it failed to load.
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
