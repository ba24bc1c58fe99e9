"""The ``python`` scorer: your function scores each partial solution.

``function: "package.module:name"`` names a function ``(query, steps, terminal) -> float | None``
(``query`` the last user message, ``steps`` the partial solution's steps, the last one being
scored, ``terminal`` whether the solution is complete). It may be ``async``; a plain function runs
in a worker thread, so one that blocks (a process, a sandbox, a server) does not stop the others.
It returns a score in [0, 1], or None when it cannot score the solution. The function is imported
when the config is validated, so a wrong name fails before anything runs.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ponder.errors import UserError
from ponder.systems._context import RunContext
from ponder.systems.tree._scorers import ScoreInput, Scorer, register_scorer

FORMAT = "package.module:function"


def load_function(spec: str) -> Callable[..., Any]:
    """The callable that ``spec`` (``package.module:attribute.path``) names.

    Raises:
        ValueError: a malformed spec, a module that does not import, a missing attribute, or
            something that is not callable (the message says which).
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise ValueError(f"{spec!r} is not of the form {FORMAT!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"module {module_name!r} cannot be imported: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{spec} is a {type(obj).__name__}, not a function")
    return obj


class PythonScorerConfig(BaseModel):
    """Score with a Python function (see :mod:`ponder.systems.tree._python`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["python"] = "python"
    function: str = Field(
        description=f"{FORMAT}: a function (query, steps, terminal) -> score in [0, 1] or None."
    )

    @field_validator("function")
    @classmethod
    def _importable(cls, value: str) -> str:
        load_function(value)
        return value


class PythonScorer(Scorer):
    """See :mod:`ponder.systems.tree._python`."""

    def __init__(self, config: PythonScorerConfig) -> None:
        self.config = config
        self.function = load_function(config.function)

    @property
    def name(self) -> str:
        return f"python:{self.config.function}"

    async def score(self, item: ScoreInput, ctx: RunContext) -> float | None:
        spec = self.config.function
        args = (item.query, list(item.steps), item.terminal)
        try:
            if inspect.iscoroutinefunction(self.function):
                value = await self.function(*args)
            else:
                value = await asyncio.to_thread(self.function, *args)
                if inspect.isawaitable(value):
                    value = await value
        except Exception as exc:  # the user's code failed: re-raised naming it, cause chained
            raise ctx.error(f"scorer function {spec} failed: {type(exc).__name__}: {exc}") from exc
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (math.isfinite(value) and 0.0 <= value <= 1.0)
        ):
            raise UserError(
                f"scorer function {spec} returned {value!r} for a solution of "
                f"{len(item.steps)} step(s); a score is a number from 0 to 1, or None",
                hint=f"make {spec} return a float in [0, 1] (or None when it cannot score)",
            )
        return float(value)


@register_scorer("python", PythonScorerConfig)
def _make(config: PythonScorerConfig) -> Scorer:
    return PythonScorer(config)
