"""Honest selection: the Pareto front of the dev trials, and the final evaluation on the test split
of the best systems of the front and of two baselines, with bootstrap intervals on accuracy.

Every test evaluation is an ordinary stored system (or sampling) run, verified as ``ponder run``
verifies (:func:`ponder.runs.verify_run` with the task's verifier) and counted by
:func:`ponder.runs.run_stats`, so ``ponder show/report/trace`` work on it. A system run is named by
its system and task, not by its problems: the test run of a trial is the trial's dev run with the
test problems added, as ``ponder run CONFIG --task T --ids ...`` would make it. Results are always
computed over the problems asked for, so dev and test numbers never mix; check that the search
never touched a test problem (:func:`check_isolation`) *before* the test evaluation adds them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ponder.analysis import tally
from ponder.errors import ConfigError, RunError
from ponder.records import Problem
from ponder.runs import (
    RunStats,
    baseline_run,
    run_stats,
    system_run,
    verify_run,
)
from ponder.search._results import TestKind, TestResult, TrialResult
from ponder.store import Store
from ponder.systems import System, SystemConfig
from ponder.systems.components import GenerateConfig
from ponder.tasks import Task
from ponder.verify import Verifier, make_verifier

SystemEntry = tuple[str, int | None, System]
"""``(label, trial number, system)`` of a system to evaluate on test."""


# ----- the front ------------------------------------------------------------------------------------


def _point(t: TrialResult) -> tuple[float, float] | None:
    if t.state != "complete" or t.accuracy is None or t.tokens_per_query is None:
        return None
    return t.accuracy, t.tokens_per_query


def front(trials: Sequence[TrialResult]) -> list[int]:
    """Trial numbers of the Pareto front of the complete trials: accuracy up, tokens per query down.

    A trial is on the front unless another complete trial is at least as accurate and at most as
    costly, and strictly better in one of the two; different systems at the same point are all
    kept, a system proposed again (the same config: the same run) only once, as its first trial.
    Pruned, infeasible, failed and running trials are never on it. Ordered by accuracy (highest
    first), then tokens per query (fewest first), then trial number.
    """
    points: dict[int, tuple[float, float]] = {}
    seen: set[str] = set()
    for t in sorted(trials, key=lambda t: t.number):
        p = _point(t)
        config = json.dumps(t.config, sort_keys=True)
        if p is None or config in seen:
            continue
        seen.add(config)
        points[t.number] = p

    def dominated(a: tuple[float, float]) -> bool:
        return any(
            b[0] >= a[0] and b[1] <= a[1] and (b[0] > a[0] or b[1] < a[1]) for b in points.values()
        )

    kept = [n for n, p in points.items() if not dominated(p)]
    return sorted(kept, key=lambda n: (-points[n][0], points[n][1], n))


def top_of_front(trials: Sequence[TrialResult], k: int = 3) -> list[int]:
    """The ``k`` trials of the front to evaluate on test, best first: highest dev accuracy, ties
    broken by fewer tokens per query. The first is *the* best system (the baselines use its model).

    Raises:
        ConfigError: ``k`` < 1.
    """
    if k < 1:
        raise ConfigError(f"the number of systems to test must be >= 1, got {k}")
    return front(trials)[:k]


# ----- intervals ------------------------------------------------------------------------------------


def bootstrap_ci(
    correct: Sequence[bool],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile-bootstrap interval on the share of ``correct`` (one flag per problem).

    Problems are resampled with replacement ``resamples`` times from a generator seeded by
    ``seed`` (the same flags and seed give the same interval); the interval runs between the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled accuracies.

    Raises:
        ConfigError: no flags, ``resamples`` < 1, or ``level`` outside (0, 1).
    """
    if len(correct) == 0:
        raise ConfigError("a bootstrap interval needs at least one problem")
    if resamples < 1:
        raise ConfigError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ConfigError(f"level must be between 0 and 1, got {level}")
    flags = np.asarray(correct, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(flags), size=(resamples, len(flags)))
    means = flags[picks].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# ----- dev/test isolation ---------------------------------------------------------------------------


def check_isolation(store: Store, run_ids: Sequence[str], test_ids: Sequence[str]) -> None:
    """Refuse if any run of ``run_ids`` (the trials' dev runs) holds an answer to a test problem.

    Call it after the search and before :func:`evaluate_on_test` (which adds the test problems to
    the trials' runs).

    Raises:
        RunError: naming each run and the test problems it answered.
    """
    test = set(test_ids)
    leaks = {}
    for run_id in dict.fromkeys(run_ids):
        seen = sorted({s.problem_id for s in store.samples(run_id)} & test)
        if seen:
            leaks[run_id] = seen
    if leaks:
        named = "; ".join(
            f"run {run_id}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}"
            for run_id, ids in leaks.items()
        )
        raise RunError(
            f"the search answered test problems, so the test split is not held out: {named}",
            hint="start a new search with another --split-seed, or a store without these runs",
        )


# ----- the test evaluation ----------------------------------------------------------------------------


def _first_generate(config: SystemConfig) -> GenerateConfig:
    for layer in config.layers:
        for c in layer:
            if isinstance(c, GenerateConfig):
                return c
    raise ConfigError(
        f"system {config.name!r} has no generate component, so it has no vote baseline",
        hint="evaluate a system whose first layer generates",
    )


def vote_samples(target_tokens: float, prompt_tokens: float, completion_tokens: float) -> int:
    """N for the sample-N vote baseline at ``target_tokens`` per query.

    An estimate from the greedy sample's mean prompt and completion tokens per query: ``generate
    n=N`` draws its N samples in one request, so the prompt is counted once and each sample adds
    about one greedy completion: ``N = max(1, round((target - prompt) / completion))``. The vote's
    actual tokens are measured and reported, not assumed.
    """
    if completion_tokens <= 0:
        return 1
    return max(1, round((target_tokens - prompt_tokens) / completion_tokens))


def vote_config(config: SystemConfig, n: int) -> dict[str, Any]:
    """The sample-``n`` vote baseline of a system: ``generate n`` with the model, temperature,
    max_tokens, stop and token truncation of the system's first generate component (its first
    member, for an ensemble), then ``vote``; the system's extractor and seed."""
    gen = _first_generate(config)
    member = gen.members()[0]
    model = member.model if member.model is not None else config.model
    generate: dict[str, Any] = {
        "type": "generate",
        "n": n,
        "temperature": member.temperature if member.temperature is not None else gen.temperature,
        "max_tokens": member.max_tokens or gen.max_tokens,
        "top_p": gen.top_p,
    }
    if gen.stop:
        generate["stop"] = list(gen.stop)
    if gen.top_k_tokens:
        generate["top_k_tokens"] = gen.top_k_tokens
    if gen.min_p:
        generate["min_p"] = gen.min_p
    out: dict[str, Any] = {
        "name": f"vote-{n}",
        "description": f"sample-{n} vote baseline of {config.name}",
        "layers": [generate, {"type": "vote"}],
        "extractor": config.extractor,
        "seed": config.seed,
    }
    if model is not None:
        out["model"] = model if isinstance(model, str) else model.model_dump(mode="json")
    return out


def _flags(store: Store, run_id: str, ids: Sequence[str], verifier: str) -> list[bool]:
    """Per problem: whether its sample 0 is verified correct (the rule of ``run_stats``)."""
    samples = [s for s in store.samples(run_id, ids) if s.index == 0]
    return [t.correct > 0 for t in tally(ids, samples, store.verdicts(run_id, verifier))]


def _row(
    store: Store,
    run_id: str,
    ids: Sequence[str],
    verifier: Verifier,
    *,
    label: str,
    kind: TestKind,
    trial: int | None,
    resamples: int,
    seed: int,
) -> tuple[TestResult, RunStats]:
    verify_run(store, run_id, verifier)
    stats = run_stats(store, run_id, ids, verifier.name)
    if stats.answered < len(ids):
        raise RunError(
            f"{label}: run {run_id} answered {stats.answered} of {len(ids)} test problems",
            hint="rerun the same search to resume the test evaluation",
        )
    flags = _flags(store, run_id, ids, verifier.name)
    if sum(flags) != stats.correct:  # both read sample 0's verdict; a mismatch is a bug
        raise AssertionError((sum(flags), stats.correct))
    result = TestResult(
        label=label,
        kind=kind,
        trial=trial,
        run_id=run_id,
        problems=len(ids),
        correct=stats.correct,
        accuracy=stats.accuracy,
        ci=bootstrap_ci(flags, resamples=resamples, seed=seed),
        tokens_per_query=stats.per_problem(stats.prompt_tokens + stats.completion_tokens),
        calls_per_query=stats.per_problem(stats.calls),
    )
    return result, stats


def _vote_system(best: System, config: Mapping[str, Any]) -> System:
    # The best system's own backend instance: an embedded model must not be loaded twice.
    member = _first_generate(best.config).members()[0]
    return System.from_dict(config, default_backend=best.pool.get(member.model))


async def evaluate_on_test(
    store: Store,
    task: Task,
    test_problems: Sequence[Problem],
    systems: Sequence[SystemEntry],
    *,
    baselines: bool = True,
    verifier: Verifier | None = None,
    concurrency: int = 4,
    seed: int | None = None,
    build_vote: Callable[[Mapping[str, Any]], System] | None = None,
    resamples: int = 2000,
    ci_seed: int = 0,
    on_row: Callable[[TestResult], None] | None = None,
) -> list[TestResult]:
    """Evaluate ``systems`` (the best first) and the baselines on the test problems.

    Each system answers every test problem through :func:`ponder.runs.system_run` (an ordinary
    stored system run; problems already answered are reused), is verified with the task's
    verifier and counted by :func:`ponder.runs.run_stats`. With ``baselines``, on the same problems:

    * ``greedy``: one greedy sample per problem from the model of the best system's first
      generate component (:func:`ponder.runs.baseline_run`: what ``ponder run`` compares against);
    * ``vote@N``: ``generate n=N`` + ``vote`` with that component's model, temperature and
      max_tokens (:func:`vote_config`), N chosen by :func:`vote_samples` so that its mean tokens
      per query match the best system's test tokens per query, estimated from the greedy run's
      tokens; when the vote's measured tokens miss that by more than 25% (sampled answers are
      often longer than the greedy one), N is corrected once from the vote's own tokens per
      sample and the vote rerun (its stored samples are reused). Its actual tokens are reported.

    Args:
        systems: ``(label, trial number, system)``, the best system first.
        baselines: Also evaluate the two baselines.
        verifier: The task's verifier (default: a new ``make_verifier(task.verifier)``, closed
            at the end).
        concurrency: Queries (and baseline requests) in flight.
        seed: The system seed of every system run (default: each config's).
        build_vote: Builds the vote baseline's system from its config (default: on the best
            system's own backend of that model).
        resamples, ci_seed: Of each row's :func:`bootstrap_ci`.
        on_row: Called with each row as soon as it is ready (for a live table).

    Returns:
        One row per system, in the order given, then ``greedy`` and ``vote@N``.

    Raises:
        ConfigError: no test problems or no systems.
        RunError: a run did not answer every test problem.
    """
    if not test_problems:
        raise ConfigError("no test problems", hint="pass --test N with N >= 1")
    if not systems:
        raise ConfigError("no system to evaluate on test (the front is empty)")
    own = verifier is None
    check = make_verifier(task.verifier) if verifier is None else verifier
    ids = [p.id for p in test_problems]
    rows: list[TestResult] = []

    def add(row: TestResult) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    async def vote_row(n: int) -> TestResult:
        config = vote_config(systems[0][2].config, n)
        vote = build_vote(config) if build_vote is not None else _vote_system(systems[0][2], config)
        try:
            report = await system_run(
                store, vote, task, test_problems, concurrency=concurrency, seed=seed
            )
        finally:
            await vote.aclose()
        row, _ = _row(
            store,
            report.run_id,
            ids,
            check,
            label=f"vote@{n}",
            kind="vote",
            trial=None,
            resamples=resamples,
            seed=ci_seed,
        )
        return row

    try:
        for label, number, system in systems:
            report = await system_run(
                store, system, task, test_problems, concurrency=concurrency, seed=seed
            )
            row, _ = _row(
                store,
                report.run_id,
                ids,
                check,
                label=label,
                kind="system",
                trial=number,
                resamples=resamples,
                seed=ci_seed,
            )
            add(row)
        if not baselines:
            return rows
        best = systems[0][2]
        base = await baseline_run(store, best, task, test_problems, concurrency=concurrency)
        greedy, stats = _row(
            store,
            base.run_id,
            ids,
            check,
            label="greedy",
            kind="greedy",
            trial=None,
            resamples=resamples,
            seed=ci_seed,
        )
        add(greedy)
        target = rows[0].tokens_per_query
        n = vote_samples(
            target,
            stats.per_problem(stats.prompt_tokens),
            stats.per_problem(stats.completion_tokens),
        )
        row = await vote_row(n)
        # Sampled answers are often longer than the greedy one the estimate used: correct N once
        # from the vote's own measured tokens (its samples are reused, so this costs the difference).
        prompt = stats.per_problem(stats.prompt_tokens)
        per_sample = (row.tokens_per_query - prompt) / n
        if per_sample > 0 and abs(row.tokens_per_query - target) > 0.25 * target:
            corrected = max(1, round((target - prompt) / per_sample))
            if corrected != n:
                n, row = corrected, await vote_row(corrected)
        add(row)
        return rows
    finally:
        if own:
            check.close()
