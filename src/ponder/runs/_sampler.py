"""Draw the missing samples of a run: batched per problem, bounded concurrency, committed per request,
claimed in the store so that several processes can sample one run together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ponder._aio import gather_all
from ponder.errors import ConfigError
from ponder.records import Generation, Problem, Prompt, Sample, SamplingParams
from ponder.runs._claims import count_stored, fill_run, open_run
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
    """Samples this call drew and stored."""
    drawn_elsewhere: int
    """Samples another process sampling the same run stored while this call ran."""
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


async def draw_request(
    backend: Backend,
    prompt: Prompt,
    run_id: str,
    problem_id: str,
    indices: Sequence[int],
    params: SamplingParams,
) -> tuple[list[Sample], Generation]:
    """One n-request for sample ``indices`` of a problem, as every sampler draws it: the seed derived
    from the run's seed, the problem and the first index, the prompt tokens shared out exactly."""
    seed = request_seed(params.seed, problem_id, indices[0])
    gen = await backend.generate(prompt, len(indices), params.model_copy(update={"seed": seed}))
    shares = _split(gen.prompt_tokens, len(indices))
    samples = [
        Sample(
            run_id=run_id,
            problem_id=problem_id,
            index=idx,
            text=c.text,
            finish_reason=c.finish_reason,
            completion_tokens=c.completion_tokens,
            prompt_tokens=share,
            latency_s=c.latency_s,
            seed=seed,
            mean_logprob=c.mean_logprob,
            node=gen.node,
        )
        for idx, c, share in zip(indices, gen.completions, shares, strict=True)
    ]
    return samples, gen


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
    poll_s: float = 1.0,
) -> SamplingReport:
    """Make the run (backend, task, params) hold ``n`` samples for each problem.

    The task's stop sequences (:func:`ponder.tasks.with_task_stop`) are added to ``params``.

    Samples already stored are kept; only missing indices are drawn. Each request's samples are committed in
    one transaction as soon as it returns, so a killed run loses at most the requests in flight. Each
    problem's prompt is rendered once, stored with the problem, and sent as stored.

    Several processes may sample the same run at once (the same command started twice, or on several
    machines sharing the file): before each request a process claims its sample indices in the store, so no
    index is drawn twice. Indices that another live process is drawing are skipped; once nothing else is left
    this call waits for them (polling every ``poll_s`` seconds, logging who it waits for) and draws them itself
    if that process dies. The claims of a process killed outright stop counting as soon as it is seen dead
    (see :mod:`ponder.store`).

    Args:
        batch: samples per request (default: ``min(n, backend.max_batch)``); all samples of a request share
            the prompt's evaluation.
        concurrency: requests in flight (default: enough to fill the backend's batch slots).
        poll_s: how often to look again while waiting for another process's samples.
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}", hint="pass --n 1 or more")
    if not problems:
        raise ConfigError("no problems selected", hint="check --limit/--offset/--ids")
    batch = batch or min(n, backend.max_batch)
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    concurrency = concurrency or max(1, backend.max_batch // batch) * backend.request_slots

    params = with_task_stop(params, task)  # the task's stop sequences, part of the run's identity
    run_id, prompt_of = open_run(store, run_spec(backend, task, params), task, problems)
    already = count_stored(store, run_id, problems, n)
    totals = {"drawn": 0, "prompt": 0, "completion": 0, "requests": 0}

    async def worker(owner: int, queue: asyncio.Queue[WorkUnit]) -> None:
        while True:
            try:
                unit = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            # Another process may have claimed or stored some of these indices since the plan.
            indices = tuple(store.claim(run_id, owner, unit.problem.id, unit.indices))
            if not indices:
                continue
            samples, gen = await draw_request(
                backend, prompt_of[unit.problem.id], run_id, unit.problem.id, indices, params
            )
            stored = len(store.add_samples(samples, owner=owner))
            tokens = sum(c.completion_tokens for c in gen.completions)
            totals["drawn"] += stored
            totals["prompt"] += gen.prompt_tokens
            totals["completion"] += tokens
            totals["requests"] += 1
            if on_progress is not None:
                on_progress(stored, tokens)

    async def draw(owner: int, units: Sequence[WorkUnit]) -> None:
        queue: asyncio.Queue[WorkUnit] = asyncio.Queue()
        for u in units:
            queue.put_nowait(u)
        # The first failure stops the other workers; what they committed stays committed.
        await gather_all(worker(owner, queue) for _ in range(min(concurrency, len(units))))

    start = time.perf_counter()
    await fill_run(
        store,
        run_id,
        prompt_of,
        plan=lambda taken: plan(problems, n, taken, batch),
        work=draw,
        wanted=lambda i: i < n,
        poll_s=poll_s,
    )
    return SamplingReport(
        run_id=run_id,
        problems=len(problems),
        requested=len(problems) * n,
        already_present=already,
        drawn=totals["drawn"],
        drawn_elsewhere=count_stored(store, run_id, problems, n) - already - totals["drawn"],
        requests=totals["requests"],
        prompt_tokens=totals["prompt"],
        completion_tokens=totals["completion"],
        wall_s=time.perf_counter() - start,
    )
