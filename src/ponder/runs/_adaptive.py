"""Adaptive sampling: draw each problem's samples in rounds until its stop rule fires.

Per problem, a round is one n-request for the sample indices still missing below the next
checkpoint of the :class:`~ponder.adaptive.Schedule` (indices continue the run's own, seeds are
derived by :func:`~ponder.store.request_seed` as the fixed sampler derives them). Each round's
samples are stored, verified with the task's verifier and their verdicts stored (as ``ponder
verify`` stores them, so nothing is verified twice); the extracted answers (``Verdict.extracted``,
what voting and the simulation of stored runs read) go to :meth:`Schedule.replay`, which decides
whether the problem stops. The rule sees only those answers: never a verdict's status, never the
reference. Where and why each problem stopped is stored (:meth:`ponder.store.Store.add_stops`).

Adaptive sampling fills the same run as fixed-N sampling with the same spec: the rule is not part
of the run's identity. A rerun first replays the rule over the stored samples (verifying any
without a verdict), then draws only what is still needed: a killed run loses and duplicates
nothing, and a fixed-N run extended adaptively draws nothing for problems its samples decide.
Processes claim sample indices before drawing them, as the fixed sampler does, so several
processes may fill one run together.

Budgets (``--budget``): a whole run may be given ``N samples`` or ``N tokens`` (completion tokens).
What counts against it is what the problems' decisions cover: samples ``0 .. samples - 1`` of every
problem, whichever command drew them; stored samples past a problem's stop do not count.

1. Every problem gets its first round (an error names the minimum budget when that does not fit).
2. Then rounds go, one at a time, to the least decided open problem: the lowest
   ``beta_leader_prob(leader, runner_up)``, the posterior probability that its leading answer beats
   the runner-up (among equals, the one with fewer samples, then problem order).
3. A problem gets no more rounds once its rule fires, it reaches the maximum, or it is *hopeless*:
   at a round's end from the second on, its leading answer holds less than a quarter of its
   samples (with rounds of 4: at most 1 of 8, 2 of 12, 3 of 16); it stops with reason ``hopeless``.
4. A round is scheduled only if the budget left (less what rounds in flight may still spend)
   covers it: its samples, or with a token budget its samples times ``max_tokens``. Once the least
   decided problem's round does not fit, sampling ends and the open problems stop with reason
   ``budget``.

Every choice is a function of the stored samples, so a resumed run continues the same allocation;
with ``concurrency`` 1 it is the sequential allocation exactly (with more, the next pick skips
problems whose round is in flight). Without a budget no problem is ever hopeless.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.adaptive import Decision, Schedule, answer_key, beta_leader_prob, votes_of
from ponder.analysis import vote_correct
from ponder.errors import ConfigError
from ponder.records import Problem, Sample, SamplingParams, Verdict
from ponder.runs._claims import fill_run, open_run
from ponder.runs._sampler import ProgressFn, draw_request
from ponder.runs._verifying import judge
from ponder.store import AdaptiveStop, Store, run_spec
from ponder.tasks import continuation_markers, with_task_stop

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.tasks import Task
    from ponder.verify import Verifier

BudgetUnit = Literal["samples", "tokens"]

_BUDGET = re.compile(r"^\s*(\d[\d_,]*)\s*(samples?|tokens?)\s*$", re.IGNORECASE)
BUDGET_FORMS = "a whole number followed by samples or tokens, e.g. 2000samples or 300000tokens"


class Budget(BaseModel):
    """What a whole adaptive run may spend: ``amount`` samples, or completion tokens."""

    model_config = ConfigDict(frozen=True)

    amount: int = Field(ge=1)
    unit: BudgetUnit

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def parse_budget(text: str) -> Budget:
    """``2000samples`` or ``300000tokens`` (also ``2000 samples``, ``2_000samples``, singular).

    Raises:
        ConfigError: anything else; the message names the accepted forms.
    """
    match = _BUDGET.match(text)
    amount = int(re.sub(r"[_,]", "", match.group(1))) if match else 0
    if match is None or amount < 1:
        raise ConfigError(f"invalid --budget {text!r}", hint=f"give {BUDGET_FORMS}")
    unit: BudgetUnit = "samples" if match.group(2).lower().startswith("sample") else "tokens"
    return Budget(amount=amount, unit=unit)


def schedule_key(schedule: Schedule) -> str:
    """How the store names a schedule: the rule with its parameters, the round size, the maximum."""
    return f"{schedule.rule.describe()} round={schedule.round_size} max={schedule.max_samples}"


@dataclass(frozen=True)
class AdaptiveReport:
    """What :func:`sample_adaptive` did, and where each problem stopped."""

    run_id: str
    rule: str
    """The schedule, as the store names it (:func:`schedule_key`)."""
    budget: str | None
    problems: int
    already_present: int
    """Samples the problems held (below the maximum) before this call."""
    drawn: int
    """Samples this call drew and stored."""
    requests: int
    prompt_tokens: int
    completion_tokens: int
    """Completion tokens of the samples this call drew."""
    wall_s: float
    stops: list[AdaptiveStop]
    vote_correct: dict[str, bool]
    """Problem id -> whether the vote at its stop is correct (a sample voting for the leading
    answer has a correct verdict)."""

    def reasons(self) -> dict[str, int]:
        """How many problems stopped for each reason."""
        out: dict[str, int] = {}
        for s in self.stops:
            out[s.reason] = out.get(s.reason, 0) + 1
        return out

    @property
    def mean_samples(self) -> float:
        return sum(s.samples for s in self.stops) / len(self.stops) if self.stops else math.nan

    @property
    def used_tokens(self) -> int:
        """Completion tokens of the samples the stops cover."""
        return sum(s.completion_tokens for s in self.stops)

    @property
    def vote_accuracy(self) -> float:
        values = list(self.vote_correct.values())
        return sum(values) / len(values) if values else math.nan


@dataclass
class _State:
    """One problem: its verified samples (index -> answer, tokens, correct) and its decision."""

    problem: Problem
    position: int
    answers: dict[int, str | None] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    correct: dict[int, bool] = field(default_factory=dict)
    decision: Decision | None = None
    spent: int = 0
    """What the decision covers, in budget units (samples, or completion tokens)."""
    priority: float = 0.5
    """How decided its vote is at the decision: ``P(leader beats runner-up)``, Beta posterior."""
    blocked: bool = False
    """Indices it needs are being drawn by another process: wait for them."""

    def prefix(self) -> list[str | None]:
        """Answers of samples 0, 1, ... up to the first index not stored (and verified)."""
        out: list[str | None] = []
        while len(out) in self.answers:
            out.append(self.answers[len(out)])
        return out

    def add(self, index: int, tokens: int, verdict: Verdict) -> None:
        self.answers[index] = verdict.extracted
        self.tokens[index] = tokens
        self.correct[index] = verdict.status == "correct"

    def used_tokens(self, samples: int) -> int:
        return sum(self.tokens[i] for i in range(samples))


HOPELESS_SHARE = 0.25
"""A problem under a budget is hopeless once, after two rounds or more, its leading answer holds
less than this share of the samples drawn."""


def _decide(schedule: Schedule, answers: list[str | None], hopeless: bool) -> Decision:
    """:meth:`Schedule.replay`, and with ``hopeless`` the budget allocator's give-up: at a
    checkpoint from the second on where the rule has not stopped the problem, its leading answer
    holds less than :data:`HOPELESS_SHARE` of the samples (with rounds of 4: at most 1 of 8, 2 of
    12, 3 of 16, ...)."""
    decision = schedule.replay(answers)
    points = schedule.checkpoints()[1:]
    if not hopeless or not points:
        return decision
    leaders = _leader_counts(answers, points)
    for point, leader in zip(points, leaders, strict=False):
        if decision.samples < point or (decision.stopped and decision.samples == point):
            break
        if leader < HOPELESS_SHARE * point:
            early = schedule.replay(answers[:point])
            return replace(early, stopped=True, reason="hopeless", next_checkpoint=point)
    return decision


def _leader_counts(answers: list[str | None], points: Sequence[int]) -> list[int]:
    """The leading answer's votes after each of ``points`` samples (those ``answers`` reach)."""
    counts: dict[str, int] = {}
    best = 0
    out = []
    todo = iter(points)
    point = next(todo, None)
    for i, a in enumerate(answers, start=1):
        key = answer_key(a)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
            best = max(best, counts[key])
        if i == point:
            out.append(best)
            point = next(todo, None)
    return out


@dataclass
class _Plan:
    """The run's problems and what is in flight: which round to draw next, within the budget."""

    schedule: Schedule
    states: list[_State]
    budget: Budget | None
    max_tokens: int
    in_flight: dict[str, int] = field(default_factory=dict)
    """Problem id -> what its round in flight may still spend (budget units)."""

    def decide(self, state: _State) -> Decision:
        """Replay the problem's stored answers; keep what the allocator reads of the result."""
        answers = state.prefix()
        decision = _decide(self.schedule, answers, self.budget is not None)
        state.decision = decision
        state.spent = state.used_tokens(decision.samples) if self.tokens else decision.samples
        votes = votes_of(answers[: decision.samples])
        state.priority = float(beta_leader_prob(votes.leader, votes.runner_up)[0])
        return decision

    @property
    def tokens(self) -> bool:
        return self.budget is not None and self.budget.unit == "tokens"

    def spent(self) -> int:
        """What the decisions cover, in budget units."""
        return sum(s.spent for s in self.states)

    def _cost(self, state: _State, start: int, end: int) -> int:
        """What samples ``start .. end - 1`` of a problem may spend at most, in budget units:
        stored ones what they spent, missing ones ``max_tokens`` each (with a token budget)."""
        if not self.tokens:
            return end - start
        return sum(state.tokens.get(i, self.max_tokens) for i in range(start, end))

    def round_cost(self, state: _State) -> int:
        """What the next round may spend at most, in budget units."""
        d = state.decision
        assert d is not None
        return self._cost(state, d.samples, d.next_checkpoint)

    def open(self) -> list[_State]:
        return [
            s
            for s in self.states
            if s.decision is not None
            and not s.decision.stopped
            and not s.blocked
            and s.problem.id not in self.in_flight
        ]

    def minimum(self) -> int:
        """The budget that the first round of every problem needs."""
        first = self.schedule.checkpoints()[0]
        return sum(self._cost(s, 0, first) for s in self.states)

    def pick(self) -> _State | None:
        """The problem whose round to draw next (None: nothing now)."""
        candidates = self.open()
        if not candidates:
            return None
        if self.budget is None:
            return candidates[0]
        first = self.schedule.checkpoints()[0]
        fresh = [s for s in candidates if s.decision is not None and s.decision.samples < first]
        # The first round of every problem comes first; then the least decided problem's.
        chosen = fresh[0] if fresh else min(candidates, key=_order)
        left = self.budget.amount - self.spent() - sum(self.in_flight.values())
        return chosen if self.round_cost(chosen) <= left else None


def _order(state: _State) -> tuple[float, int, int]:
    """Least decided first; among equals, fewer samples first, then problem order."""
    assert state.decision is not None
    return state.priority, state.decision.samples, state.position


async def sample_adaptive(
    store: Store,
    backend: Backend,
    task: Task,
    problems: Sequence[Problem],
    schedule: Schedule,
    params: SamplingParams,
    verifier: Verifier,
    *,
    budget: Budget | None = None,
    concurrency: int | None = None,
    on_progress: ProgressFn | None = None,
    poll_s: float = 1.0,
) -> AdaptiveReport:
    """Sample ``problems`` in rounds until ``schedule`` stops each one (or the budget runs out).

    See the module's documentation for the rounds, resuming, and how a budget is allocated. The
    run is the one fixed-N sampling with the same backend, task and ``params`` fills (the task's
    stop sequences are added to ``params`` as there).

    Args:
        verifier: the task's verifier; every sample drawn is verified at once, and its verdict
            stored under ``verifier.name``.
        budget: what the whole run may spend (see the module's documentation).
        concurrency: rounds in flight, of different problems (default: enough to fill the
            backend's batch slots); a problem never has two rounds in flight.
        on_progress: called after each stored round with (new samples, new completion tokens).
        poll_s: how often to look again while waiting for another process's samples.

    Raises:
        ConfigError: no problems, or a budget below what the first round of every problem needs.
    """
    if not problems:
        raise ConfigError("no problems selected", hint="check --limit/--offset/--ids")
    concurrency = concurrency or (
        max(1, backend.max_batch // schedule.round_size) * backend.request_slots
    )
    params = with_task_stop(params, task)  # the task's stop sequences, part of the run's identity
    spec = run_spec(backend, task, params)
    run_id = spec.run_id
    key = schedule_key(schedule)
    # A made-up next problem after the answer (in the task's own format) is not part of it.
    markers = continuation_markers(spec.task)
    states = [_State(p, i) for i, p in enumerate(problems)]
    by_id = {s.problem.id: s for s in states}
    plan = _Plan(schedule, states, budget, params.max_tokens)
    verify_lock = asyncio.Lock()
    totals = {"drawn": 0, "prompt": 0, "completion": 0, "requests": 0}

    def load(taken: dict[str, set[int]]) -> None:
        """Read the problems' stored samples and verdicts, verifying samples without one."""
        verdicts = store.verdicts(run_id, verifier.name)
        todo: list[tuple[_State, Sample]] = []
        for s in states:
            s.answers.clear()
            s.tokens.clear()
            s.correct.clear()
        for sample in store.samples(run_id, list(by_id)):
            state = by_id[sample.problem_id]
            if sample.index >= schedule.max_samples:
                continue
            verdict = verdicts.get(sample.id or 0)
            if verdict is None:
                todo.append((state, sample))
            else:
                state.add(sample.index, sample.completion_tokens, verdict)
        if todo:
            judged = judge(verifier, markers, [(st.problem.reference, s.text) for st, s in todo])
            store.add_verdicts(
                verifier.name,
                [(sample.id or 0, v) for (_, sample), v in zip(todo, judged, strict=True)],
            )
            for (st, sample), v in zip(todo, judged, strict=True):
                st.add(sample.index, sample.completion_tokens, v)
        for s in states:
            decision = plan.decide(s)
            missing = [i for i in range(decision.next_checkpoint) if i not in s.answers]
            # Everything this problem needs next is being drawn by another live process.
            s.blocked = bool(missing) and all(i in taken.get(s.problem.id, set()) for i in missing)

    async def draw_round(owner: int, state: _State) -> None:
        pid = state.problem.id
        decision = state.decision
        assert decision is not None
        missing = [i for i in range(decision.next_checkpoint) if i not in state.answers]
        got = store.claim(run_id, owner, pid, missing)
        if not got:
            state.blocked = True
            return
        for start in range(0, len(got), backend.max_batch):
            indices = got[start : start + backend.max_batch]
            samples, gen = await draw_request(backend, prompt_of[pid], run_id, pid, indices, params)
            ids = store.add_samples(samples, owner=owner)
            tokens = sum(c.completion_tokens for c in gen.completions)
            totals["drawn"] += len(ids)
            totals["prompt"] += gen.prompt_tokens
            totals["completion"] += tokens
            totals["requests"] += 1
            if len(ids) != len(samples):
                # Another process stored some of these meanwhile (this one had been taken for
                # dead): which ids are whose is read back when the run is planned again.
                state.blocked = True
                return
            async with verify_lock:
                judged = await asyncio.to_thread(
                    judge, verifier, markers, [(state.problem.reference, s.text) for s in samples]
                )
            store.add_verdicts(verifier.name, list(zip(ids, judged, strict=True)))
            for s, v in zip(samples, judged, strict=True):
                state.add(s.index, s.completion_tokens, v)
            if on_progress is not None:
                on_progress(len(ids), tokens)
        if len(got) < len(missing):
            state.blocked = True  # the rest is another process's
            return
        if plan.decide(state).stopped:
            store.add_stops([_stop(run_id, key, state, budget)])

    async def work(owner: int, units: Sequence[_State]) -> None:
        tasks: dict[asyncio.Task[None], str] = {}
        try:
            while True:
                while len(tasks) < concurrency and (chosen := plan.pick()) is not None:
                    plan.in_flight[chosen.problem.id] = plan.round_cost(chosen)
                    tasks[asyncio.create_task(draw_round(owner, chosen))] = chosen.problem.id
                if not tasks:
                    return
                done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    plan.in_flight.pop(tasks.pop(t))
                    t.result()  # the first failure stops the rest; what is stored stays
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            plan.in_flight.clear()

    def plan_units(taken: dict[str, set[int]]) -> list[_State]:
        load(taken)
        store.add_stops(
            [_stop(run_id, key, s, budget) for s in states if s.decision and s.decision.stopped]
        )
        chosen = plan.pick()
        return [chosen] if chosen is not None else []

    start = time.perf_counter()
    load({})  # the run may not exist yet: then nothing is stored
    already = sum(len(s.answers) for s in states)
    if budget is not None and plan.minimum() > budget.amount:
        raise ConfigError(
            f"--budget {budget} does not cover the first round of every problem: that needs at "
            f"least {plan.minimum()} {budget.unit} ({len(states)} problems x "
            f"{schedule.checkpoints()[0]} samples"
            + (f" x {params.max_tokens} max tokens" if budget.unit == "tokens" else "")
            + ", less what is stored)",
            hint=f"raise --budget to {plan.minimum()}{budget.unit} or more, or select fewer "
            "problems",
        )
    # Created only now, so that a budget error leaves no empty run behind.
    _, prompt_of = open_run(store, spec, task, problems)
    await fill_run(
        store,
        run_id,
        prompt_of,
        plan=plan_units,
        work=work,
        wanted=lambda i: i < schedule.max_samples,
        poll_s=poll_s,
    )
    load({})
    final: list[AdaptiveStop] = []
    for s in states:
        assert s.decision is not None
        if not s.decision.stopped and budget is not None:
            # Nothing more could be drawn within the budget.
            s.decision = replace(s.decision, stopped=True, reason="budget")
        if s.decision.stopped:
            final.append(_stop(run_id, key, s, budget))
    store.add_stops(final)
    return AdaptiveReport(
        run_id=run_id,
        rule=key,
        budget=None if budget is None else str(budget),
        problems=len(states),
        already_present=already,
        drawn=totals["drawn"],
        requests=totals["requests"],
        prompt_tokens=totals["prompt"],
        completion_tokens=totals["completion"],
        wall_s=time.perf_counter() - start,
        stops=final,
        vote_correct={s.problem.id: _correct(s) for s in states},
    )


def _correct(state: _State) -> bool:
    d = state.decision
    assert d is not None
    indices = range(d.samples)
    return vote_correct(
        [state.answers[i] for i in indices], [state.correct[i] for i in indices], d.answer
    )


def _stop(run_id: str, key: str, state: _State, budget: Budget | None) -> AdaptiveStop:
    d = state.decision
    assert d is not None and d.reason is not None
    return AdaptiveStop(
        run_id=run_id,
        problem_id=state.problem.id,
        rule=key,
        samples=d.samples,
        rounds=d.rounds,
        reason=d.reason,
        answer=d.answer,
        votes=d.votes,
        statistic=None if math.isnan(d.statistic) else d.statistic,
        completion_tokens=state.used_tokens(d.samples),
        budget=None if budget is None else str(budget),
    )
