"""What the CLI's command modules share: consoles, options, errors, JSON, progress bars, tables,
and the small steps several commands take (build a task, pick problems, verify, summarise a run).

Command modules import from here and never from each other.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Task as ProgressTask
from rich.table import Table
from rich.text import Text

from ponder.analysis import RunSummaryStats, run_tallies, summarize_tallies
from ponder.errors import ConfigError, PonderError, UserError
from ponder.executors import Executor
from ponder.records import Problem
from ponder.runs import verify_run
from ponder.store import Store, default_db_path
from ponder.tasks import Task, get_task, select_problems
from ponder.verify import Verifier

console = Console()
err_console = Console(stderr=True)

# ----- options shared by several commands ---------------------------------------------------------

DbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="SQLite database file (default: $PONDER_DB, else ./ponder.db).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
VerifierOpt = Annotated[
    str | None,
    typer.Option(
        help="Whose verdicts to use (default: the verifier the run's task declares, if it has "
        "verdicts, else the first verifier by name that has)."
    ),
]
RunArg = Annotated[str, typer.Argument(help="Run id (or a unique prefix); see `ponder runs`.")]

# Choosing a task's problems (`ponder sample`, `ponder run`).
LimitOpt = Annotated[int | None, typer.Option(help="Use at most this many problems.")]
OffsetOpt = Annotated[int, typer.Option(help="Skip this many problems first.")]
IdsOpt = Annotated[
    str | None, typer.Option(help="Comma-separated problem ids, e.g. gsm8k/0,gsm8k/5.")
]
ShuffleSeedOpt = Annotated[
    int | None, typer.Option(help="Shuffle problems with this seed before offset/limit.")
]
FewShotOpt = Annotated[int | None, typer.Option(help="Few-shot examples in the prompt.")]
DataOpt = Annotated[
    Path | None, typer.Option(help="Data file for --task jsonl, jsonl-code or mbpp.")
]
TaskOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--task-option",
        "-T",
        help="Any task option as KEY=VALUE (repeatable), e.g. -T test_field=tests.",
    ),
]

TRUNCATION_NOTE = (
    "Off by default, so that a temperature samples the model's whole distribution, as vLLM and "
    "OpenAI do. Truncation (cutting the unlikely tail) helps small models: Qwen2.5 0.5B on GSM8K "
    "problems 0-11 x 16 samples at temperature 0.8 scored pass@1 0.104 and majority@16 0.257 "
    "without it, 0.151 and 0.417 with --top-k 40 --min-p 0.05 --top-p 0.95 (llama.cpp's usual "
    "settings), at the same coverage@16 (0.583). Part of the run's identity: a new value is a new "
    "run. With --backend openai it is sent only when set (vLLM, SGLang and llama.cpp servers "
    "accept it; hosted APIs may not)."
)
TopKOpt = Annotated[
    int,
    typer.Option(
        "--top-k",
        help="Sample only from the k most likely tokens (0: off). " + TRUNCATION_NOTE,
    ),
]
MinPOpt = Annotated[
    float,
    typer.Option(
        "--min-p",
        help="Drop tokens less likely than min-p times the most likely one (0: off); see --top-k.",
    ),
]
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--base-url",
        metavar="URL",
        help="openai: server URL. Repeat it for replicas of the same model: requests go to the "
        "least busy, a failing one is skipped for a while; the run is the same whatever the count.",
    ),
]


ModelIdentityOpt = Annotated[
    str | None,
    typer.Option(
        help="openai: how runs name the model. model (default): its name, not the URLs, so "
        "any number of --base-url replicas make the same run; url: its one URL too, the rule "
        "of runs stored before replicas (to extend them).",
        show_default=False,
    ),
]
ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where requests and verification run: local (this process) or ray (actors on a "
        "Ray cluster, `pip install 'ponder\\[ray]'`); the run and its samples are the same.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="HOST:PORT",
        help="--executor ray: the cluster's head (as `ray start --head` prints it); default: a "
        "local Ray on 127.0.0.1, started for this command and shut down after it.",
        show_default=False,
    ),
]
RayActorsOpt = Annotated[
    int | None,
    typer.Option(
        "--ray-actors",
        help="--executor ray: actors per model, one request each at a time (default: one per "
        "node, its engine using all the node's CPUs).",
        show_default=False,
    ),
]


def open_executor(kind: str, ray_address: str | None, ray_actors: int | None) -> Executor:
    """The executor of ``--executor`` with its flags (close it after use).

    Raises:
        ConfigError: a flag of another executor, or an unknown one.
    """
    from ponder.executors import create_executor, executor_config_type

    if kind != "ray":
        given = [f for f, v in (("--ray-address", ray_address), ("--ray-actors", ray_actors)) if v]
        if given:
            raise ConfigError(
                f"{', '.join(given)} only apply to --executor ray",
                hint="add --executor ray, or drop them",
            )
        return create_executor(executor_config_type(kind)(kind=kind))
    config = validated(
        executor_config_type("ray"),
        {"address": "--ray-address", "actors": "--ray-actors"},
        kind="ray",
        address=ray_address,
        actors=ray_actors,
    )
    return create_executor(config)


def base_urls(values: list[str] | None) -> str | list[str] | None:
    """The ``base_url`` of a config from repeated ``--base-url`` flags (one URL stays a string)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


M = TypeVar("M", bound=BaseModel)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )


def open_store(db: Path | None) -> Store:
    return Store(db if db is not None else default_db_path())


def stored_note(already: int, elsewhere: int, made: str) -> str:
    """``(N already stored[, M <made> meanwhile by another process])``: what a run held before
    this command and what other processes on the same run added while it ran."""
    meanwhile = f", {elsewhere} {made} meanwhile by another process" if elsewhere else ""
    return f"({already} already stored{meanwhile})"


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def validated(config_type: type[M], flags: dict[str, str], /, **values: Any) -> M:
    """Build a pydantic model from CLI values; a validation error names the offending flag."""
    try:
        return config_type(**values)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            field = str(e["loc"][0]) if e["loc"] else "?"
            flag = flags.get(field, field)
            # Never echo what was typed for a key-related field: it may be the secret itself.
            shown = "" if "key" in field else f"={e.get('input')!r}"
            problems.append(f"{flag}{shown}: {e['msg']}")
        raise ConfigError(
            "invalid " + "; ".join(problems), hint="fix the value(s) and rerun"
        ) from None


@contextmanager
def reported_errors(verbose: bool = False) -> Iterator[None]:
    """How every command runs: logging set up (INFO with ``verbose``, else WARNING), and Ponder
    errors turned into a clear message and exit code (2: user error, 1: run error)."""
    _setup_logging(verbose)
    try:
        yield
    except PonderError as exc:
        kind = "error" if isinstance(exc, UserError) else "run failed"
        # Messages are plain text: brackets in them (`ponder[ray]`, a list) are not markup.
        err_console.print(f"[bold red]{kind}:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            err_console.print(f"  [yellow]hint:[/] {escape(exc.hint)}", highlight=False)
        if exc.__cause__ is not None and not isinstance(exc, UserError):
            err_console.print(f"  cause: {escape(repr(exc.__cause__))}", highlight=False)
        raise typer.Exit(2 if isinstance(exc, UserError) else 1) from None


# ----- tasks and problems -------------------------------------------------------------------------


def build_task(
    name: str,
    data: Path | None,
    question_field: str | None,
    answer_field: str | None,
    id_field: str | None,
    few_shot: int | None,
    task_options: list[str] | None = None,
) -> Task:
    options: dict[str, Any] = parse_task_options(task_options or [])
    if data is not None:
        options["path"] = data
    if question_field is not None:
        options["question_field"] = question_field
    if answer_field is not None:
        options["answer_field"] = answer_field
    if id_field is not None:
        options["id_field"] = id_field
    if few_shot is not None:
        options["few_shot"] = few_shot
    return get_task(name, **options)


def parse_task_options(items: list[str]) -> dict[str, Any]:
    """``-T key=value`` pairs as task options; a value that parses as JSON (``3``, ``true``,
    ``null``) is taken as such, anything else as a string."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"-T/--task-option expects KEY=VALUE, got {item!r}",
                hint="e.g. -T prompt_field=question -T id_field=task_id",
            )
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def choose_problems(
    task: Task, limit: int | None, offset: int, ids: str | None, shuffle_seed: int | None
) -> list[Problem]:
    """The problems named by --limit/--offset/--ids/--shuffle-seed (``ids`` comma-separated)."""
    return select_problems(
        task.problems(),
        limit=limit,
        offset=offset,
        ids=[i.strip() for i in ids.split(",") if i.strip()] if ids else None,
        shuffle_seed=shuffle_seed,
    )


# ----- verification and the run summary -----------------------------------------------------------


def run_verify(
    store: Store, run_id: str, verifier: Verifier, *, force: bool, quiet: bool
) -> dict[str, Any]:
    todo = len(store.unverified(run_id, verifier.name, force=force))
    with simple_progress(disable=quiet or todo == 0) as progress:
        bar = progress.add_task(f"verify ({verifier.name})", total=todo)
        report = verify_run(
            store, run_id, verifier, force=force, on_progress=lambda k: progress.advance(bar, k)
        )
    return asdict(report)


def run_summary(store: Store, run_id: str, verifier: str) -> RunSummaryStats:
    return summarize_tallies(run_tallies(store, run_id, verifier))


def summary_json(store: Store, run_id: str, verifier: str) -> dict[str, Any]:
    """The run summary as JSON: per k, ``coverage`` (mean unbiased pass@k, as in the report) and
    ``solved_by_first_k`` (the share of problems solved by their first k samples)."""
    data = asdict(run_summary(store, run_id, verifier))
    # JSON has no NaN: undefined estimates are null.
    for p in data["points"]:
        for key in ("coverage", "solved_by_first_k"):
            if p[key] != p[key]:
                p[key] = None
    return {"run": run_id, "verifier": verifier, **data}


def print_summary(store: Store, run_id: str, verifier: str) -> None:
    s = run_summary(store, run_id, verifier)
    console.print(
        f"{s.problems} problems, {s.verified} verified samples ({s.correct} correct, "
        f"{s.unparsed} unparsed, {s.errors} errors); {s.completion_tokens} completion tokens"
    )
    if s.points:
        console.print(summary_table(f"run {run_id} ({verifier})", s))
        console.print(
            "coverage@k: the mean over problems of the unbiased pass@k (as in `ponder report`); "
            "solved by first k: the share of problems with a correct answer among their first k "
            "samples",
            style="dim",
            highlight=False,
        )
    else:
        console.print("no problem has a verified sample yet")


# ----- rendering ----------------------------------------------------------------------------------


class _RateColumn(ProgressColumn):
    """Samples/s and tokens/s since the task started (tokens are kept in the task's fields)."""

    def render(self, task: ProgressTask) -> Text:
        elapsed = task.elapsed or 0.0
        if elapsed <= 0:
            return Text("-- samples/s  -- tok/s", style="progress.data.speed")
        tokens = float(task.fields.get("tokens", 0))
        return Text(
            f"{task.completed / elapsed:.2f} samples/s {tokens / elapsed:.1f} tok/s",
            style="progress.data.speed",
        )


def sampling_progress(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=disable,
        transient=False,
    )


def simple_progress(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=disable,
    )


def fmt(x: float) -> str:
    return "undefined" if math.isnan(x) else f"{x:.3f}"


def summary_table(title: str, stats: RunSummaryStats) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("k", justify="right")
    table.add_column("coverage@k", justify="right")
    table.add_column("solved by first k", justify="right")
    for p in stats.points:
        table.add_row(str(p.k), fmt(p.coverage), fmt(p.solved_by_first_k))
    return table
