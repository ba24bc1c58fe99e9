"""The search loop: an Optuna study whose trials are ordinary system runs on the dev split.

Storage and resume. The study lives in SQLite beside the run store (``<db>.search.sqlite``), with
heartbeats: a trial whose process died stops beating, is failed once its grace period has passed,
and a retry of the same system is queued (Optuna's ``RetryHeartbeatStaleTrialCallback``); a trial that
raised is queued again when the search resumes. A retried trial is the same system run, so it
continues from the answers already stored and never duplicates one. Finished trials are kept: a
resumed search runs only the trials its budget has left.

Objectives. Accuracy on the dev split (maximised) and mean prompt + completion tokens per query
(minimised), reused generations counted as if drawn, so a trial's cost is the system's deployed
cost. ``max_calls`` and ``max_tokens_per_query`` are checked on the finished trial (infeasible
trials keep their values, are handed to the samplers as violated constraints and never join the
front); ``max_layers`` is checked on the proposal, and such a system is never run.

Pruning. Optuna's pruners do not work in multi-objective studies, so Ponder prunes: a trial first
answers a slice of the dev split; its optimistic bound (accuracy if every remaining problem were
solved; mean tokens if every remaining problem cost as little as the cheapest one so far) is
compared with the complete feasible trials, and the trial stops (state ``pruned``) when one of them
is at least as good on both objectives and better on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ponder.errors import ConfigError
from ponder.records import Problem
from ponder.runs import run_stats, system_run, verify_run
from ponder.search._identity import check_same_space, study_name
from ponder.search._optuna import Algorithm, TrialSuggester, make_sampler
from ponder.search._results import TrialResult, TrialState
from ponder.search._space import Proposal, SearchSpace, grid, propose
from ponder.store import Store

if TYPE_CHECKING:
    import optuna

    from ponder.backends import Backend
    from ponder.systems import GenerationCache, System, SystemResult
    from ponder.tasks import Task
    from ponder.verify import Verifier

log = logging.getLogger("ponder.search")

STORAGE_SUFFIX = ".search.sqlite"


def storage_path(db: Path) -> Path:
    """Where the studies of the run store ``db`` live: ``<db>.search.sqlite`` beside it."""
    return db.with_name(db.name + STORAGE_SUFFIX)


class SearchSettings(BaseModel):
    """How a search runs (the CLI's flags; fields are named in errors)."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Algorithm = "tpe"
    trials: int = Field(
        20, ge=1, description="Distinct systems evaluated in the study (finished ones count)."
    )
    timeout_s: float | None = Field(None, gt=0, description="Wall time of this call.")
    max_search_tokens: int | None = Field(
        None, ge=1, description="Stop when the trials have drawn this many tokens (reuse is free)."
    )
    dev: int = Field(20, ge=1, description="Dev problems (the search sees only these).")
    test: int = Field(30, ge=0, description="Test problems (0: no test evaluation).")
    split_seed: int = 0
    seed: int = Field(0, description="Seed of the search algorithm.")
    system_seed: int = Field(0, description="Seed of every system (fixed, so samples are reused).")
    prune: bool = True
    prune_after: int | None = Field(
        None, ge=1, description="Dev problems answered before a trial may be pruned."
    )
    concurrency: int = Field(4, ge=1, description="Queries in flight within a trial.")
    heartbeat_s: int = Field(30, ge=1, description="Heartbeat of a running trial.")
    grace_s: int | None = Field(
        None, ge=1, description="A trial silent this long is failed (default 2 x heartbeat)."
    )

    def slice_size(self, dev: int) -> int:
        """Problems a trial answers before the pruning check (dev when it never prunes)."""
        if not self.prune:
            return dev
        size = self.prune_after if self.prune_after is not None else max(3, dev // 4)
        return min(size, dev)


def _retried_numbers(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    out: set[int] = set()
    for t in trials:
        for attrs in (t.user_attrs, t.system_attrs):
            for key in ("retry_of", "failed_trial"):
                if isinstance(attrs.get(key), int):
                    out.add(attrs[key])
    return out


@dataclass
class _Counters:
    answered: int = 0
    drawn_tokens: int = 0
    calls: int = 0
    reused_calls: int = 0

    def add(self, result: SystemResult) -> None:
        self.calls += result.usage.calls
        self.reused_calls += result.trace.reuse.calls
        for event in result.trace.events:
            for call in event.calls:
                if call.reused < call.n:  # a call served wholly from stored generations is free
                    share = (call.n - call.reused) / call.n
                    self.drawn_tokens += call.prompt_tokens + round(call.completion_tokens * share)


@dataclass
class Study:
    """A search study over ``space`` on ``task``'s dev problems (see the module docstring).

    Build one with :func:`open_study`; :meth:`run` adds trials, :meth:`trials` reads them.
    """

    space: SearchSpace
    task: Task
    store: Store
    settings: SearchSettings
    dev: list[Problem]
    verifier: Verifier
    name: str
    storage: Path
    optuna_study: optuna.Study
    cache: GenerationCache
    shared_backends: dict[str, Backend] = field(default_factory=dict)
    backends: dict[str, Backend] | None = None
    backend_factory: Callable[[BaseModel], Backend] | None = None
    on_trial: Callable[[TrialResult], None] | None = None
    on_progress: Callable[[int, int, int], None] | None = None
    """Called as a trial answers: (trial number, dev problems answered in this call, dev size)."""
    _runner: asyncio.Runner | None = None

    # ----- reading --------------------------------------------------------------------------

    def trials(self) -> list[TrialResult]:
        """Every trial so far, in order (queued ones, not started yet, are not trials yet)."""
        import optuna

        return [
            _result(t)
            for t in self.optuna_study.get_trials(deepcopy=False)
            if t.state != optuna.trial.TrialState.WAITING
        ]

    def finished(self) -> int:
        """Systems that count against the budget: distinct configs of the finished trials
        (complete, pruned, infeasible). A system proposed again is the same stored run, costs
        nothing and does not count (TPE repeats itself on small categorical spaces)."""
        import optuna

        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return len(
            {
                json.dumps(t.user_attrs.get("config"), sort_keys=True)
                for t in self.optuna_study.get_trials(deepcopy=False, states=done)
            }
        )

    # ----- running ----------------------------------------------------------------------------

    def run(self) -> list[TrialResult]:
        """Run trials until the budget (trials, wall time, tokens) is spent or the grid is done."""
        import optuna

        study, settings = self.optuna_study, self.settings
        # Trials of a killed search whose grace period has passed are failed now, so that their
        # retries run before anything new.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        self._requeue_failed()
        drawn = sum(int(_attrs(t).get("drawn_tokens", 0)) for t in study.get_trials(deepcopy=False))
        budget = {"drawn": drawn}

        def stop_when_spent(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            budget["drawn"] += int(_attrs(trial).get("drawn_tokens", 0))
            if self.on_trial is not None:
                self.on_trial(_result(trial))
            if self.finished() >= settings.trials:
                study.stop()
            elif settings.max_search_tokens is not None and (
                budget["drawn"] >= settings.max_search_tokens
            ):
                log.info("search token budget spent (%d tokens drawn)", budget["drawn"])
                study.stop()
            elif settings.algorithm == "grid" and not self._next_grid():
                study.stop()

        left = settings.trials - self.finished()
        if left <= 0 or not self._next_grid():
            return self.trials()
        if settings.max_search_tokens is not None and budget["drawn"] >= settings.max_search_tokens:
            return self.trials()
        with self._loop():
            # Failed trials are retried (stale ones by Optuna's callback, raised ones on resume)
            # and repeated systems do not count: n_trials bounds both, the callback stops at the
            # real budget.
            study.optimize(
                self._objective,
                n_trials=left * 3,
                timeout=settings.timeout_s,
                callbacks=[stop_when_spent],
                gc_after_trial=False,
            )
        return self.trials()

    @contextlib.contextmanager
    def _loop(self) -> Iterator[None]:
        with asyncio.Runner() as runner:
            self._runner = runner
            try:
                yield
            finally:
                self._runner = None

    def _requeue_failed(self) -> None:
        import optuna

        trials = self.optuna_study.get_trials(deepcopy=False)
        retried = _retried_numbers(trials)
        for t in trials:
            if t.state == optuna.trial.TrialState.FAIL and t.number not in retried:
                self.optuna_study.enqueue_trial(
                    t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False
                )

    def _next_grid(self) -> bool:
        """Grid only: queue the next system not tried yet unless a trial already waits (so
        retries run before new systems); False when every system was tried."""
        if self.settings.algorithm != "grid":
            return True
        if _waiting(self.optuna_study):
            return True
        tried = {
            json.dumps(t.user_attrs.get("config"), sort_keys=True)
            for t in self.optuna_study.get_trials(deepcopy=False)
        }
        for proposal in grid(self.space):
            if proposal.feasible and json.dumps(proposal.config, sort_keys=True) not in tried:
                self.optuna_study.enqueue_trial(proposal.params)
                return True
        return False

    def _objective(self, trial: optuna.Trial) -> tuple[float, float]:
        import optuna

        start = time.perf_counter()
        proposal = propose(self.space, TrialSuggester(trial))
        trial.set_user_attr("config", proposal.config)
        if not proposal.feasible:
            _outcome(trial, "infeasible", "; ".join(proposal.violations))
            trial.set_constraint("constraints", 1.0)
            raise optuna.TrialPruned("; ".join(proposal.violations))
        if self._runner is None:  # pragma: no cover - run() always sets it
            raise RuntimeError("a study's objective runs only inside Study.run")
        return self._runner.run(self._evaluate(trial, proposal, start))

    async def _evaluate(
        self, trial: optuna.Trial, proposal: Proposal, start: float
    ) -> tuple[float, float]:
        import optuna

        counters = _Counters()
        system = self.system(proposal.config)
        dev, settings = self.dev, self.settings
        size = settings.slice_size(len(dev))
        parts = [dev[:size], dev] if size < len(dev) else [dev]
        try:
            for part in parts:
                report = await system_run(
                    self.store,
                    system,
                    self.task,
                    part,
                    concurrency=settings.concurrency,
                    seed=settings.system_seed,
                    on_answer=lambda result: self._answered(trial.number, counters, result),
                )
                verify_run(self.store, report.run_id, self.verifier)
                point = _measure(self.store, report.run_id, part, self.verifier.name)
                # One attribute per slice: each is a committed write to the study's database.
                trial.set_user_attr(
                    "measured",
                    {
                        "run_id": report.run_id,
                        "problems": point.problems,
                        "correct": point.correct,
                        "accuracy": point.accuracy,
                        "tokens_per_query": point.tokens,
                        "calls_per_query": point.calls,
                        "calls": counters.calls,
                        "reused_calls": counters.reused_calls,
                        "drawn_tokens": counters.drawn_tokens,
                        "wall_s": time.perf_counter() - start,
                    },
                )
                if part is not dev:
                    beaten_by = self._dominates_bound(point, len(dev))
                    if beaten_by is not None:
                        note = (
                            f"pruned after {point.problems} problems: even at best "
                            f"({point.best_accuracy(len(dev)):.3f} accuracy, "
                            f"{point.least_tokens(len(dev)):.0f} tokens/query) it is dominated "
                            f"by trial {beaten_by}"
                        )
                        _outcome(trial, "pruned", note)
                        raise optuna.TrialPruned(note)
        finally:
            await system.aclose()
        violations = self._violations(point)
        trial.set_constraint("constraints", 1.0 if violations else 0.0)
        if violations:
            _outcome(trial, "infeasible", "; ".join(violations))
        else:
            _outcome(trial, "complete", "")
        return point.accuracy, point.tokens

    def system(self, config: Mapping[str, Any]) -> System:
        """A system of this search: on the search's shared backends and stored generations."""
        from ponder.systems import System

        return System.from_dict(
            config,
            backends=self.backends,
            shared_backends=self.shared_backends,
            generation_cache=self.cache,
            backend_factory=self.backend_factory,
        )

    def _answered(self, number: int, counters: _Counters, result: SystemResult) -> None:
        counters.add(result)
        counters.answered += 1
        if self.on_progress is not None:
            self.on_progress(number, counters.answered, len(self.dev))

    def _violations(self, point: _Point) -> list[str]:
        limits = self.space.constraints
        out = []
        if limits.max_calls is not None and point.calls > limits.max_calls:
            out.append(
                f"{point.calls:.1f} calls per query, more than max_calls = {limits.max_calls}"
            )
        if limits.max_tokens_per_query is not None and point.tokens > limits.max_tokens_per_query:
            out.append(
                f"{point.tokens:.0f} tokens per query, more than max_tokens_per_query = "
                f"{limits.max_tokens_per_query:g}"
            )
        return out

    def _dominates_bound(self, point: _Point, dev: int) -> int | None:
        """A complete trial that beats the best ``point`` could still reach (its number)."""
        import optuna

        best_acc, least_tok = point.best_accuracy(dev), point.least_tokens(dev)
        for t in self.optuna_study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
        ):
            if _attrs(t).get("state") != "complete" or t.values is None:
                continue
            acc, tok = t.values
            if acc >= best_acc and tok <= least_tok and (acc > best_acc or tok < least_tok):
                return t.number
        return None


@dataclass(frozen=True)
class _Point:
    """A trial measured on the dev problems answered so far."""

    problems: int
    correct: int
    tokens_total: int
    cheapest: int
    calls_total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.problems

    @property
    def tokens(self) -> float:
        return self.tokens_total / self.problems

    @property
    def calls(self) -> float:
        return self.calls_total / self.problems

    def best_accuracy(self, dev: int) -> float:
        return (self.correct + dev - self.problems) / dev

    def least_tokens(self, dev: int) -> float:
        return (self.tokens_total + (dev - self.problems) * self.cheapest) / dev


def _measure(store: Store, run_id: str, problems: Sequence[Problem], verifier: str) -> _Point:
    ids = [p.id for p in problems]
    stats = run_stats(store, run_id, ids, verifier)
    per_query = [
        s.prompt_tokens + s.completion_tokens for s in store.samples(run_id, ids) if s.index == 0
    ]
    return _Point(
        problems=len(ids),
        correct=stats.correct,
        tokens_total=stats.prompt_tokens + stats.completion_tokens,
        cheapest=min(per_query) if per_query else 0,
        calls_total=stats.calls,
    )


def _outcome(trial: optuna.Trial, state: TrialState, note: str) -> None:
    trial.set_user_attr("outcome", {"state": state, "note": note})


def _attrs(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's record: its config, what it measured, and its outcome, in one mapping."""
    return {
        **t.user_attrs,
        **t.user_attrs.get("measured", {}),
        **t.user_attrs.get("outcome", {}),
    }


def _waiting(study: optuna.Study) -> bool:
    import optuna

    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def _result(t: optuna.trial.FrozenTrial) -> TrialResult:
    import optuna

    attrs = _attrs(t)
    states: dict[optuna.trial.TrialState, TrialState] = {
        optuna.trial.TrialState.FAIL: "failed",
        optuna.trial.TrialState.RUNNING: "running",
        optuna.trial.TrialState.WAITING: "running",
    }
    state: TrialState = (
        states.get(t.state)
        or attrs.get("state")
        or ("complete" if t.state == optuna.trial.TrialState.COMPLETE else "pruned")
    )
    note = str(attrs.get("note", ""))
    if t.state == optuna.trial.TrialState.FAIL and not note:
        note = str(t.system_attrs.get("fail_reason", "failed (see the log); retried on resume"))
    return TrialResult(
        number=t.number,
        state=state,
        params=dict(t.params),
        config=dict(attrs.get("config", {})),
        run_id=attrs.get("run_id"),
        problems=int(attrs.get("problems", 0)),
        correct=int(attrs.get("correct", 0)),
        accuracy=attrs.get("accuracy"),
        tokens_per_query=attrs.get("tokens_per_query"),
        calls_per_query=attrs.get("calls_per_query"),
        calls=int(attrs.get("calls", 0)),
        reused_calls=int(attrs.get("reused_calls", 0)),
        wall_s=float(attrs.get("wall_s", 0.0)),
        note=note,
    )


def open_study(
    space: SearchSpace,
    task: Task,
    store: Store,
    dev: Sequence[Problem],
    verifier: Verifier,
    settings: SearchSettings,
    *,
    split: dict[str, Any],
    backends: dict[str, Backend] | None = None,
    backend_factory: Callable[[BaseModel], Backend] | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> Study:
    """Create the study, or load it to resume (refusing a changed space, naming the difference).

    Args:
        split: What defines the dev/test split (seed and sizes); part of the study's name.
        backends: Named backends that string models of the space may name (otherwise names are
            embedded models); shared by every trial.
        backend_factory: Builds the backends of the trials' models (default: in this process).

    Raises:
        ConfigError: the study exists with another space.
    """
    import optuna

    from ponder.systems import StoreGenerationCache

    task_spec = {**task.spec(), "verifier": task.verifier}
    name = study_name(
        space,
        task_spec,
        settings.split_seed,
        settings={**split, "algorithm": settings.algorithm, "system_seed": settings.system_seed},
    )
    path = storage_path(store.path)
    grace = settings.grace_s if settings.grace_s is not None else 2 * settings.heartbeat_s
    with warnings.catch_warnings():
        # Heartbeats are marked experimental; they are how a killed search resumes.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{path}",
            heartbeat_interval=settings.heartbeat_s,
            grace_period=grace,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=2
            ),
        )
        sampler = make_sampler(settings.algorithm, settings.seed, trials=settings.trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        directions=["maximize", "minimize"],
        load_if_exists=True,
    )
    stored = study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", space.model_dump(mode="json"))
        study.set_user_attr("task", task_spec)
        study.set_user_attr("split", split)
        study.set_user_attr("dev_ids", [p.id for p in dev])
    else:
        check_same_space(stored, space, name)
        if study.user_attrs.get("dev_ids") != [p.id for p in dev]:
            raise ConfigError(
                f"study {name} was run on other dev problems",
                hint="the task's data changed under the same spec; start a new --db",
            )
    return Study(
        space=space,
        task=task,
        store=store,
        settings=settings,
        dev=list(dev),
        verifier=verifier,
        name=name,
        storage=path,
        optuna_study=study,
        cache=StoreGenerationCache(store),
        backends=backends,
        backend_factory=backend_factory,
        on_trial=on_trial,
        on_progress=on_progress,
    )
