"""A stop rule applied in rounds: where the checkpoints are, and what a sequence of answers decides.

Sampling draws a problem's samples in rounds of ``round_size`` (one n-request per round, so the
prompt is evaluated once per round) and asks the rule only at the end of a round: after
``b, 2b, 3b, ...`` samples and at the maximum. :meth:`Schedule.replay` is the single place that
turns answers into a decision; online sampling, resuming a killed run, the ``adaptive_vote``
component and simulations of stored runs all call it (or its vectorised equivalent), so they agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ponder.adaptive._rules import StopReason, StopRule
from ponder.adaptive._votes import leading_answer, votes_of
from ponder.errors import ConfigError

DEFAULT_ROUND = 4
"""Samples per round unless told otherwise."""


@dataclass(frozen=True)
class Decision:
    """What a rule says about one problem's answers so far.

    Attributes:
        stopped: the problem needs no more samples.
        samples: the samples the decision covers: where it stopped, else the last checkpoint reached.
        rounds: rounds completed at that point.
        reason: why it stopped (None while it goes on).
        answer: the leading answer at that point (earliest to reach the top count among ties).
        votes: that answer's votes.
        statistic: the rule's statistic at that point (NaN before the first checkpoint).
        next_checkpoint: samples the problem must hold before the rule is asked again (equal to
            ``samples`` once stopped).
    """

    stopped: bool
    samples: int
    rounds: int
    reason: StopReason | None
    answer: str | None
    votes: int
    statistic: float
    next_checkpoint: int


@dataclass(frozen=True)
class Schedule:
    """A stop rule, the round size and the maximum number of samples per problem.

    Raises:
        ConfigError: the maximum is below the rule's minimum, or a size is below 1.
    """

    rule: StopRule
    max_samples: int
    round_size: int = DEFAULT_ROUND

    def __post_init__(self) -> None:
        if self.round_size < 1:
            raise ConfigError(
                f"round size must be >= 1, got {self.round_size}", hint="use rounds of 1 or more"
            )
        if self.max_samples < self.rule.min_samples:
            raise ConfigError(
                f"the maximum of {self.max_samples} samples per problem is below the minimum of "
                f"stop rule {self.rule.name!r} ({self.rule.min_samples})",
                hint=f"raise --n to at least {self.rule.min_samples}, or lower the rule's "
                f"min_samples (--adaptive-param min_samples=K)",
            )

    def checkpoints(self) -> list[int]:
        """Sample counts at which the rule is asked: each round's end, then the maximum."""
        points = list(range(self.round_size, self.max_samples, self.round_size))
        return [*points, self.max_samples]

    def next_checkpoint(self, samples: int) -> int:
        """The first checkpoint above ``samples`` (the maximum once past the last round)."""
        for point in self.checkpoints():
            if point > samples:
                return point
        return self.max_samples

    def replay(self, answers: Sequence[str | None]) -> Decision:
        """Ask the rule at every checkpoint that ``answers`` (extracted answers of the samples with
        indices 0, 1, ... in order, None where a sample has no answer) reach, until it stops.

        Answers past the stopping point are ignored: a problem that a rerun finds decided earlier
        than the samples stored (drawn by fixed-N sampling, say) counts only what it needed.
        """
        rounds = 0
        reached = 0
        for point in self.checkpoints():
            if point > len(answers):
                break
            rounds += 1
            reached = point
            head = answers[:point]
            votes = votes_of(head)
            stat = float(self.rule.statistic(votes)[0])
            reason: StopReason | None = None
            if bool(self.rule.fires(votes)[0]):
                reason = "rule"
            elif point >= self.max_samples:
                reason = "max"
            if reason is not None:
                answer, count = leading_answer(head)
                return Decision(True, point, rounds, reason, answer, count, stat, point)
        answer, count = leading_answer(answers[:reached])
        stat = (
            float(self.rule.statistic(votes_of(answers[:reached]))[0]) if reached else float("nan")
        )
        return Decision(
            False, reached, rounds, None, answer, count, stat, self.next_checkpoint(reached)
        )
