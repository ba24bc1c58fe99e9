"""What every experiment shares: its command line, drawing runs through Ponder's resumable sampler,
reading them back as reports, and writing markdown tables and HTML reports.

Every run is drawn with :func:`ponder.runs.sample_run`, which draws only the samples a run lacks: a rerun
resumes where a killed one stopped, and a larger ``--n`` or ``--problems`` extends the same runs (a run is
identified by model, task and sampling parameters, not by how many samples it holds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ponder.analysis import (
    ProblemSamples,
    RunData,
    RunReport,
    ScoreSource,
    build_report,
    load_run,
)
from ponder.backends import LlamaCppBackend, LlamaCppConfig
from ponder.errors import PonderError, UserError
from ponder.records import Problem, SamplingParams
from ponder.runs import sample_run, verify_run
from ponder.store import Store
from ponder.tasks import Task, get_task, select_problems
from ponder.verify import make_verifier

DEFAULT_DB = Path("~/.cache/ponder/experiments.db")
"""Outside the repository: the long runs' samples outlive checkouts and are never committed."""
RESULTS = Path(__file__).resolve().parent / "results"
"""Git-ignored; each experiment writes into its own folder below it unless --out says otherwise."""


def parser(
    name: str,
    doc: str | None,
    *,
    problems: int,
    n: int,
    tasks: Sequence[str],
    models: Sequence[str] = ("smollm2-135m",),
    max_tokens: int = 128,
    temperature: float = 0.7,
) -> argparse.ArgumentParser:
    """The command line every experiment shares; ``problems``, ``n``, ... are the experiment's defaults."""
    p = argparse.ArgumentParser(
        prog=f"python experiments/{name}.py",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--db",
        type=Path,
        default=Path(os.environ.get("PONDER_EXPERIMENTS_DB", DEFAULT_DB)).expanduser(),
        help="SQLite store of the runs (default: $PONDER_EXPERIMENTS_DB or %(default)s)",
    )
    p.add_argument(
        "--out", type=Path, default=RESULTS / name, help="results folder (default: %(default)s)"
    )
    p.add_argument("--problems", type=int, default=problems, help="problems per run")
    p.add_argument("--n", type=int, default=n, help="samples per problem (K)")
    p.add_argument(
        "--model",
        action="append",
        help=f"registered model or .gguf path, repeatable (default: {', '.join(models)})",
    )
    p.add_argument(
        "--task",
        action="append",
        help=f"task, e.g. gym:chain_sum or gsm8k, repeatable (default: {', '.join(tasks)})",
    )
    p.add_argument(
        "-T",
        "--task-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option for every task, repeatable (as ponder sample -T)",
    )
    p.add_argument("--max-tokens", type=int, default=max_tokens)
    p.add_argument("--temperature", type=float, default=temperature)
    p.add_argument("--seed", type=int, default=0, help="base sampling seed")
    p.add_argument("--parallel", type=int, default=16, help="sequences decoded together")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument(
        "--logprobs",
        choices=("model", "sampling", "off"),
        default="model",
        help="token log-probabilities kept per sample (best-of-k ranks by their mean); "
        "not part of a run's identity, so keep one choice for all of a run's samples",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the bands")
    p.add_argument("--subsets", type=int, default=100, help="random k-subsets for selection@k")
    p.set_defaults(default_models=list(models), default_tasks=list(tasks))
    return p


def parse_args(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = p.parse_args(argv)
    args.model = args.model or args.default_models
    args.task = args.task or args.default_tasks
    if args.problems < 1 or args.n < 1:
        p.error("--problems and --n must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    return args


def task_options(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value that parses as JSON (``3``, ``true``) is taken as such."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: task option {item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@dataclass(frozen=True)
class Cell:
    """One run to draw: a model, a task, samples per problem and sampling parameters."""

    model: str
    task: str
    n: int
    params: SamplingParams
    label: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Drawn:
    cell: Cell
    run_id: str
    problem_ids: tuple[str, ...]
    """The problems this experiment asked for (the run may hold more, from a larger --problems)."""
    drawn: int
    """Samples this invocation drew (0 when the run was already complete)."""
    completion_tokens: int
    wall_s: float
    """Sampling wall time of this invocation."""


def params_of(args: argparse.Namespace, **override: Any) -> SamplingParams:
    values = {
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        **override,
    }
    return SamplingParams(**values)


def task_model_cells(args: argparse.Namespace) -> list[Cell]:
    """One cell per (task, model) of the command line, at its sampling parameters and ``--n``."""
    options = task_options(args.task_option)
    return [
        Cell(model, task, args.n, params_of(args), f"{task} / {model}", options)
        for task in args.task
        for model in args.model
    ]


def _problems(task: Task, count: int) -> list[Problem]:
    return select_problems(task.problems(), limit=count)


def draw(args: argparse.Namespace, store: Store, cells: Sequence[Cell]) -> list[Drawn]:
    """Make every cell's run hold ``args.problems`` x ``cell.n`` verified samples (only missing ones
    are drawn), one engine per model; prints one progress line per run."""
    out: dict[int, Drawn] = {}
    by_model: dict[str, list[int]] = {}
    for i, c in enumerate(cells):
        by_model.setdefault(c.model, []).append(i)
    for model, idx in by_model.items():
        config = LlamaCppConfig(
            model=model,
            n_parallel=args.parallel,
            threads=args.threads,
            logprobs=args.logprobs,
        )
        backend = LlamaCppBackend(config)
        try:
            for i in idx:
                c = cells[i]
                task = get_task(c.task, **c.options)
                problems = _problems(task, args.problems)
                log(f"{c.label or c.task}: {model}, {len(problems)} problems x {c.n} samples ...")
                rep = asyncio.run(
                    sample_run(store, backend, task, problems, c.n, c.params, batch=min(c.n, 16))
                )
                with make_verifier(task.verifier) as verifier:
                    verify_run(store, rep.run_id, verifier)
                rate = rep.drawn / rep.wall_s if rep.drawn and rep.wall_s > 0 else math.nan
                log(
                    f"  run {rep.run_id}: drew {rep.drawn} ({rep.already_present} already stored) in "
                    f"{rep.wall_s:.1f}s, {rep.completion_tokens} completion tokens"
                    + (f", {rate:.2f} samples/s" if rep.drawn else "")
                )
                out[i] = Drawn(
                    c,
                    rep.run_id,
                    tuple(p.id for p in problems),
                    rep.drawn,
                    rep.completion_tokens,
                    rep.wall_s,
                )
        finally:
            backend.close()
    return [out[i] for i in range(len(cells))]


def restrict(data: RunData, problem_ids: Sequence[str], n: int) -> RunData:
    """The run as this experiment asked for it: only ``problem_ids``, and each problem's first ``n``
    verified samples (a run extended by a larger --n or --problems holds more)."""
    keep = set(problem_ids)

    def first(p: ProblemSamples) -> ProblemSamples:
        return replace(
            p,
            correct=p.correct[:n],
            answers=p.answers[:n],
            scores=p.scores[:n],
            completion_tokens=p.completion_tokens[:n],
            prompt_tokens=p.prompt_tokens[:n],
            latency_s=p.latency_s[:n],
            texts=p.texts[:n],
        )

    return replace(data, problems=[first(p) for p in data.problems if p.problem_id in keep])


def run_data(store: Store, d: Drawn, *, scores: ScoreSource = "auto") -> RunData:
    """The verified samples of a drawn cell, restricted to what the experiment asked for."""
    return restrict(load_run(store, d.run_id, scores=scores), d.problem_ids, d.cell.n)


def report(
    args: argparse.Namespace,
    store: Store,
    d: Drawn,
    *,
    scores: ScoreSource = "auto",
    holdout: int = 2,
) -> RunReport:
    """The report of a drawn cell (every estimate uses verified samples only)."""
    return build_report(
        run_data(store, d, scores=scores),
        bootstrap=args.bootstrap,
        subsets=args.subsets,
        holdout=holdout,
    )


@contextmanager
def opened(args: argparse.Namespace) -> Iterator[Store]:
    with Store(args.db) as store:
        yield store


def doubling_grid(k_max: int) -> list[int]:
    """1, 2, 4, ... up to ``k_max`` (and ``k_max`` itself when it is not a power of two)."""
    ks = [1 << i for i in range(k_max.bit_length()) if 1 << i <= k_max]
    return ks if ks[-1] == k_max else [*ks, k_max]


def pct(x: float | None, digits: int = 1) -> str:
    """A share as percent, or an en dash when undefined."""
    if x is None or (isinstance(x, float | np.floating) and math.isnan(x)):
        return "–"
    return f"{100 * float(x):.{digits}f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    line = "| " + " | ".join(headers) + " |"
    rule = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join([line, rule, *body])


def write_results(
    args: argparse.Namespace, name: str, title: str, sections: Sequence[tuple[str, str]]
) -> Path:
    """Write ``OUT/NAME.md`` (a title, the command line, then each (heading, body) section) and echo it."""
    argv = " ".join(sys.argv[1:])
    text = "\n\n".join(
        [
            f"# {title}",
            f"`python experiments/{name}.py {argv}`".replace(" `", "`"),
            f"Written {time.strftime('%Y-%m-%d %H:%M')}; database {args.db}.",
            *(f"## {h}\n\n{b}" for h, b in sections),
        ]
    )
    path = args.out / f"{name}.md"
    path.write_text(text + "\n", "utf-8")
    print(text)
    log(f"wrote {path}")
    return path


def write_html(
    args: argparse.Namespace, filename: str, reports: Sequence[RunReport], **kwargs: Any
) -> Path:
    """The report's HTML of runs of one task, side by side."""
    from ponder.analysis import render_html

    path = args.out / filename
    path.write_text(render_html(reports, samples_per_problem=5, **kwargs), "utf-8")
    log(f"wrote {path}")
    return path


def by_task(items: Sequence[tuple[str, RunReport]]) -> dict[str, list[RunReport]]:
    """Reports grouped by task (only runs of one task share a report's axes)."""
    groups: dict[str, list[RunReport]] = {}
    for task, r in items:
        groups.setdefault(task, []).append(r)
    return groups


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(run: Any) -> None:
    """Run an experiment's body; a Ponder error is printed as the CLI prints it, exit code 2 or 1."""
    try:
        run()
    except PonderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, UserError) else 1)
