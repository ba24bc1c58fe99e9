"""Process scorers: how good a partial solution is, step by step.

A scorer looks at a query and a partial solution (its steps so far, the last one the step being
scored) and returns a score in [0, 1], or None when it cannot score it (a judge whose reply could
not be read, an outcome check before the solution is complete). Tree strategies aggregate a path's
step scores into its score with :func:`aggregate` (``last``, ``min``, ``product``, ``mean``).

Scorers are plugins of kind ``scorer``: a pydantic config with ``kind: Literal[name]`` and a
factory ``(config) -> Scorer``, registered with :func:`register_scorer` (entry-point group
``ponder.scorers``). Model calls a scorer makes go through the component's
:class:`~ponder.systems.RunContext`, so they are traced, counted in its usage and budget, and
served from stored generations where possible. Scores are cached per (scorer, text) for the
duration of a query (:class:`ScoreCache`).
"""

from __future__ import annotations

import asyncio
import difflib
import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from ponder._registry import lookup, names, register, set_adopter
from ponder.errors import ConfigError
from ponder.records import Message

if TYPE_CHECKING:
    from ponder.systems._context import RunContext

AggregateRule = Literal["last", "min", "product", "mean"]
"""How step scores become a path score (as in search-and-learn): the last step's, the lowest, their
product, or their mean. Steps without a score are left out."""

ConfigT = TypeVar("ConfigT", bound=BaseModel)


@dataclass(frozen=True)
class ScoreInput:
    """What a scorer scores: a partial solution to a query.

    Attributes:
        messages: The query as the system got it (chat messages).
        steps: The partial solution's steps so far; the last is the one being scored.
        delimiter: What joins steps into the solution text.
        terminal: Whether the solution is complete (nothing follows the last step).
    """

    messages: tuple[Message, ...]
    steps: tuple[str, ...]
    delimiter: str = "\n\n"
    terminal: bool = False

    @property
    def query(self) -> str:
        """The last user message's text (what is being answered)."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content or ""
        return ""

    @property
    def solution(self) -> str:
        """The partial solution as one text."""
        return self.delimiter.join(self.steps)


class Scorer(ABC):
    """Scores partial solutions (see the module's docs)."""

    @property
    @abstractmethod
    def name(self) -> str:
        """A stable name (kind and what changes its scores), for traces and the score cache."""

    @abstractmethod
    async def score(self, item: ScoreInput, ctx: RunContext) -> float | None:
        """The score of ``item`` in [0, 1] (None: cannot score it)."""

    async def score_many(self, items: Sequence[ScoreInput], ctx: RunContext) -> list[float | None]:
        """Scores of several items (default: concurrently, one by one)."""
        return list(await asyncio.gather(*(self.score(i, ctx) for i in items)))

    async def cost_bound(self, item: ScoreInput, ctx: RunContext) -> tuple[int, int]:
        """The most calls and tokens (prompt + completion) that scoring ``item`` may cost; a
        strategy's budget reserves it before scoring. Default (0, 0): a scorer that calls a model
        must override it (e.g. with an upper bound of its prompt's tokens plus ``max_tokens``)."""
        return 0, 0


@dataclass
class ScoreCache:
    """Scores of one query by text: a partial solution scored twice (two paths meeting, an MCTS
    node revisited) costs one scoring."""

    scores: dict[tuple[str, str, bool], float | None] = field(default_factory=dict)
    hits: int = 0

    def has(self, scorer: Scorer, item: ScoreInput) -> bool:
        return (scorer.name, item.solution, item.terminal) in self.scores

    async def scores_of(
        self, scorer: Scorer, items: Sequence[ScoreInput], ctx: RunContext
    ) -> list[float | None]:
        keys = [(scorer.name, i.solution, i.terminal) for i in items]
        todo = {k: i for k, i in zip(keys, items, strict=True) if k not in self.scores}
        self.hits += len(keys) - len(todo)
        if todo:
            fresh = await scorer.score_many(list(todo.values()), ctx)
            self.scores.update(zip(todo, fresh, strict=True))
        return [self.scores[k] for k in keys]


def aggregate(scores: Sequence[float | None], rule: AggregateRule) -> float | None:
    """A path's score from its step scores by ``rule`` (None when no step has a score)."""
    known = [s for s in scores if s is not None]
    if not known:
        return None
    if rule == "last":
        return known[-1]
    if rule == "min":
        return min(known)
    if rule == "product":
        return math.prod(known)
    return sum(known) / len(known)


# ----- registry -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ScorerKind:
    config_type: type[BaseModel]
    factory: Callable[[Any], Scorer]


def register_scorer(
    kind: str, config_type: type[ConfigT]
) -> Callable[[Callable[[ConfigT], Scorer]], Callable[[ConfigT], Scorer]]:
    """Register a scorer factory under ``kind`` (decorator); ``config_type`` is its pydantic
    config, with a field ``kind: Literal[kind]``."""
    fld = config_type.model_fields.get("kind")
    if fld is None or kind not in typing.get_args(fld.annotation):
        raise ConfigError(
            f"scorer {kind!r}: {config_type.__name__} needs a field `kind` that accepts {kind!r}",
            hint=f'declare `kind: Literal["{kind}"] = "{kind}"` on {config_type.__name__}',
        )

    def deco(factory: Callable[[ConfigT], Scorer]) -> Callable[[ConfigT], Scorer]:
        register("scorer", kind, _ScorerKind(config_type, factory), source=factory)
        return factory

    return deco


def _adopt(kind: str, obj: object) -> _ScorerKind:
    if isinstance(obj, _ScorerKind):
        return obj
    raise TypeError(f"scorer {kind!r}: {obj!r} is not registered with register_scorer")


set_adopter("scorer", _adopt)


def _kind(kind: str) -> _ScorerKind:
    found = lookup("scorer", kind)
    if not isinstance(found, _ScorerKind):
        raise AssertionError(f"scorer {kind!r} is registered as {found!r}")
    return found


def scorer_kinds() -> list[str]:
    """Names of all scorer kinds: built-in and installed plugins."""
    return names("scorer")


def scorer_config(spec: Mapping[str, Any] | BaseModel) -> BaseModel:
    """The validated config of a scorer spec (a mapping with ``kind``, or a config).

    Raises:
        ConfigError: no ``kind``, or an invalid field (named).
        UnknownNameError: no such scorer kind.
    """
    if isinstance(spec, BaseModel):
        return spec
    kind = spec.get("kind")
    if not isinstance(kind, str):
        raise ConfigError("a scorer needs a kind", hint=f"set kind: {' | '.join(scorer_kinds())}")
    config_type = _kind(kind).config_type
    try:
        return config_type.model_validate(dict(spec))
    except ValidationError as exc:
        problems = "; ".join(_problem(e, list(config_type.model_fields)) for e in exc.errors())
        raise ConfigError(
            f"invalid {kind} scorer: {problems}", hint="fix the field(s) named above"
        ) from None


def _problem(error: Any, fields: list[str]) -> str:
    """One validation problem as ``field: what is wrong`` (inputs not echoed: may be secret)."""
    name = ".".join(str(p) for p in error["loc"]) or "?"
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{name}: is not a field{hint}; fields: {', '.join(fields)}"
    if error["type"] == "missing":
        return f"{name}: is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{name}: {message}"


def make_scorer(spec: Mapping[str, Any] | BaseModel) -> Scorer:
    """The scorer of ``spec`` (see :func:`scorer_config`)."""
    config = scorer_config(spec)
    return _kind(str(dict(config)["kind"])).factory(config)
