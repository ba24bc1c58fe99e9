"""`ponder sample` and `ponder verify`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from ponder.adaptive import DEFAULT_ROUND, Schedule, make_stop_rule
from ponder.analysis import declared_verifier
from ponder.backends import Backend, backend_config_type, create_backend
from ponder.cli._common import (
    BaseUrlOpt,
    DataOpt,
    DbOpt,
    ExecutorOpt,
    FewShotOpt,
    IdsOpt,
    JsonOpt,
    LimitOpt,
    MinPOpt,
    ModelIdentityOpt,
    OffsetOpt,
    RayActorsOpt,
    RayAddressOpt,
    RunArg,
    ShuffleSeedOpt,
    TaskOptionOpt,
    TopKOpt,
    base_urls,
    build_task,
    choose_problems,
    console,
    emit_json,
    open_executor,
    open_store,
    print_summary,
    reported_errors,
    run_verify,
    sampling_progress,
    stored_note,
    summary_json,
    validated,
)
from ponder.errors import ConfigError
from ponder.models import DEFAULT_MODEL
from ponder.records import SamplingParams
from ponder.runs import AdaptiveReport, Budget, parse_budget, sample_adaptive, sample_run
from ponder.store import Store, run_spec
from ponder.tasks import Task, with_task_stop
from ponder.verify import Verifier

_PARAM_FLAGS = {
    "temperature": "--temperature",
    "top_p": "--top-p",
    "top_k": "--top-k",
    "min_p": "--min-p",
    "max_tokens": "--max-tokens",
    "stop": "--stop",
    "seed": "--seed",
}


# Backend options on the command line: flag -> the config fields it may set, first match wins.
_BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "--model": ("model",),
    "--base-url": ("base_url",),
    "--api-key-env": ("api_key_env",),
    "--n-mode": ("n_mode",),
    "--concurrency": ("max_concurrency",),
    "--parallel": ("n_parallel", "max_batch"),
    "--verbose": ("verbose",),
    "--model-identity": ("identity",),
}


def build_backend(
    kind: str,
    model: str,
    base_url: str | list[str] | None,
    api_key_env: str,
    n_mode: str,
    concurrency: int | None,
    parallel: int,
    verbose: bool,
    model_identity: str | None = None,
    *,
    factory: Callable[[BaseModel], Backend] = create_backend,
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
        "--model-identity": model_identity,
    }
    values: dict[str, Any] = {"kind": kind}
    flags: dict[str, str] = {}
    for flag, value in given.items():
        field = next((f for f in _BACKEND_OPTIONS[flag] if f in fields), None)
        if field is None and flag in ("--base-url", "--model-identity") and value is not None:
            raise ConfigError(
                f"{flag} does not apply to --backend {kind}",
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
    return factory(validated(config_type, flags, **values))


def sample(
    task: Annotated[
        str,
        typer.Option(
            "--task",
            "-t",
            help="gsm8k, aime2025, jsonl, humaneval, jsonl-code, mbpp, gym:NAME, ... "
            "(`ponder tasks` lists them)",
        ),
    ] = "gsm8k",
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="Registered model name, .gguf path, or served model."),
    ] = DEFAULT_MODEL,
    n: Annotated[
        int,
        typer.Option("--n", "-n", help="Samples per problem (with --adaptive: the most)."),
    ] = 8,
    limit: LimitOpt = None,
    offset: OffsetOpt = 0,
    ids: IdsOpt = None,
    shuffle_seed: ShuffleSeedOpt = None,
    max_tokens: Annotated[int, typer.Option(help="Max completion tokens per sample.")] = 512,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.7,
    top_p: Annotated[
        float, typer.Option(help="Nucleus sampling: keep the most likely tokens up to this mass.")
    ] = 1.0,
    top_k: TopKOpt = 0,
    min_p: MinPOpt = 0.0,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Base seed; each request derives its own.")] = 0,
    few_shot: FewShotOpt = None,
    data: DataOpt = None,
    question_field: Annotated[str | None, typer.Option(help="jsonl: question field.")] = None,
    answer_field: Annotated[str | None, typer.Option(help="jsonl: answer field.")] = None,
    id_field: Annotated[str | None, typer.Option(help="jsonl: id field.")] = None,
    task_option: TaskOptionOpt = None,
    backend: Annotated[
        str,
        typer.Option(
            help="llamacpp (embedded), openai (any compatible server), or a backend an installed "
            "plugin adds (`ponder models` lists them all)."
        ),
    ] = "llamacpp",
    base_url: BaseUrlOpt = None,
    api_key_env: Annotated[str, typer.Option(help="openai: env var holding the key.")] = (
        "OPENAI_API_KEY"
    ),
    n_mode: Annotated[
        str, typer.Option(help="openai: auto | native (n in one request) | fanout.")
    ] = "auto",
    model_identity: ModelIdentityOpt = None,
    parallel: Annotated[int, typer.Option(help="Sequences decoded together per request.")] = 16,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight.")] = None,
    verify: Annotated[bool, typer.Option(help="Verify the samples afterwards.")] = True,
    adaptive: Annotated[
        str | None,
        typer.Option(
            "--adaptive",
            help="Draw each problem in rounds until this stop rule fires, --n at most: fixed, "
            "margin, supermajority, beta, dirichlet, window, or a plugin's. Every sample is "
            "verified as it comes; where and why each problem stopped is stored.",
        ),
    ] = None,
    adaptive_param: Annotated[
        list[str] | None,
        typer.Option(
            "--adaptive-param",
            help="A stop rule parameter as K=V (repeatable), e.g. confidence=0.99, min_samples=8.",
        ),
    ] = None,
    round_size: Annotated[
        int, typer.Option(help="--adaptive: samples per round (one request per round).")
    ] = DEFAULT_ROUND,
    budget: Annotated[
        str | None,
        typer.Option(
            help="--adaptive: what the whole run may spend, as 2000samples or 300000tokens "
            "(completion tokens); after a first round on every problem, rounds go to the least "
            "decided problems.",
        ),
    ] = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_actors: RayActorsOpt = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log details (and llama.cpp).")
    ] = False,
) -> None:
    """Draw N samples per problem (only the missing ones), verify them, print coverage@k."""
    with reported_errors(verbose), ExitStack() as stack:
        params = validated(
            SamplingParams,
            _PARAM_FLAGS,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
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
        problems = choose_problems(the_task, limit, offset, ids, shuffle_seed)
        plan = _adaptive_plan(adaptive, adaptive_param, round_size, budget, n, verify)
        ex = stack.enter_context(open_executor(executor, ray_address, ray_actors))
        verifier = ex.verifier(the_task.verifier) if verify else None
        be = build_backend(
            backend,
            model,
            base_urls(base_url),
            api_key_env,
            n_mode,
            concurrency,
            parallel,
            verbose,
            model_identity,
            factory=ex.backend,
        )
        if plan is not None and verifier is not None:
            schedule, the_budget = plan
            with open_store(db) as store, verifier:
                report = asyncio.run(
                    _sample_adaptive(
                        store,
                        be,
                        the_task,
                        problems,
                        schedule,
                        params,
                        verifier,
                        the_budget,
                        concurrency,
                        json_out,
                    )
                )
                _print_adaptive(store, report, verifier, json_out)
            return
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
            stored = stored_note(result.already_present, result.drawn_elsewhere, "drawn")
            console.print(
                f"run [bold]{result.run_id}[/]: {result.drawn} new samples {stored} "
                f"for {result.problems} problems in "
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


def _adaptive_plan(
    rule: str | None,
    params: list[str] | None,
    round_size: int,
    budget: str | None,
    n: int,
    verify: bool,
) -> tuple[Schedule, Budget | None] | None:
    """The schedule and budget of ``--adaptive`` (None without it)."""
    if rule is None:
        given = [
            flag
            for flag, value in (
                ("--adaptive-param", params),
                ("--budget", budget),
                ("--round-size", round_size != DEFAULT_ROUND or None),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} only apply to adaptive sampling",
                hint="add --adaptive RULE (e.g. --adaptive beta), or drop them",
            )
        return None
    if not verify:
        raise ConfigError(
            "--adaptive needs --verify: its stop rule votes on the verifier's extracted answers",
            hint="drop --no-verify",
        )
    values: dict[str, str] = {}
    for item in params or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--adaptive-param expects K=V, got {item!r}",
                hint="e.g. --adaptive-param confidence=0.99",
            )
        values[key.strip()] = value.strip()
    schedule = Schedule(make_stop_rule(rule, values), n, round_size=round_size)
    return schedule, None if budget is None else parse_budget(budget)


async def _sample_adaptive(
    store: Store,
    backend: Backend,
    task: Task,
    problems: list[Any],
    schedule: Schedule,
    params: SamplingParams,
    verifier: Verifier,
    budget: Budget | None,
    concurrency: int | None,
    quiet: bool,
) -> AdaptiveReport:
    try:
        with sampling_progress(disable=quiet) as progress:
            # At most this many: problems stop as soon as their rule fires.
            bar = progress.add_task(
                "sample (adaptive)", total=len(problems) * schedule.max_samples, tokens=0
            )
            tokens = 0

            def on_progress(k: int, t: int) -> None:
                nonlocal tokens
                tokens += t
                progress.update(bar, advance=k, tokens=tokens)

            return await sample_adaptive(
                store,
                backend,
                task,
                problems,
                schedule,
                params,
                verifier,
                budget=budget,
                concurrency=concurrency,
                on_progress=on_progress,
            )
    finally:
        await backend.aclose()


def adaptive_json(report: AdaptiveReport) -> dict[str, Any]:
    """The adaptive part of `ponder sample --json`: the totals and every problem's stop."""
    accuracy = report.vote_accuracy
    return {
        "rule": report.rule,
        "budget": report.budget,
        "reasons": report.reasons(),
        "mean_samples": report.mean_samples,
        "completion_tokens": report.used_tokens,
        "vote_accuracy": None if accuracy != accuracy else accuracy,
        "stops": [
            {**s.model_dump(exclude={"run_id", "rule", "budget"}), "vote_correct": c}
            for s, c in ((s, report.vote_correct[s.problem_id]) for s in report.stops)
        ],
    }


def _print_adaptive(
    store: Store, report: AdaptiveReport, verifier: Verifier, json_out: bool
) -> None:
    sampling = {
        "run_id": report.run_id,
        "problems": report.problems,
        "already_present": report.already_present,
        "drawn": report.drawn,
        "requests": report.requests,
        "prompt_tokens": report.prompt_tokens,
        "completion_tokens": report.completion_tokens,
        "wall_s": report.wall_s,
    }
    # Every sample was verified as it came: this finds nothing left, as after `ponder verify`.
    verification = run_verify(store, report.run_id, verifier, force=False, quiet=json_out)
    if json_out:
        emit_json(
            {
                "sampling": sampling,
                "adaptive": adaptive_json(report),
                "verification": verification,
                "summary": summary_json(store, report.run_id, verifier.name),
            }
        )
        return
    stored = stored_note(report.already_present, 0, "drawn")
    console.print(
        f"run [bold]{report.run_id}[/]: {report.drawn} new samples {stored} for "
        f"{report.problems} problems in {report.wall_s:.1f}s; {report.completion_tokens} "
        f"completion tokens, {report.prompt_tokens} prompt tokens evaluated in "
        f"{report.requests} requests"
    )
    print_summary(store, report.run_id, verifier.name)
    reasons = report.reasons()
    stopped = ", ".join(f"{k} {reasons.get(k, 0)}" for k in ("rule", "max", "budget", "hopeless"))
    budget = f", budget {report.budget}" if report.budget else ""
    console.print(
        f"adaptive {report.rule}{budget}: problems stopped by {stopped}; "
        f"{report.mean_samples:.2f} samples per problem on average, {report.used_tokens} "
        f"completion tokens; vote accuracy {report.vote_accuracy:.3f} (the leading answer at "
        "each stop is correct)",
        highlight=False,
    )


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
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_actors: RayActorsOpt = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a run's samples with the verifier its task declares (only those without a verdict)."""
    with reported_errors(), open_store(db) as store:
        info = store.get_run(run)
        kind = declared_verifier(info.spec)
        with (
            open_executor(executor, ray_address, ray_actors) as ex,
            ex.verifier(kind) as verifier,
        ):
            report = run_verify(store, info.id, verifier, force=force, quiet=json_out)
        if json_out:
            emit_json(
                {"verification": report, "summary": summary_json(store, info.id, verifier.name)}
            )
            return
        console.print(f"verified {report['checked']} samples: {report['statuses']}")
        print_summary(store, info.id, verifier.name)
