"""Stop rules: when the vote over the samples drawn so far is decided enough to stop drawing.

Every rule is a pydantic model (its parameters, each with a default, validated) registered on the
shared plugin registry under the kind ``stop_rule``. A rule reduces a :class:`~ponder.adaptive.Votes`
to one number per row, its *statistic* (larger = more decided), and fires where the statistic
reaches its *threshold* parameter and at least ``min_samples`` samples were drawn. Keeping the
statistic apart from the threshold lets a simulation evaluate a rule once for a whole sweep of
thresholds. Plugins: the ``ponder.stop_rules`` entry-point group (a module that registers a rule
with :func:`register_stop_rule`, or a :class:`StopRule` subclass).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, TypeVar, cast

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ponder._registry import lookup, names, registering, set_adopter
from ponder.adaptive._posterior import beta_leader_prob, dirichlet_leader_prob
from ponder.adaptive._votes import TOP, Votes
from ponder.errors import ConfigError

Bound = float | NDArray[np.float64]
"""A lower bound of the thresholds a statistic is compared with: one for all rows, or one per row."""


class StopRule(BaseModel):
    """A stop rule: its parameters, its statistic and its threshold.

    Subclasses set :attr:`name` (the registered name), :attr:`threshold_field` (the parameter a
    threshold sweep varies) and :attr:`sweep` (ten thresholds from eager to cautious), and
    implement :meth:`statistic`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    threshold_field: ClassVar[str | None]
    sweep: ClassVar[tuple[float, ...]]
    summary: ClassVar[str]

    min_samples: int = Field(4, ge=1, description="Never stop before this many samples.")

    @property
    def threshold(self) -> float:
        """The value the statistic must reach for the rule to fire."""
        if self.threshold_field is None:
            return float("inf")
        return float(getattr(self, self.threshold_field))

    @abstractmethod
    def statistic(
        self, votes: Votes, *, lo: Bound = -np.inf, hi: float = np.inf
    ) -> NDArray[np.float64]:
        """How decided each row's vote is (larger = more).

        ``lo``/``hi``: the caller compares the result only with thresholds in ``[lo, hi]``, so a
        value below ``lo`` (or at least ``hi``) need not be exact; costly rules use it to skip work.
        ``lo`` may also be given per row (a simulation knows which thresholds each row has passed).
        """

    def fires(self, votes: Votes) -> NDArray[np.bool_]:
        """Whether the rule stops each row (its minimum reached and its threshold met)."""
        t = self.threshold
        return (votes.n >= self.min_samples) & (self.statistic(votes, lo=t, hi=t) >= t)

    def with_threshold(self, value: float) -> StopRule:
        """This rule with its threshold parameter set to ``value`` (validated)."""
        if self.threshold_field is None:
            raise ConfigError(f"stop rule {self.name!r} has no threshold to set")
        return type(self).model_validate({**self.params(), self.threshold_field: value})

    def params(self) -> dict[str, Any]:
        """The rule's parameters, every one (defaults included)."""
        return self.model_dump()

    def describe(self) -> str:
        """``name(param=value, ...)``: how traces, tables and the store name the rule."""
        inner = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({inner})"


R = TypeVar("R", bound=type[StopRule])


def _adopt(name: str, obj: object) -> type[StopRule]:
    if not (isinstance(obj, type) and issubclass(obj, StopRule)):
        raise ConfigError(f"stop rule plugin {name!r}: {obj!r} is not a StopRule subclass")
    if getattr(obj, "name", None) != name:
        raise ConfigError(
            f"stop rule {obj.__name__}: its name is {getattr(obj, 'name', None)!r}, "
            f"registered as {name!r}",
            hint=f"set `name: ClassVar[str] = {name!r}` on {obj.__name__}",
        )
    return obj


set_adopter("stop_rule", _adopt)


def register_stop_rule(name: str) -> Callable[[R], R]:
    """Register a :class:`StopRule` subclass under ``name`` (decorator).

    Raises:
        ConfigError: the class is not a StopRule or its ``name`` differs.
        DuplicateNameError: another class already has the name.
    """
    return registering("stop_rule", name)


def stop_rule_names() -> list[str]:
    """Names of all stop rules (built-in and plugins), sorted."""
    return names("stop_rule")


def stop_rule_class(name: str) -> type[StopRule]:
    """The stop rule class registered as ``name``.

    Raises:
        UnknownNameError: no such rule (the message lists the valid ones).
    """
    return cast(type[StopRule], lookup("stop_rule", name))


def make_stop_rule(name: str, params: Mapping[str, object] | None = None) -> StopRule:
    """The rule ``name`` with ``params`` (strings from a command line are converted).

    Raises:
        UnknownNameError: no rule is called ``name``.
        ConfigError: a parameter is unknown or invalid; the message names it and its valid range.
    """
    cls = stop_rule_class(name)
    try:
        return cls.model_validate(dict(params or {}))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "?"
            problems.append(f"{field}: {err['msg']}")
        valid = ", ".join(f"{k}={v}" for k, v in cls().params().items())
        raise ConfigError(
            f"stop rule {name!r}: {'; '.join(problems)}",
            hint=f"its parameters and defaults are {valid}",
        ) from None


@register_stop_rule("fixed")
class FixedN(StopRule):
    """Never stops early: every problem gets the maximum number of samples (plain sampling)."""

    name: ClassVar[str] = "fixed"
    threshold_field: ClassVar[str | None] = None
    sweep: ClassVar[tuple[float, ...]] = ()
    summary: ClassVar[str] = "draw the maximum (fixed N)"

    min_samples: int = Field(1, ge=1, description="Never stop before this many samples.")

    def statistic(
        self, votes: Votes, *, lo: Bound = -np.inf, hi: float = np.inf
    ) -> NDArray[np.float64]:
        return np.zeros(votes.rows, dtype=np.float64)


@register_stop_rule("margin")
class Margin(StopRule):
    """Stop when the leading answer has ``votes`` more votes than the runner-up."""

    name: ClassVar[str] = "margin"
    threshold_field: ClassVar[str | None] = "votes"
    sweep: ClassVar[tuple[float, ...]] = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12)
    summary: ClassVar[str] = "leader ahead of the runner-up by `votes` votes"

    votes: int = Field(4, ge=1, description="Lead over the runner-up, in votes.")

    def statistic(
        self, votes: Votes, *, lo: Bound = -np.inf, hi: float = np.inf
    ) -> NDArray[np.float64]:
        return (votes.leader - votes.runner_up).astype(np.float64)


@register_stop_rule("supermajority")
class Supermajority(StopRule):
    """Stop when the leading answer holds a ``share`` of all samples drawn (unanswered included)."""

    name: ClassVar[str] = "supermajority"
    threshold_field: ClassVar[str | None] = "share"
    sweep: ClassVar[tuple[float, ...]] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    summary: ClassVar[str] = "leader holds `share` of the samples drawn"

    share: float = Field(0.75, gt=0.0, le=1.0, description="Leader's share of the samples.")

    def statistic(
        self, votes: Votes, *, lo: Bound = -np.inf, hi: float = np.inf
    ) -> NDArray[np.float64]:
        return votes.leader / np.maximum(votes.n, 1)


@register_stop_rule("beta")
class BetaRule(StopRule):
    """Adaptive-Consistency's Beta rule: stop when ``P(p > 1/2) >= confidence`` for the leader's
    share ``p`` of the leader and runner-up votes, ``p ~ Beta(leader + 1, runner_up + 1)``."""

    name: ClassVar[str] = "beta"
    threshold_field: ClassVar[str | None] = "confidence"
    sweep: ClassVar[tuple[float, ...]] = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.999)
    summary: ClassVar[str] = "P(leader beats runner-up) under a Beta posterior >= `confidence`"

    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="Posterior probability to reach.")

    def statistic(
        self, votes: Votes, *, lo: Bound = -np.inf, hi: float = np.inf
    ) -> NDArray[np.float64]:
        return beta_leader_prob(votes.leader, votes.runner_up)


@register_stop_rule("dirichlet")
class DirichletRule(StopRule):
    """Stop when the posterior probability that the leading answer has the largest underlying
    probability reaches ``confidence``, under ``Dirichlet(counts + 1)`` over the ``classes``
    largest answer classes (Monte Carlo with ``draws`` draws, seeded per count vector by ``seed``,
    memoised: reproducible, and fast in replays)."""

    name: ClassVar[str] = "dirichlet"
    threshold_field: ClassVar[str | None] = "confidence"
    sweep: ClassVar[tuple[float, ...]] = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.999)
    summary: ClassVar[str] = "P(leader is the most likely answer) under a Dirichlet >= `confidence`"

    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="Posterior probability to reach.")
    classes: int = Field(TOP, ge=2, le=TOP, description="Largest answer classes in the posterior.")
    draws: int = Field(2000, ge=100, le=100_000, description="Monte Carlo draws per count vector.")
    seed: int = Field(0, ge=0, description="Seed of the Monte Carlo draws.")

    def statistic(
        self, votes: Votes, *, lo: Bound = -np.inf, hi: float = np.inf
    ) -> NDArray[np.float64]:
        return dirichlet_leader_prob(
            votes.top[:, : self.classes], draws=self.draws, seed=self.seed, lo=lo, hi=hi
        )


@register_stop_rule("window")
class Window(StopRule):
    """Early-stopping self-consistency's window: stop when the last ``size`` answers agree."""

    name: ClassVar[str] = "window"
    threshold_field: ClassVar[str | None] = "size"
    sweep: ClassVar[tuple[float, ...]] = (2, 3, 4, 5, 6, 7, 8, 10, 12, 16)
    summary: ClassVar[str] = "the last `size` answers are the same"

    size: int = Field(4, ge=1, description="Equal answers in a row.")

    def statistic(
        self, votes: Votes, *, lo: Bound = -np.inf, hi: float = np.inf
    ) -> NDArray[np.float64]:
        return votes.run.astype(np.float64)


StopReason = Literal["rule", "max", "budget", "hopeless"]
"""Why sampling of a problem stopped: its rule fired, it reached the maximum, the run's budget ran
out, or the budget allocator gave up on it (see :mod:`ponder.adaptive`)."""
