"""System runs: a composed system answering a task's problems, stored and verified like a sampling run.

A system run is a run whose spec names the system: ``model`` is ``system:<name>@<hash>``, where the hash
covers the system's config (without its description), the seed, and the identity of every model its
components resolve to (so ``--model`` or a different backend is a different run). Each problem's answer
is its sample 0: the text of the system's answer, the query's summed prompt and completion tokens, and
its wall time as the latency. The system's trace is stored with it (``traces`` table), in the same
transaction, so a resumed run skips answered problems and never duplicates one.

The *baseline* of a system is an ordinary sampling run: one greedy sample (temperature 0) per problem
from the model of the system's first ``generate`` component, with that component's ``max_tokens`` and
``stop``, on the task's own prompt. It is the same run as ``ponder sample --n 1 --temperature 0`` with
those settings, so it is stored once and reused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ponder._aio import gather_all
from ponder.analysis import summarize_tallies, tally
from ponder.errors import ConfigError
from ponder.records import Problem, Sample, SamplingParams
from ponder.runs._claims import count_stored, fill_run, open_run
from ponder.runs._sampler import ProgressFn, SamplingReport, sample_run
from ponder.store import RunSpec, Store

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.systems import ModelRef, System, SystemResult
    from ponder.tasks import Task

SYSTEM_PREFIX = "system:"
"""How the ``model`` of a system run's spec starts."""


def is_system_spec(spec: RunSpec) -> bool:
    """Whether a run was made by a system (``ponder run``) rather than by sampling."""
    return spec.model.startswith(SYSTEM_PREFIX)


def _identity(target: object) -> str:
    from ponder.systems import ModelSpec

    if isinstance(target, ModelSpec):
        return target.identity_key
    return f"backend:{getattr(target, 'identity', '?')}"


def system_spec(system: System, task: Task, *, seed: int | None = None) -> RunSpec:
    """The spec (hence the run id) of ``system`` answering ``task``'s problems.

    Args:
        seed: The system seed used for every query (default: the config's).
    """
    seed = system.config.seed if seed is None else seed
    pool = system.pool  # resolves model refs exactly as the system's components do
    models: dict[str, str] = {}
    for layer in system.config.layers:
        for c in layer:
            for ref in c.model_refs():
                shown = ref if isinstance(ref, str | None) else ref.model_dump(mode="json")
                models[json.dumps(shown, sort_keys=True)] = _identity(pool.resolve(ref))
    from ponder.systems import RUN_IDENTITY

    config = system.config.model_dump(
        mode="json", exclude={"description"}, context={RUN_IDENTITY: True}
    )
    config["seed"] = seed
    canonical = json.dumps(
        {"config": config, "models": models}, sort_keys=True, separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return RunSpec(
        model=f"{SYSTEM_PREFIX}{system.name}@{digest}",
        task={**task.spec(), "verifier": task.verifier},
        params=SamplingParams(seed=seed),
    )


@dataclass(frozen=True)
class SystemRunReport:
    """What one call of :func:`system_run` did (usage of the queries it ran, not of stored ones)."""

    run_id: str
    problems: int
    already_present: int
    answered: int
    answered_elsewhere: int
    """Problems another process running the same system run answered while this call ran."""
    calls: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float


async def system_run(
    store: Store,
    system: System,
    task: Task,
    problems: Sequence[Problem],
    *,
    concurrency: int = 4,
    seed: int | None = None,
    on_answer: Callable[[SystemResult], None] | None = None,
    poll_s: float = 1.0,
) -> SystemRunReport:
    """Make the system run of ``system`` on ``task`` hold an answer for each of ``problems``.

    Problems already answered are skipped. Each query is ``task.prompt(problem)`` (stored with the
    problem as the run's prompt) with the problem's reference (for ``verify`` components); its
    answer and trace are committed together as soon as it finishes. The first failure stops the run
    (queries in flight are cancelled, committed answers stay): rerun the same command to resume.
    Several processes may fill the same system run at once: each claims a problem before querying
    it, and at the end waits for the problems others are answering (as :func:`sample_run` does).

    Raises:
        ConfigError: no problems, or ``concurrency`` < 1.
        ComponentError: a component failed (the message names it).
    """
    if not problems:
        raise ConfigError("no problems selected", hint="check --limit/--offset/--ids")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    spec = system_spec(system, task, seed=seed)
    run_id, query_of = open_run(store, spec, task, problems)
    already = count_stored(store, run_id, problems, 1)
    gate = asyncio.Semaphore(concurrency)
    totals = {"answered": 0, "calls": 0, "prompt": 0, "completion": 0}

    async def answer(owner: int, problem: Problem) -> None:
        async with gate:
            # Claimed only once it is its turn, so other processes can take the problems queued here.
            if not store.claim(run_id, owner, problem.id, [0]):
                return
            result = await system.arun(
                query_of[problem.id], reference=problem.reference, seed=spec.params.seed
            )
        top = result.trace.candidate(result.answer_id)
        stored = store.add_samples(
            [
                Sample(
                    run_id=run_id,
                    problem_id=problem.id,
                    index=0,
                    text=result.answer,
                    finish_reason=top.finish_reason if top is not None else "unknown",
                    completion_tokens=result.usage.completion_tokens,
                    prompt_tokens=result.usage.prompt_tokens,
                    latency_s=result.usage.wall_s,
                    seed=spec.params.seed,
                )
            ],
            [result.trace],
            owner=owner,
        )
        totals["answered"] += len(stored)
        totals["calls"] += result.usage.calls
        totals["prompt"] += result.usage.prompt_tokens
        totals["completion"] += result.usage.completion_tokens
        if on_answer is not None:
            on_answer(result)

    async def answer_all(owner: int, todo: Sequence[Problem]) -> None:
        # The first failure stops the other queries; what they committed stays committed.
        await gather_all(answer(owner, p) for p in todo)

    start = time.perf_counter()
    await fill_run(
        store,
        run_id,
        query_of,
        plan=lambda taken: [p for p in problems if 0 not in taken.get(p.id, set())],
        work=answer_all,
        wanted=lambda i: i == 0,
        poll_s=poll_s,
    )
    return SystemRunReport(
        run_id=run_id,
        problems=len(problems),
        already_present=already,
        answered=totals["answered"],
        answered_elsewhere=count_stored(store, run_id, problems, 1) - already - totals["answered"],
        calls=totals["calls"],
        prompt_tokens=totals["prompt"],
        completion_tokens=totals["completion"],
        wall_s=time.perf_counter() - start,
    )


# ----- the single-sample baseline -----------------------------------------------------------------


def baseline_settings(system: System) -> tuple[ModelRef | None, SamplingParams]:
    """The model and sampling params of a system's baseline (see the module docstring)."""
    from ponder.systems.components import GenerateConfig

    for layer in system.config.layers:
        for c in layer:
            if isinstance(c, GenerateConfig):
                member = c.members()[0]
                max_tokens = member.max_tokens or c.max_tokens
                return member.model, SamplingParams(
                    temperature=0.0, max_tokens=max_tokens, stop=tuple(c.stop)
                )
    return None, SamplingParams(temperature=0.0)


def baseline_backend(system: System) -> Backend:
    """The backend of the baseline: the system's own instance of that model (shared, not copied)."""
    ref, _ = baseline_settings(system)
    # The system's own instance: the baseline must not load a second copy of an embedded model.
    return system.pool.get(ref)


async def baseline_run(
    store: Store,
    system: System,
    task: Task,
    problems: Sequence[Problem],
    *,
    concurrency: int | None = None,
    on_progress: ProgressFn | None = None,
) -> SamplingReport:
    """Draw the baseline's one greedy sample per problem (only the missing ones)."""
    _, params = baseline_settings(system)
    return await sample_run(
        store,
        baseline_backend(system),
        task,
        problems,
        1,
        params,
        concurrency=concurrency,
        on_progress=on_progress,
    )


# ----- comparing runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentUsage:
    """One component's usage summed over the queries of a system run."""

    key: str
    queries: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    """Summed over queries (components of a layer overlap, so these do not add up to a query's)."""


@dataclass(frozen=True)
class RunStats:
    """Accuracy and cost of sample 0 of each problem of a run, over the given problems.

    For a system run a problem's calls and tokens are its query's, summed over components; for a
    sampling run they are those of the sample (one call). Latency is the query's (or the request's)
    wall time.
    """

    run_id: str
    model: str
    problems: int
    answered: int
    verified: int
    correct: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    latencies_s: list[float] = field(repr=False)
    components: list[ComponentUsage] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.problems if self.problems else float("nan")

    def per_problem(self, total: int) -> float:
        return total / self.answered if self.answered else float("nan")

    @property
    def latency_mean_s(self) -> float:
        return statistics.fmean(self.latencies_s) if self.latencies_s else float("nan")

    @property
    def latency_median_s(self) -> float:
        return statistics.median(self.latencies_s) if self.latencies_s else float("nan")

    def as_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if x != x else round(x, 6)

        return {
            "run": self.run_id,
            "model": self.model,
            "problems": self.problems,
            "answered": self.answered,
            "verified": self.verified,
            "correct": self.correct,
            "accuracy": num(self.accuracy),
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "calls_per_problem": num(self.per_problem(self.calls)),
            "tokens_per_problem": num(
                self.per_problem(self.prompt_tokens + self.completion_tokens)
            ),
            "prompt_tokens_per_problem": num(self.per_problem(self.prompt_tokens)),
            "completion_tokens_per_problem": num(self.per_problem(self.completion_tokens)),
            "latency_mean_s": num(self.latency_mean_s),
            "latency_median_s": num(self.latency_median_s),
            "components": {
                c.key: {
                    "queries": c.queries,
                    "calls": c.calls,
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                    "wall_s": round(c.wall_s, 6),
                }
                for c in self.components
            },
        }


def run_stats(store: Store, run_id: str, problem_ids: Sequence[str], verifier: str) -> RunStats:
    """Accuracy, calls, tokens and latency of sample 0 of each of ``problem_ids`` in a run.

    A problem without a correct verdict (unanswered, unverified, wrong) counts as not correct.
    """
    info = store.get_run(run_id)
    samples = [s for s in store.samples(run_id, problem_ids) if s.index == 0]
    totals = summarize_tallies(tally(problem_ids, samples, store.verdicts(run_id, verifier)))
    traces = {t.sample_id: t for t in store.trace_rows(run_id, problem_ids)}
    calls = sum(traces[s.id].calls if s.id in traces else 1 for s in samples if s.id is not None)
    return RunStats(
        run_id=run_id,
        model=info.spec.model,
        problems=len(problem_ids),
        answered=len(samples),
        verified=totals.verified,
        correct=totals.correct,
        calls=calls,
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        latencies_s=[s.latency_s for s in samples],
        components=component_usage(store, list(traces)) if traces else [],
    )


def component_usage(store: Store, sample_ids: Sequence[int]) -> list[ComponentUsage]:
    """Usage per component (by event key ``L<layer>.<index>:<label>``) summed over traces."""
    sums: dict[str, list[float]] = {}
    for sample_id in sample_ids:
        for key, u in store.trace(sample_id).usage_by_component.items():
            row = sums.setdefault(key, [0, 0, 0, 0, 0.0])
            row[0] += 1
            row[1] += u.calls
            row[2] += u.prompt_tokens
            row[3] += u.completion_tokens
            row[4] += u.wall_s
    return [
        ComponentUsage(key, int(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4]))
        for key, r in sums.items()
    ]
