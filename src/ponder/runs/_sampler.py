"""Draw the missing samples of a run: batched per problem, bounded concurrency, committed per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ponder.errors import ConfigError
from ponder.records import Problem, Sample, SamplingParams
from ponder.store import Store, request_seed, run_spec
from ponder.tasks import with_task_stop

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.tasks import Task

ProgressFn = Callable[[int, int], None]
"""Called after each committed request with (new samples, new completion tokens)."""


@dataclass(frozen=True)
class WorkUnit:
    """One request: ``len(indices)`` samples of one problem, decoded as one batch."""

    problem: Problem
    indices: tuple[int, ...]


@dataclass(frozen=True)
class SamplingReport:
    run_id: str
    problems: int
    requested: int
    """Samples the run should hold after this call (problems x n)."""
    already_present: int
    drawn: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float


def plan(
    problems: Sequence[Problem], n: int, existing: dict[str, set[int]], batch: int
) -> list[WorkUnit]:
    """Split each problem's missing sample indices into requests of at most ``batch`` samples."""
    units = []
    for p in problems:
        have = existing.get(p.id, set())
        missing = [i for i in range(n) if i not in have]
        for start in range(0, len(missing), batch):
            units.append(WorkUnit(p, tuple(missing[start : start + batch])))
    return units


def _split(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` integers that sum to it exactly."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


async def sample_run(
    store: Store,
    backend: Backend,
    task: Task,
    problems: Sequence[Problem],
    n: int,
    params: SamplingParams,
    *,
    batch: int | None = None,
    concurrency: int | None = None,
    on_progress: ProgressFn | None = None,
) -> SamplingReport:
    """Make the run (backend, task, params) hold ``n`` samples for each problem.

    The task's stop sequences (:func:`ponder.tasks.with_task_stop`) are added to ``params``.

    Samples already stored are kept; only missing indices are drawn. Each request's samples are committed in
    one transaction as soon as it returns, so a killed run loses at most the requests in flight.

    Args:
        batch: samples per request (default: ``min(n, backend.max_batch)``); all samples of a request share
            the prompt's evaluation.
        concurrency: requests in flight (default: enough to fill the backend's batch slots).
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}", hint="pass --n 1 or more")
    if not problems:
        raise ConfigError("no problems selected", hint="check --limit/--offset/--ids")
    batch = batch or min(n, backend.max_batch)
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    concurrency = concurrency or max(1, backend.max_batch // batch)

    params = with_task_stop(params, task)  # the task's stop sequences, part of the run's identity
    spec = run_spec(backend, task, params)
    run = store.ensure_run(spec)
    store.add_problems(run.id, problems)
    existing = store.existing_indices(run.id)
    already = sum(len({i for i in existing.get(p.id, set()) if i < n}) for p in problems)
    units = plan(problems, n, existing, batch)

    queue: asyncio.Queue[WorkUnit] = asyncio.Queue()
    for u in units:
        queue.put_nowait(u)
    totals = {"drawn": 0, "prompt": 0, "completion": 0, "requests": 0}

    async def worker() -> None:
        while True:
            try:
                unit = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            seed = request_seed(params.seed, unit.problem.id, unit.indices[0])
            gen = await backend.generate(
                task.prompt(unit.problem),
                len(unit.indices),
                params.model_copy(update={"seed": seed}),
            )
            shares = _split(gen.prompt_tokens, len(unit.indices))
            samples = [
                Sample(
                    run_id=run.id,
                    problem_id=unit.problem.id,
                    index=idx,
                    text=c.text,
                    finish_reason=c.finish_reason,
                    completion_tokens=c.completion_tokens,
                    prompt_tokens=share,
                    latency_s=c.latency_s,
                    seed=seed,
                    mean_logprob=c.mean_logprob,
                )
                for idx, c, share in zip(unit.indices, gen.completions, shares, strict=True)
            ]
            store.add_samples(samples)
            tokens = sum(c.completion_tokens for c in gen.completions)
            totals["drawn"] += len(samples)
            totals["prompt"] += gen.prompt_tokens
            totals["completion"] += tokens
            totals["requests"] += 1
            if on_progress is not None:
                on_progress(len(samples), tokens)

    start = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(units)))]
    try:
        await asyncio.gather(*workers)
    finally:
        # On the first failure stop the others; what they committed stays committed.
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return SamplingReport(
        run_id=run.id,
        problems=len(problems),
        requested=len(problems) * n,
        already_present=already,
        drawn=totals["drawn"],
        requests=totals["requests"],
        prompt_tokens=totals["prompt"],
        completion_tokens=totals["completion"],
        wall_s=time.perf_counter() - start,
    )
