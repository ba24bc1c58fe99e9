"""`ponder sample` and `ponder verify`."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from ponder.backends import Backend, backend_config_type, create_backend
from ponder.cli._common import (
    DbOpt,
    JsonOpt,
    RunArg,
    console,
    emit_json,
    open_store,
    reported_errors,
    setup_logging,
    validated,
)
from ponder.cli._render import sampling_progress, simple_progress
from ponder.cli._report import print_summary, summary_json
from ponder.errors import ConfigError
from ponder.models import DEFAULT_MODEL
from ponder.records import SamplingParams
from ponder.runs import sample_run, verify_run
from ponder.store import RunSpec, Store, run_spec
from ponder.tasks import Task, get_task, select_problems, with_task_stop
from ponder.verify import Verifier, make_verifier

_PARAM_FLAGS = {
    "temperature": "--temperature",
    "top_p": "--top-p",
    "max_tokens": "--max-tokens",
    "stop": "--stop",
    "seed": "--seed",
}


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


# Backend options on the command line: flag -> the config fields it may set, first match wins.
_BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "--model": ("model",),
    "--base-url": ("base_url",),
    "--api-key-env": ("api_key_env",),
    "--n-mode": ("n_mode",),
    "--concurrency": ("max_concurrency",),
    "--parallel": ("n_parallel", "max_batch"),
    "--verbose": ("verbose",),
}


def build_backend(
    kind: str,
    model: str,
    base_url: str | None,
    api_key_env: str,
    n_mode: str,
    concurrency: int | None,
    parallel: int,
    verbose: bool,
) -> Backend:
    """The backend ``kind`` (any registered kind, plugins included) built from the CLI flags.

    Each flag sets the field of the backend's config it names, where the config has one; a flag
    given explicitly (``--base-url``) that the backend does not take is an error.
    """
    config_type = backend_config_type(kind)
    fields = config_type.model_fields
    given = {
        "--model": model,
        "--base-url": base_url,
        "--api-key-env": api_key_env,
        "--n-mode": n_mode,
        "--concurrency": concurrency,
        "--parallel": parallel,
        "--verbose": verbose,
    }
    values: dict[str, Any] = {"kind": kind}
    flags: dict[str, str] = {}
    for flag, value in given.items():
        field = next((f for f in _BACKEND_OPTIONS[flag] if f in fields), None)
        if field is None and flag == "--base-url" and value is not None:
            raise ConfigError(
                f"--base-url does not apply to --backend {kind}",
                hint="drop it, or choose a backend that takes a server URL (e.g. --backend openai)",
            )
        if field is not None and value is not None:
            values[field] = value
            flags[field] = flag
    for name, info in fields.items():
        if info.is_required() and name not in values:
            needed = next((f for f, names in _BACKEND_OPTIONS.items() if name in names), name)
            raise ConfigError(
                f"--backend {kind} needs {needed}",
                hint="e.g. --base-url http://127.0.0.1:8000/v1" if needed == "--base-url" else None,
            )
    return create_backend(validated(config_type, flags, **values))


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


def sample(
    task: Annotated[
        str,
        typer.Option(
            "--task", "-t", help="gsm8k, aime2025, jsonl, humaneval, jsonl-code, mbpp, ..."
        ),
    ] = "gsm8k",
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="Registered model name, .gguf path, or served model."),
    ] = DEFAULT_MODEL,
    n: Annotated[int, typer.Option("--n", "-n", help="Samples per problem.")] = 8,
    limit: Annotated[int | None, typer.Option(help="Use at most this many problems.")] = None,
    offset: Annotated[int, typer.Option(help="Skip this many problems first.")] = 0,
    ids: Annotated[
        str | None, typer.Option(help="Comma-separated problem ids, e.g. gsm8k/0,gsm8k/5.")
    ] = None,
    shuffle_seed: Annotated[
        int | None, typer.Option(help="Shuffle problems with this seed before offset/limit.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Max completion tokens per sample.")] = 512,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Base seed; each request derives its own.")] = 0,
    few_shot: Annotated[int | None, typer.Option(help="Few-shot examples in the prompt.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Data file for --task jsonl, jsonl-code or mbpp.")
    ] = None,
    question_field: Annotated[str | None, typer.Option(help="jsonl: question field.")] = None,
    answer_field: Annotated[str | None, typer.Option(help="jsonl: answer field.")] = None,
    id_field: Annotated[str | None, typer.Option(help="jsonl: id field.")] = None,
    task_option: Annotated[
        list[str] | None,
        typer.Option(
            "--task-option",
            "-T",
            help="Any task option as KEY=VALUE (repeatable), e.g. -T test_field=tests.",
        ),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="llamacpp (embedded), openai (any compatible server), or a backend an installed "
            "plugin adds (`ponder models` lists them all)."
        ),
    ] = "llamacpp",
    base_url: Annotated[str | None, typer.Option(help="openai: server URL.")] = None,
    api_key_env: Annotated[str, typer.Option(help="openai: env var holding the key.")] = (
        "OPENAI_API_KEY"
    ),
    n_mode: Annotated[
        str, typer.Option(help="openai: auto | native (n in one request) | fanout.")
    ] = "auto",
    parallel: Annotated[int, typer.Option(help="Sequences decoded together per request.")] = 16,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight.")] = None,
    verify: Annotated[bool, typer.Option(help="Verify the samples afterwards.")] = True,
    db: DbOpt = None,
    json_out: JsonOpt = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log details (and llama.cpp).")
    ] = False,
) -> None:
    """Draw N samples per problem (only the missing ones), verify them, print coverage and pass@k."""
    setup_logging(verbose)
    with reported_errors():
        params = validated(
            SamplingParams,
            _PARAM_FLAGS,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=tuple(stop or ()),
            seed=seed,
        )
        if n < 1:
            raise ConfigError(f"--n must be >= 1, got {n}")
        the_task = build_task(
            task, data, question_field, answer_field, id_field, few_shot, task_option
        )
        params = with_task_stop(params, the_task)
        problems = select_problems(
            the_task.problems(),
            limit=limit,
            offset=offset,
            ids=[i.strip() for i in ids.split(",") if i.strip()] if ids else None,
            shuffle_seed=shuffle_seed,
        )
        verifier = make_verifier(the_task.verifier) if verify else None
        be = build_backend(
            backend, model, base_url, api_key_env, n_mode, concurrency, parallel, verbose
        )
        with open_store(db) as store:
            result = asyncio.run(
                _sample(store, be, the_task, problems, n, params, concurrency, json_out)
            )
            out: dict[str, Any] = {"sampling": asdict(result)}
            if verifier is not None:
                with verifier:
                    out["verification"] = run_verify(
                        store, result.run_id, verifier, force=False, quiet=json_out
                    )
                out["summary"] = summary_json(store, result.run_id, verifier.name)
            if json_out:
                emit_json(out)
                return
            elsewhere = (
                f", {result.drawn_elsewhere} drawn meanwhile by another process"
                if result.drawn_elsewhere
                else ""
            )
            console.print(
                f"run [bold]{result.run_id}[/]: {result.drawn} new samples "
                f"({result.already_present} already stored{elsewhere}) for {result.problems} "
                "problems in "
                f"{result.wall_s:.1f}s; {result.completion_tokens} completion tokens, "
                f"{result.prompt_tokens} prompt tokens evaluated in {result.requests} requests"
            )
            if verifier is not None:
                print_summary(store, result.run_id, verifier.name)


async def _sample(
    store: Store,
    backend: Backend,
    task: Task,
    problems: list[Any],
    n: int,
    params: SamplingParams,
    concurrency: int | None,
    quiet: bool,
) -> Any:
    try:
        with sampling_progress(disable=quiet) as progress:
            bar = progress.add_task("sample", total=len(problems) * n, tokens=0)
            tokens = 0
            already = store_existing(store, backend, task, params, problems, n)
            progress.update(bar, total=len(problems) * n - already)

            def on_progress(k: int, t: int) -> None:
                nonlocal tokens
                tokens += t
                progress.update(bar, advance=k, tokens=tokens)

            return await sample_run(
                store,
                backend,
                task,
                problems,
                n,
                params,
                concurrency=concurrency,
                on_progress=on_progress,
            )
    finally:
        await backend.aclose()


def store_existing(
    store: Store, backend: Backend, task: Task, params: SamplingParams, problems: list[Any], n: int
) -> int:
    """How many of the requested samples the run already holds (to size the progress bar)."""
    spec = run_spec(backend, task, params)
    existing = store.existing_indices(spec.run_id)
    return sum(len({i for i in existing.get(p.id, set()) if i < n}) for p in problems)


def verify(
    run: RunArg,
    force: Annotated[
        bool, typer.Option(help="Re-verify samples that already have a verdict.")
    ] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a run's samples with its task's verifier (only those without a verdict)."""
    setup_logging(False)
    with reported_errors(), open_store(db) as store:
        info = store.get_run(run)
        with make_verifier(verifier_kind(info.spec)) as verifier:
            report = run_verify(store, info.id, verifier, force=force, quiet=json_out)
        if json_out:
            emit_json(
                {"verification": report, "summary": summary_json(store, info.id, verifier.name)}
            )
            return
        console.print(f"verified {report['checked']} samples: {report['statuses']}")
        print_summary(store, info.id, verifier.name)


def verifier_kind(spec: RunSpec) -> str:
    """The verifier recorded in a run's task spec."""
    return str(spec.task.get("verifier", "math"))
