"""Per-run summary: coverage@k and pass@k over a grid of k, from stored samples and verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ponder.analysis._passk import coverage_at_k, k_grid, pass_at_k
from ponder.records import Sample, Verdict


@dataclass(frozen=True)
class KPoint:
    k: int
    coverage: float
    """Share of problems solved by one of their first k samples (NaN if some problem has < k)."""
    pass_at_k: float
    """Mean unbiased pass@k over problems (NaN if some problem has < k samples)."""


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
    problem_ids: Sequence[str], samples: Sequence[Sample], verdicts: Mapping[int, Verdict]
) -> RunSummaryStats:
    """Coverage@k and pass@k for k = 1, 2, 4, ... up to the smallest per-problem sample count.

    Only verified samples count; a problem's n is its number of verified samples.
    """
    n: dict[str, int] = dict.fromkeys(problem_ids, 0)
    c: dict[str, int] = dict.fromkeys(problem_ids, 0)
    first: dict[str, int | None] = dict.fromkeys(problem_ids)
    statuses = {"correct": 0, "unparsed": 0, "error": 0}
    for s in sorted(samples, key=lambda s: (s.problem_id, s.index)):
        v = verdicts.get(s.id or -1)
        if v is None or s.problem_id not in n:
            continue
        n[s.problem_id] += 1
        statuses[v.status] = statuses.get(v.status, 0) + 1
        if v.status == "correct":
            c[s.problem_id] += 1
            if first[s.problem_id] is None:
                first[s.problem_id] = n[s.problem_id] - 1
    ns = np.array([n[p] for p in problem_ids])
    cs = np.array([c[p] for p in problem_ids])
    min_n = int(ns.min()) if len(ns) else 0
    points = []
    if min_n > 0:
        for k in k_grid(min_n):
            pk = pass_at_k(ns, cs, k)
            points.append(
                KPoint(
                    k=k,
                    coverage=coverage_at_k([first[p] for p in problem_ids], list(ns), k),
                    pass_at_k=float(np.mean(pk)),
                )
            )
    return RunSummaryStats(
        problems=len(problem_ids),
        samples=len(samples),
        verified=int(ns.sum()),
        correct=int(cs.sum()),
        unparsed=statuses["unparsed"],
        errors=statuses["error"],
        min_samples=min_n,
        completion_tokens=sum(s.completion_tokens for s in samples),
        prompt_tokens=sum(s.prompt_tokens for s in samples),
        points=points,
    )
