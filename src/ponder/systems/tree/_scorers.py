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
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from ponder._configured import adopter, build, config_of, register_configured
from ponder._registry import names, set_adopter
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


def register_scorer(
    kind: str, config_type: type[ConfigT]
) -> Callable[[Callable[[ConfigT], Scorer]], Callable[[ConfigT], Scorer]]:
    """Register a scorer factory under ``kind`` (decorator); ``config_type`` is its pydantic
    config, with a field ``kind: Literal[kind]``."""

    def deco(factory: Callable[[ConfigT], Scorer]) -> Callable[[ConfigT], Scorer]:
        register_configured("scorer", "scorer", kind, config_type, factory)
        return factory

    return deco


set_adopter("scorer", adopter("scorer", "ponder.systems.tree.register_scorer"))


def scorer_kinds() -> list[str]:
    """Names of all scorer kinds: built-in and installed plugins."""
    return names("scorer")


def scorer_config(spec: Mapping[str, Any] | BaseModel) -> BaseModel:
    """The validated config of a scorer spec (a mapping with ``kind``, or a config).

    Raises:
        ConfigError: no ``kind``, or an invalid field (named).
        UnknownNameError: no such scorer kind.
    """
    return config_of("scorer", "scorer", spec)


def make_scorer(spec: Mapping[str, Any] | BaseModel) -> Scorer:
    """The scorer of ``spec`` (see :func:`scorer_config`)."""
    scorer: Scorer = build("scorer", "scorer", spec)
    return scorer


def config_name(kind: str, config: BaseModel) -> str:
    """A scorer's name from its kind and config: what changes its scores changes its name."""
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:10]
    return f"{kind}:{digest}"
