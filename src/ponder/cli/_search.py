"""`ponder search`: find systems of a search space that answer a task well and cheaply.

A thin layer over :func:`ponder.search.search`: flags become :class:`~ponder.search.SearchSettings`
(a bad value names its flag), trials are printed as they finish, and the result is a table, an
HTML page and the front's systems as config files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ponder.cli._common import (
    DataOpt,
    DbOpt,
    ExecutorOpt,
    FewShotOpt,
    JsonOpt,
    RayActorsOpt,
    RayAddressOpt,
    TaskOptionOpt,
    build_task,
    console,
    emit_json,
    open_executor,
    open_store,
    reported_errors,
    validated,
)
from ponder.search import (
    ALGORITHMS,
    SearchSettings,
    SearchSpace,
    TestResult,
    TrialResult,
    decisions,
    render_search_html,
    result_json,
    search,
    test_table,
    trials_table,
    write_configs,
)

_FLAGS = {
    "algorithm": "--algorithm",
    "trials": "--trials",
    "timeout_s": "--timeout",
    "max_search_tokens": "--max-search-tokens",
    "dev": "--dev",
    "test": "--test",
    "split_seed": "--split-seed",
    "seed": "--seed",
    "system_seed": "--system-seed",
    "prune_after": "--prune-after",
    "concurrency": "--concurrency",
}


def trial_line(trial: TrialResult) -> str:
    """One line per finished trial (the live view of a search)."""
    acc = "-" if trial.accuracy is None else f"{trial.accuracy:.3f}"
    tokens = "-" if trial.tokens_per_query is None else f"{trial.tokens_per_query:,.0f}"
    reused = f", {trial.reused_calls}/{trial.calls} calls reused" if trial.calls else ""
    note = f"  ({trial.note})" if trial.note else ""
    return (
        f"trial {trial.number:>3} {trial.state:<10} acc {acc} on {trial.problems} dev, "
        f"{tokens} tokens/query, {trial.wall_s:.0f}s{reused}  [{decisions(trial.params)}]{note}"
    )


def search_command(
    space_file: Annotated[
        Path,
        typer.Argument(help="Search space (YAML/JSON; see configs/search/).", show_default=False),
    ],
    task: Annotated[
        str,
        typer.Option(
            "--task", "-t", help="gsm8k, humaneval, gym:NAME, jsonl, ... (`ponder tasks`)"
        ),
    ] = "gsm8k",
    dev: Annotated[int, typer.Option(help="Dev problems: the search sees only these.")] = 20,
    test: Annotated[
        int, typer.Option(help="Test problems: the front and the baselines are scored on them.")
    ] = 30,
    split_seed: Annotated[int, typer.Option(help="Seed of the dev/test split.")] = 0,
    algorithm: Annotated[
        str, typer.Option(help=f"Search algorithm: {', '.join(ALGORITHMS)}.")
    ] = "tpe",
    trials: Annotated[
        int,
        typer.Option(
            help="Distinct systems to evaluate (finished ones count when resuming; a repeat is free)."
        ),
    ] = 20,
    timeout: Annotated[
        float | None, typer.Option(help="Stop starting trials after this many seconds.")
    ] = None,
    max_search_tokens: Annotated[
        int | None,
        typer.Option(help="Stop when the trials have drawn this many tokens (reused are free)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search algorithm.")] = 0,
    system_seed: Annotated[
        int, typer.Option(help="Seed of every system (fixed, so generations are reused).")
    ] = 0,
    prune: Annotated[
        bool, typer.Option("--prune/--no-prune", help="Stop trials dominated early.")
    ] = True,
    prune_after: Annotated[
        int | None,
        typer.Option(help="Dev problems a trial answers before it may be pruned (default dev/4)."),
    ] = None,
    top: Annotated[int, typer.Option(help="Systems of the front scored on test (0: none).")] = 3,
    concurrency: Annotated[int, typer.Option(help="Queries in flight within a trial.")] = 4,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the HTML page and the front's configs "
            "(default: search-<study> beside the database)."
        ),
    ] = None,
    few_shot: FewShotOpt = None,
    data: DataOpt = None,
    task_option: TaskOptionOpt = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_actors: RayActorsOpt = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    """Search a space of composed systems on a task's dev split (Optuna; resumable), score the
    Pareto front of accuracy vs tokens per query on the test split against one greedy sample and
    sample-N vote, and write the best systems as configs that `ponder run` and `ponder serve` use."""
    with reported_errors(verbose):
        settings = validated(
            SearchSettings,
            _FLAGS,
            algorithm=algorithm,
            trials=trials,
            timeout_s=timeout,
            max_search_tokens=max_search_tokens,
            dev=dev,
            test=test,
            split_seed=split_seed,
            seed=seed,
            system_seed=system_seed,
            prune=prune,
            prune_after=prune_after,
            concurrency=concurrency,
        )
        space = SearchSpace.load(space_file)
        the_task = build_task(task, data, None, None, None, few_shot, task_option)

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=json_out,
        )
        bar = progress.add_task("trial", total=settings.dev)

        def on_progress(number: int, answered: int, total: int) -> None:
            progress.update(bar, description=f"trial {number}: dev problems", completed=answered)

        def on_trial(trial: TrialResult) -> None:
            if not json_out:
                progress.console.print(trial_line(trial), highlight=False, markup=False)
            progress.reset(bar, description="next trial")

        def on_test(row: TestResult) -> None:
            if not json_out:
                progress.console.print(
                    f"test  {row.label:<10} accuracy {row.accuracy:.3f} "
                    f"[{row.ci[0]:.3f}, {row.ci[1]:.3f}]  {row.tokens_per_query:,.0f} tokens/query",
                    highlight=False,
                    markup=False,
                )

        with open_store(db) as store, open_executor(executor, ray_address, ray_actors) as ex:
            if not json_out:
                console.print(
                    f"search {space.name} on {the_task.name}: {settings.algorithm}, "
                    f"{settings.trials} trials, dev {settings.dev} / test {settings.test} "
                    f"(split seed {settings.split_seed}); runs in {store.path}",
                    highlight=False,
                    markup=False,
                )
            with progress:
                result = search(
                    space,
                    the_task,
                    store=store,
                    settings=settings,
                    top=top,
                    on_trial=on_trial,
                    on_test=on_test,
                    on_progress=on_progress,
                    config_dir=None,
                    executor=ex,
                )
            directory = out or store.path.parent / result.study
            paths = write_configs(result, directory)
            page = directory / "search.html"
            page.write_text(render_search_html(result), encoding="utf-8")
        if json_out:
            data_out = result_json(result)
            data_out["configs"] = {str(k): str(v) for k, v in paths.items()}
            data_out["html"] = str(page)
            emit_json(data_out)
            return
        console.print(trials_table(result))
        if result.tests:
            console.print(test_table(result))
        console.print(
            f"{result.reused_calls} of {result.calls} model calls were served from stored "
            f"generations; study {result.study} in {result.storage}",
            highlight=False,
            markup=False,
        )
        for number, path in paths.items():
            console.print(
                f"trial {number}: {path}  (ponder run --system {path} ...)",
                highlight=False,
                markup=False,
            )
        console.print(f"page: {page}", highlight=False, markup=False)
