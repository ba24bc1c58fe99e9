"""``search()``: split the task, run the study on dev, evaluate the front on test, write the configs."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ponder.search._evaluate import evaluate_on_test, front
from ponder.search._report import write_configs
from ponder.search._results import SearchResult, TestResult, TrialResult
from ponder.search._space import SearchSpace
from ponder.search._split import split_problems
from ponder.search._study import SearchSettings, Study, open_study
from ponder.store import Store

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.executors import Executor
    from ponder.tasks import Task


def search(
    space: SearchSpace | str | Path | Mapping[str, Any],
    task: Task,
    *,
    store: Store | str | Path,
    settings: SearchSettings | None = None,
    top: int = 3,
    config_dir: str | Path | None = None,
    backends: Mapping[str, Backend] | None = None,
    executor: Executor | None = None,
    on_trial: Callable[[TrialResult], None] | None = None,
    on_test: Callable[[TestResult], None] | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
    **overrides: Any,
) -> SearchResult:
    """Search ``space`` for systems that answer ``task`` well and cheaply.

    The task's problems are split (seeded) into dev and test; every trial is a stored, verified
    system run on dev only; when the trial budget is spent the ``top`` systems of the Pareto front
    (by dev accuracy) and two baselines (one greedy sample, sample-N vote at the same mean tokens)
    are run on test. Rerunning the same call resumes: finished trials are kept and stored runs are
    not redrawn.

    Args:
        space: A :class:`SearchSpace`, a space file, or a space mapping.
        task: The task (``ponder.tasks.get_task(...)``).
        store: The run store (or its path); the study lives beside it in ``<db>.search.sqlite``.
        settings: How to search (:class:`SearchSettings`); ``overrides`` set single fields
            (``search(space, task, store=db, trials=10, dev=5)``).
        top: Systems of the front evaluated on test (0: no test evaluation).
        config_dir: Where to write the front's systems as config files (None: not written).
        backends: Named backends that string models in the space may name (default: embedded
            models by name). The caller closes them.
        executor: Where the trials' models run and their answers are verified (default: this
            process; a :class:`~ponder.executors.Executor` such as Ray's). The caller closes it.
        on_trial, on_test: Called with each trial as it finishes, and each test row.
        on_progress: Called as a trial answers dev problems: (trial number, answered in this
            call, dev size), for a progress bar.

    Raises:
        ConfigError: an invalid space or setting (naming the field), a split larger than the task,
            or a study that exists with another space.
    """
    if not isinstance(space, SearchSpace):
        space = (
            SearchSpace.from_data(space)
            if isinstance(space, Mapping)
            else SearchSpace.load(Path(space))
        )
    settings = (settings or SearchSettings()).model_copy(update=overrides)
    settings = SearchSettings.model_validate(settings.model_dump())
    owned = not isinstance(store, Store)
    the_store = Store(Path(store)) if not isinstance(store, Store) else store
    try:
        return _search(
            space,
            task,
            the_store,
            settings,
            top,
            config_dir,
            backends,
            executor,
            (on_trial, on_test, on_progress),
        )
    finally:
        if owned:
            the_store.close()


def _search(
    space: SearchSpace,
    task: Task,
    store: Store,
    settings: SearchSettings,
    top: int,
    config_dir: str | Path | None,
    backends: Mapping[str, Backend] | None,
    executor: Executor | None,
    hooks: tuple[
        Callable[[TrialResult], None] | None,
        Callable[[TestResult], None] | None,
        Callable[[int, int, int], None] | None,
    ],
) -> SearchResult:
    from ponder.executors import LocalExecutor

    ex = executor or LocalExecutor()
    on_trial, on_test, on_progress = hooks
    dev, test = split_problems(task.problems(), settings.dev, settings.test, settings.split_seed)
    split = {"seed": settings.split_seed, "dev": settings.dev, "test": settings.test}
    with ex.verifier(task.verifier) as verifier:
        study = open_study(
            space,
            task,
            store,
            dev,
            verifier,
            settings,
            split=split,
            backends=dict(backends or {}),
            backend_factory=ex.backend,
            on_trial=on_trial,
            on_progress=on_progress,
        )
        try:
            trials = study.run()
            on_front = front(trials)
            tests: list[TestResult] = []
            if top > 0 and test and on_front:
                tests = asyncio.run(_test(study, trials, on_front[:top], test, on_test))
        finally:
            asyncio.run(_close(study))
    result = SearchResult(
        study=study.name,
        storage=str(study.storage),
        algorithm=settings.algorithm,
        space=space.model_dump(mode="json"),
        task={**task.spec(), "verifier": task.verifier},
        dev_ids=[p.id for p in dev],
        test_ids=[p.id for p in test],
        trials=trials,
        front=on_front,
        tests=tests,
    )
    if config_dir is not None and on_front:
        paths = write_configs(result, Path(config_dir))
        result = dataclasses.replace(result, configs={k: str(v) for k, v in paths.items()})
    return result


async def _test(
    study: Study,
    trials: list[TrialResult],
    numbers: list[int],
    test: list[Any],
    on_test: Callable[[TestResult], None] | None,
) -> list[TestResult]:
    by_number = {t.number: t for t in trials}
    systems = [
        (
            f"trial {n}",
            n,
            study.system(by_number[n].config),
        )
        for n in numbers
    ]
    try:
        return await evaluate_on_test(
            study.store,
            study.task,
            test,
            systems,
            verifier=study.verifier,
            seed=study.settings.system_seed,
            concurrency=study.settings.concurrency,
            build_vote=study.system,
            on_row=on_test,
        )
    finally:
        for _, _, system in systems:
            await system.aclose()


async def _close(study: Study) -> None:
    from ponder.systems import aclose_backends

    backends = list(study.shared_backends.values())
    study.shared_backends.clear()
    await aclose_backends(backends)
