"""`ponder run` (a composed system on a task, against its single-sample baseline) and `ponder trace`.

The system's answers are stored as a run like any other (sample 0 of each problem, with the query's
trace beside it), so `ponder runs`, `show`, `report` and `export` work on it; see
:func:`ponder.runs.system_spec` for the run identity and :func:`ponder.runs.baseline_run` for the
baseline.
"""

from __future__ import annotations

import asyncio
import math
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ponder.analysis import run_verifier
from ponder.cli._common import (
    TRUNCATION_NOTE,
    BaseUrlOpt,
    DataOpt,
    DbOpt,
    ExecutorOpt,
    FewShotOpt,
    IdsOpt,
    JsonOpt,
    LimitOpt,
    ModelIdentityOpt,
    OffsetOpt,
    RayActorsOpt,
    RayAddressOpt,
    ShuffleSeedOpt,
    TaskOptionOpt,
    base_urls,
    build_task,
    choose_problems,
    console,
    emit_json,
    err_console,
    open_executor,
    open_store,
    reported_errors,
    run_verify,
    stored_note,
    validated,
)
from ponder.errors import ConfigError, NotFoundError, RunError, UserError
from ponder.records import SamplingParams
from ponder.runs import (
    RunStats,
    SamplingReport,
    SystemRunReport,
    baseline_run,
    baseline_settings,
    is_system_spec,
    run_stats,
    system_run,
)
from ponder.store import ServerRequest, Store
from ponder.tasks import Task

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.records import Problem
    from ponder.systems import System, SystemResult

_RESUME_HINT = "the answers finished so far are stored: rerun the same command to resume"


# ----- loading the system -------------------------------------------------------------------------


def load_system(
    path: Path,
    *,
    model: str | None = None,
    backend: str = "llamacpp",
    base_url: str | list[str] | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    model_identity: str | None = None,
    model_map: list[str] | None = None,
    default_model: str | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    max_tokens: int | None = None,
    backend_factory: Callable[[BaseModel], Backend] | None = None,
) -> System:
    """The system in ``path`` with the command line's model and truncation flags; the rules that
    apply them live in :meth:`ponder.systems.System.load`."""
    from ponder.systems import ArchonImportWarning, System, parse_model_map

    if base_url is not None and backend == "llamacpp":
        raise ConfigError(
            "--base-url is for --backend openai", hint="drop it or add --backend openai"
        )
    if backend != "llamacpp" and model is None:
        raise ConfigError(f"--backend {backend} needs --model (the model the server serves)")
    target: str | dict[str, Any] | None = model
    if model is not None and backend != "llamacpp":
        target = {"backend": backend, "model": model}
        if base_url is not None:
            target["base_url"] = base_url
        if backend == "openai":
            target["api_key_env"] = api_key_env
            if model_identity is not None:
                target["identity"] = model_identity
    if model_identity is not None and backend != "openai":
        raise ConfigError(
            "--model-identity is for --backend openai", hint="drop it or add --backend openai"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ArchonImportWarning)
        system = System.load(
            path,
            model=target,
            default_model=default_model,
            model_map=parse_model_map(model_map or [], what="--model-map"),
            top_k=top_k,
            min_p=min_p,
            max_tokens=max_tokens,
            backend_factory=backend_factory,
        )
    for w in caught:
        if issubclass(w.category, ArchonImportWarning):
            err_console.print(f"[yellow]warning:[/] {w.message}", highlight=False)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return system


# ----- progress -------------------------------------------------------------------------------------


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("[progress.data.speed]{task.fields[usage]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=disable,
    )


async def _run_both(
    store: Store,
    system: System,
    task: Task,
    problems: list[Problem],
    *,
    concurrency: int,
    seed: int | None,
    baseline: bool,
    quiet: bool,
) -> tuple[SystemRunReport, SamplingReport | None]:
    """The system's answers, then the baseline's samples (one after the other, so their latencies
    are measured alone); the system's backends are closed in the same event loop."""
    try:
        with _progress(quiet) as progress:
            bar = progress.add_task(f"system {system.name}", total=len(problems), usage="")
            totals = {"calls": 0, "tokens": 0}

            def on_answer(result: SystemResult) -> None:
                totals["calls"] += result.usage.calls
                totals["tokens"] += result.usage.total_tokens
                progress.update(
                    bar, advance=1, usage=f"{totals['calls']} calls {totals['tokens']} tok"
                )

            try:
                report = await system_run(
                    store,
                    system,
                    task,
                    problems,
                    concurrency=concurrency,
                    seed=seed,
                    on_answer=on_answer,
                )
            except RunError as exc:
                # Only a failure that may pass gets the hint: a rejected request (a prompt longer
                # than the model's context, a bad option) fails the same way on every rerun.
                if not isinstance(exc, UserError):
                    exc.hint = exc.hint or _RESUME_HINT
                raise
            progress.update(bar, completed=len(problems))
            base = None
            if baseline:
                bbar = progress.add_task("baseline (1 greedy sample)", total=None, usage="")
                tokens = 0

                def on_sample(k: int, t: int) -> None:
                    nonlocal tokens
                    tokens += t
                    progress.update(bbar, advance=k, usage=f"{tokens} tok")

                progress.update(bbar, total=len(problems))
                base = await baseline_run(
                    store,
                    system,
                    task,
                    problems,
                    concurrency=concurrency,
                    on_progress=on_sample,
                )
                progress.update(bbar, completed=len(problems))
        return report, base
    finally:
        await system.aclose()


# ----- output -----------------------------------------------------------------------------------


def _num(x: float, digits: int = 1) -> str:
    return "-" if math.isnan(x) else f"{x:,.{digits}f}"


def _accuracy(s: RunStats) -> str:
    return f"{_num(s.accuracy, 3)} ({s.correct}/{s.problems})"


def comparison_table(system: RunStats, baseline: RunStats | None) -> Table:
    """System vs baseline: accuracy, calls, tokens and latency per problem."""
    table = Table(title="system vs single-sample baseline", title_justify="left")
    table.add_column("")
    table.add_column("system", justify="right")
    if baseline is not None:
        table.add_column("baseline", justify="right")
        table.add_column("system / baseline", justify="right")
    rows: list[tuple[str, Any]] = [
        ("calls / problem", lambda s: s.per_problem(s.calls)),
        ("prompt tokens / problem", lambda s: s.per_problem(s.prompt_tokens)),
        ("completion tokens / problem", lambda s: s.per_problem(s.completion_tokens)),
        ("latency / problem, mean (s)", lambda s: s.latency_mean_s),
        ("latency / problem, median (s)", lambda s: s.latency_median_s),
    ]

    def ratio(a: float, b: float) -> str:
        return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"

    acc = [_accuracy(system)]
    if baseline is not None:
        acc += [_accuracy(baseline), f"{system.correct - baseline.correct:+d} correct"]
    table.add_row("accuracy", *acc)
    table.add_row("run", system.run_id, *([baseline.run_id, ""] if baseline else []))
    for name, get in rows:
        digits = 2 if "latency" in name else 1
        cells = [_num(get(system), digits)]
        if baseline is not None:
            cells += [_num(get(baseline), digits), ratio(get(system), get(baseline))]
        table.add_row(name, *cells)
    return table


def component_table(stats: RunStats) -> Table:
    table = Table(title=f"usage per component ({stats.answered} queries)", title_justify="left")
    for col in ("component", "calls", "prompt tok", "completion tok", "wall s / query"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for c in stats.components:
        table.add_row(
            c.key,
            str(c.calls),
            f"{c.prompt_tokens:,}",
            f"{c.completion_tokens:,}",
            f"{c.wall_s / c.queries:.2f}" if c.queries else "-",
        )
    return table


# ----- ponder run ---------------------------------------------------------------------------------


def run(
    system_file: Annotated[
        Path,
        typer.Option(
            "--system",
            "-s",
            help="System config: Ponder YAML/JSON (see configs/), or an Archon JSON config.",
            show_default=False,
        ),
    ],
    task: Annotated[
        str,
        typer.Option(
            "--task",
            "-t",
            help="gsm8k, aime2025, jsonl, humaneval, gym:NAME, ... (`ponder tasks` lists them)",
        ),
    ] = "gsm8k",
    limit: LimitOpt = None,
    offset: OffsetOpt = 0,
    ids: IdsOpt = None,
    shuffle_seed: ShuffleSeedOpt = None,
    few_shot: FewShotOpt = None,
    data: DataOpt = None,
    task_option: TaskOptionOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Run the components that name no model on this model instead of the config's "
            "(registered name, .gguf path, or served model with --backend openai).",
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="Backend of --model: llamacpp (embedded), openai, or a plugin's.")
    ] = "llamacpp",
    base_url: BaseUrlOpt = None,
    api_key_env: Annotated[str, typer.Option(help="openai: env var holding the key.")] = (
        "OPENAI_API_KEY"
    ),
    model_identity: ModelIdentityOpt = None,
    model_map: Annotated[
        list[str] | None,
        typer.Option(
            "--model-map",
            help="Archon configs: map an Archon model to a local one, ARCHON=OURS, where OURS is "
            "a model name, .gguf path or JSON model spec (repeatable).",
        ),
    ] = None,
    default_model: Annotated[
        str | None,
        typer.Option(
            help="Archon configs: the model of every Archon model not mapped (a name, a .gguf "
            "path or a JSON model spec)."
        ),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            help="Every model call samples only from the k most likely tokens (0: off; default: "
            "each component's `top_k_tokens`, off unless set). " + TRUNCATION_NOTE,
            show_default=False,
        ),
    ] = None,
    min_p: Annotated[
        float | None,
        typer.Option(
            "--min-p",
            help="Every model call drops tokens less likely than min-p times the most likely one "
            "(0: off; default: each component's `min_p`, off unless set); see --top-k.",
            show_default=False,
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            help="Cap every model call at this many completion tokens (each token limit of the "
            "config above it is lowered; the baseline's too): a quick try of a config on a slow "
            "machine. Part of the run's identity: a capped run is a run of its own.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="Queries (and baseline requests) in flight.")
    ] = 4,
    seed: Annotated[
        int | None, typer.Option(help="System seed (default: the config's `seed`).")
    ] = None,
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline/--no-baseline",
            help="Also draw (or reuse) one greedy sample per problem from the system's first "
            "generate model, and compare.",
        ),
    ] = True,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_actors: RayActorsOpt = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    """Run a composed system on a task's problems (resumable), verify its answers, compare them with
    one greedy sample per problem, and report accuracy, calls, tokens and latency."""
    with reported_errors(verbose), ExitStack() as stack:
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
        if seed is not None and not 0 <= seed < 2**31:
            raise ConfigError(f"--seed must be in [0, 2**31), got {seed}")
        # The same bounds as `ponder sample` (the config fields have them too).
        validated(
            SamplingParams,
            {"top_k": "--top-k", "min_p": "--min-p"},
            top_k=top_k or 0,
            min_p=min_p or 0.0,
        )
        if max_tokens is not None and max_tokens < 1:
            raise ConfigError(
                f"--max-tokens must be >= 1, got {max_tokens}",
                hint="give a positive cap, e.g. --max-tokens 64, or leave it out",
            )
        the_task = build_task(task, data, None, None, None, few_shot, task_option)
        problems = choose_problems(the_task, limit, offset, ids, shuffle_seed)
        if not problems:
            raise ConfigError("no problems selected", hint="check --limit/--offset/--ids")
        ex = stack.enter_context(open_executor(executor, ray_address, ray_actors))
        the_system = load_system(
            system_file,
            model=model,
            backend=backend,
            base_url=base_urls(base_url),
            api_key_env=api_key_env,
            model_identity=model_identity,
            model_map=model_map,
            default_model=default_model,
            top_k=top_k,
            min_p=min_p,
            max_tokens=max_tokens,
            backend_factory=ex.backend,
        )
        describe = the_system.config.describe()
        base_params = baseline_settings(the_system)[1]
        with open_store(db) as store, ex.verifier(the_task.verifier) as verifier:
            report, base = asyncio.run(
                _run_both(
                    store,
                    the_system,
                    the_task,
                    problems,
                    concurrency=concurrency,
                    seed=seed,
                    baseline=baseline,
                    quiet=json_out,
                )
            )
            verification = {
                "system": run_verify(store, report.run_id, verifier, force=False, quiet=json_out)
            }
            if base is not None:
                verification["baseline"] = run_verify(
                    store, base.run_id, verifier, force=False, quiet=json_out
                )
            ids_ = [p.id for p in problems]
            sys_stats = run_stats(store, report.run_id, ids_, verifier.name)
            base_stats = (
                run_stats(store, base.run_id, ids_, verifier.name) if base is not None else None
            )
        base_model = base_stats.model if base_stats is not None else None
        if json_out:
            emit_json(
                {
                    "system": {
                        "name": the_system.name,
                        "describe": describe,
                        **sys_stats.as_json(),
                        "this_call": asdict(report),
                    },
                    "baseline": None
                    if base is None or base_stats is None
                    else {
                        "model": base_model,
                        "params": base_params.model_dump(mode="json"),
                        **base_stats.as_json(),
                        "this_call": asdict(base),
                    },
                    "verifier": verifier.name,
                    "verification": verification,
                }
            )
            return
        console.print(f"system [bold]{the_system.name}[/]: {describe}", highlight=False)
        console.print(
            f"run [bold]{report.run_id}[/]: {report.answered} new answers "
            f"{stored_note(report.already_present, report.answered_elsewhere, 'answered')} "
            f"for {report.problems} problems in "
            f"{report.wall_s:.1f}s; {report.calls} calls, {report.prompt_tokens:,} prompt + "
            f"{report.completion_tokens:,} completion tokens"
        )
        if base is not None:
            console.print(
                f"baseline run [bold]{base.run_id}[/]: 1 greedy sample per problem from "
                f"{base_model} (max_tokens {base_params.max_tokens}); {base.drawn} new "
                f"{stored_note(base.already_present, base.drawn_elsewhere, 'drawn')}"
            )
        console.print(comparison_table(sys_stats, base_stats))
        if sys_stats.components:
            console.print(component_table(sys_stats))
        console.print(
            f"see how an answer was made: [bold]ponder trace {report.run_id} {problems[0].id}[/]"
            " (--text for prompts and outputs)",
            highlight=False,
        )


# ----- ponder trace -------------------------------------------------------------------------------


def _served_request(store: Store, ref: str) -> ServerRequest | None:
    """The served request with trace id ``ref``, if there is one."""
    try:
        return store.server_request(ref)
    except NotFoundError:
        return None


def _show_served(
    record: ServerRequest, *, text: bool, width: int, shape: tuple[int, int], json_out: bool
) -> None:
    from ponder.systems import trace_tree

    if json_out:
        emit_json(record.model_dump(mode="json"))
        return
    what = f"system {record.system}" if record.system else "pass-through"
    console.print(
        f"served request [bold]{record.id}[/]: {record.endpoint} model {record.model!r} ({what}), "
        f"status {record.status}, {record.latency_s:.2f}s; {record.calls} calls, "
        f"{record.prompt_tokens:,} prompt + {record.completion_tokens:,} completion tokens",
        highlight=False,
    )
    if record.error:
        console.print(f"error: {record.error}", highlight=False)
    trace = record.parsed_trace()
    if trace is not None:
        console.print(
            trace_tree(
                trace, show_text=text, width=width, tree_children=shape[0], tree_depth=shape[1]
            )
        )
    elif record.response:
        for choice in record.response.get("choices", []):
            message = choice.get("message") or {}
            shown = choice.get("text", message.get("content")) or ""
            console.print(
                f"choice {choice.get('index', 0)} ({choice.get('finish_reason')}): "
                f"{shown[:width]!r}",
                highlight=False,
            )


def trace(
    run_ref: Annotated[
        str,
        typer.Argument(
            metavar="RUN", help="A system run's id (or a unique prefix); see `ponder runs`."
        ),
    ],
    problem: Annotated[
        str | None,
        typer.Argument(
            metavar="PROBLEM", help="Problem id, e.g. gsm8k/3; omit it to list the run's traces."
        ),
    ] = None,
    text: Annotated[
        bool, typer.Option("--text", help="Show each call's prompt and outputs (shortened).")
    ] = False,
    width: Annotated[
        int, typer.Option(help="Characters of text shown per prompt/output/search step.")
    ] = 100,
    tree_children: Annotated[
        int,
        typer.Option(
            help="Search trees: children shown per node, best first (the winning path always)."
        ),
    ] = 4,
    tree_depth: Annotated[
        int,
        typer.Option(
            help="Search trees: levels shown (deeper nodes counted, bar the winning path)."
        ),
    ] = 4,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show how a system run answered a problem: layers, components, calls, usage (a tree).

    `ponder trace RUN` lists the run's traces; `ponder trace RUN PROBLEM` shows one; `--json` prints
    the trace itself (or the list). `ponder trace TRACE_ID` shows a request served by `ponder serve`
    (the id of its X-Ponder-Trace-Id header). A tree search component (beam search, MCTS, ...)
    shows its search tree, the winning path marked ★; `--json` has every node.
    """
    from ponder.systems import trace_tree

    with reported_errors(), open_store(db) as store:
        if width < 10:
            raise UserError(f"--width must be >= 10, got {width}")
        if tree_children < 1 or tree_depth < 1:
            raise UserError(
                f"--tree-children and --tree-depth must be >= 1, got {tree_children} and "
                f"{tree_depth}",
                hint="every node of a search tree is in: ponder trace RUN PROBLEM --json",
            )
        shape = (tree_children, tree_depth)
        served = _served_request(store, run_ref)
        if served is not None:
            if problem is not None:
                raise UserError(f"{run_ref} is a served request: it has no problems")
            _show_served(served, text=text, width=width, shape=shape, json_out=json_out)
            return
        info = store.get_run(run_ref)
        if not is_system_spec(info.spec):
            raise UserError(
                f"run {info.id} is a sampling run ({info.spec.model}); it has no traces",
                hint="traces are stored by `ponder run --system FILE`; list runs with: ponder runs",
            )
        verifier = run_verifier(store, info.id, need_verdicts=False)
        verdicts = store.verdicts(info.id, verifier)
        rows = store.trace_rows(info.id)
        if problem is None:
            listing = [
                {
                    **asdict(r),
                    "verdict": verdicts[r.sample_id].status if r.sample_id in verdicts else None,
                }
                for r in rows
            ]
            if json_out:
                emit_json({"run": info.id, "traces": listing})
                return
            table = Table(title=f"traces of run {info.id}", title_justify="left")
            for col in ("problem", "sample", "verdict", "calls", "prompt tok", "compl. tok", "s"):
                table.add_column(col, justify="left" if col in ("problem", "verdict") else "right")
            for item in listing:
                table.add_row(
                    item["problem_id"],
                    str(item["sample_id"]),
                    item["verdict"] or "-",
                    str(item["calls"]),
                    f"{item['prompt_tokens']:,}",
                    f"{item['completion_tokens']:,}",
                    f"{item['wall_s']:.2f}",
                )
            console.print(table)
            if listing:
                console.print(
                    f"show one: ponder trace {info.id} {listing[0]['problem_id']}",
                    highlight=False,
                )
            return
        row = next((r for r in rows if r.problem_id == problem), None)
        if row is None:
            known = [p.id for p in store.problems(info.id)]
            if problem in known:
                raise NotFoundError(
                    f"problem {problem!r} of run {info.id} has no answer yet",
                    hint="finish the run by rerunning its `ponder run` command",
                )
            shown = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "")
            raise NotFoundError(
                f"run {info.id} has no problem {problem!r} (it has: {shown or 'none'})",
                hint=f"list them with: ponder trace {info.id}",
            )
        the_trace = store.trace(row.sample_id)
        if json_out:
            emit_json(the_trace.model_dump(mode="json"))
            return
        console.print(
            trace_tree(
                the_trace,
                show_text=text,
                width=width,
                tree_children=tree_children,
                tree_depth=tree_depth,
            )
        )
        verdict = verdicts.get(row.sample_id)
        if verdict is not None:
            reference = next(
                (p.reference for p in store.problems(info.id) if p.id == problem), None
            )
            console.print(
                f"verdict ({verifier}): [bold]{verdict.status}[/]"
                + (f", extracted {verdict.extracted!r}" if verdict.extracted is not None else "")
                + (f", reference {reference!r}" if reference is not None else ""),
                highlight=False,
            )
        table = Table(title="usage per component", title_justify="left")
        for col in ("component", "calls", "prompt tok", "completion tok", "wall s"):
            table.add_column(col, justify="left" if col == "component" else "right")
        for key, u in the_trace.usage_by_component.items():
            table.add_row(
                key, str(u.calls), str(u.prompt_tokens), str(u.completion_tokens), f"{u.wall_s:.2f}"
            )
        u = the_trace.usage
        table.add_row(
            "[bold]query[/]",
            str(u.calls),
            str(u.prompt_tokens),
            str(u.completion_tokens),
            f"{u.wall_s:.2f}",
        )
        console.print(table)
