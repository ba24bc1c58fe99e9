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
# reasoning-gym is optional: its task module loads (and says how to install it) when first asked for.
register_lazy("task", "gym", "ponder.tasks._gym")


_callable_task = callable_adopter("task factory")


def _adopt_task(name: str, obj: object) -> object:
    if ":" in name:  # FAMILY_SEPARATOR: such a name could never be looked up
        raise ValueError(
            f"task name {name!r} contains ':', which separates a task family from its argument "
            "(gym:chain_sum); register the family under the part before it"
        )
    return _callable_task(name, obj)


set_adopter("task", _adopt_task)


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


FAMILY_SEPARATOR = ":"
"""Separates a task family from its argument in a task name: ``gym:chain_sum``."""


def _family_argument(name: str, factory: TaskFactory) -> str:
    """The name of the option that a ``FAMILY:ARG`` task name fills: the factory's first."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        params = []
    named = [
        p
        for p in params
        if p.kind
        in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
    ]
    if not named:
        raise ConfigError(
            f"task {name!r} takes no argument, so it cannot be named {name}{FAMILY_SEPARATOR}...",
            hint=f"write --task {name}",
        )
    return named[0].name


def get_task(name: str, /, **options: Any) -> Task:
    """Build the task registered as ``name`` with ``options``.

    A name ``FAMILY:ARG`` (``gym:chain_sum``) builds the task ``FAMILY`` with ``ARG`` as the value
    of its factory's first parameter (``get_task("gym", dataset="chain_sum")``): one registered
    factory stands for a whole family of tasks. Registered names therefore never contain ``:``.

    Raises:
        UnknownNameError: no such task (or family); the message lists the valid names.
        PluginLoadError: the plugin that provides it failed to load.
        ConfigError: an option the task does not take, or a bad option value.
    """
    family, sep, argument = name.partition(FAMILY_SEPARATOR)
    if sep:
        factory = _factory(family)
        parameter = _family_argument(family, factory)
        if not argument:
            raise ConfigError(
                f"task name {name!r} has nothing after {FAMILY_SEPARATOR!r}",
                hint=f"write --task {family}{FAMILY_SEPARATOR}NAME",
            )
        if parameter in options:
            raise ConfigError(
                f"task {name!r} already names its {parameter} ({argument!r}); "
                f"drop the option {parameter}={options[parameter]!r}"
            )
        options = {parameter: argument, **options}
        name = family
    factory = _factory(name)
    _check_options(name, factory, options)
    task = factory(**options)
    if not isinstance(task, Task):
        raise UserError(
            f"the factory of task {name!r} returned a {type(task).__name__}, which is not a Task"
        )
    return task
