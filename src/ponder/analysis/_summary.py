"""Per-run summary: coverage@k and the first-k share over a grid of k, from stored samples and verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ponder.analysis._passk import coverage_at_k, k_grid, solved_by_first_k
from ponder.analysis._tally import ProblemTally, tally
from ponder.records import Problem, Sample, Verdict


@dataclass(frozen=True)
class KPoint:
    k: int
    coverage: float
    """Coverage@k: mean unbiased pass@k over problems (NaN if some problem has < k samples)."""
    solved_by_first_k: float
    """Share of problems solved by one of their first k samples (NaN if some problem has < k)."""


@dataclass(frozen=True)
class RunSummaryStats:
    problems: int
    samples: int
    verified: int
    correct: int
    unparsed: int
    errors: int
    min_samples: int
    completion_tokens: int
    prompt_tokens: int
    points: list[KPoint]


def summarize(
    problems: Sequence[Problem | str], samples: Sequence[Sample], verdicts: Mapping[int, Verdict]
) -> RunSummaryStats:
    """Coverage@k and the first-k share for k = 1, 2, 4, ... up to the smallest per-problem count.

    Only verified samples count; a problem's n is its number of verified samples.
    """
    return summarize_tallies(tally(problems, samples, verdicts))


def summarize_tallies(tallies: Sequence[ProblemTally]) -> RunSummaryStats:
    """:func:`summarize` from per-problem tallies (see :func:`ponder.analysis.tally`)."""
    ns = [t.verified for t in tallies]
    cs = [t.correct for t in tallies]
    first = [t.first_correct_position for t in tallies]
    min_n = min(ns, default=0)
    points = [
        KPoint(
            k=k,
            coverage=coverage_at_k(ns, cs, k),
            solved_by_first_k=solved_by_first_k(first, ns, k),
        )
        for k in (k_grid(min_n) if min_n > 0 else [])
    ]
    return RunSummaryStats(
        problems=len(tallies),
        samples=sum(t.samples for t in tallies),
        verified=sum(ns),
        correct=sum(cs),
        unparsed=sum(t.unparsed for t in tallies),
        errors=sum(t.errors for t in tallies),
        min_samples=min_n,
        completion_tokens=sum(t.completion_tokens for t in tallies),
        prompt_tokens=sum(t.prompt_tokens for t in tallies),
        points=points,
    )
