"""`ponder serve`: the OpenAI-compatible server (see ponder.serve and docs/serve.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ponder.cli._common import (
    BaseUrlOpt,
    DbOpt,
    base_urls,
    console,
    err_console,
    reported_errors,
)
from ponder.errors import ConfigError
from ponder.store import default_db_path

_EXAMPLE = """\
from openai import OpenAI
client = OpenAI(base_url="{url}/v1", api_key="{key}")
reply = client.chat.completions.create(
    model="{model}", messages=[{{"role": "user", "content": "What is 17 * 23?"}}])
print(reply.choices[0].message.content)"""


def serve(
    system: Annotated[
        list[Path] | None,
        typer.Option(
            "--system",
            "-s",
            help="A system config to serve (repeatable), e.g. configs/sample-8-vote.yaml; its "
            "name is its `name:`.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="A model to serve (repeatable): a registered name, a .gguf path, a JSON model "
            "spec, or a served model with --backend openai. The first one runs the served "
            "systems. Default: the first system's own model, else the default embedded model.",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="Backend of --model names: llamacpp (embedded), openai, ...")
    ] = "llamacpp",
    base_url: BaseUrlOpt = None,
    api_key_env: Annotated[
        str, typer.Option(help="openai: env var holding the upstream key.")
    ] = "OPENAI_API_KEY",
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads of each embedded engine (default: one fewer than the cores, at "
            "least 1: measured 4x faster than all cores on a busy machine; see docs/serve.md).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 8000,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            help="File of accepted API keys, one per line (also: $PONDER_API_KEYS, "
            "comma-separated). Without keys, no authentication.",
            show_default=False,
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Allow a non-loopback --host without API keys (anyone reaching it can use it).",
        ),
    ] = False,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")] = 1_000_000,
    max_n: Annotated[int, typer.Option(help="Largest n of a request.")] = 16,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens of a request.")] = 4096,
    default_max_tokens: Annotated[
        int, typer.Option(help="max_tokens of a pass-through request that sets none.")
    ] = 512,
    max_active: Annotated[int, typer.Option(help="Requests worked on at once.")] = 16,
    max_queued: Annotated[
        int, typer.Option(help="Requests that may wait; more get 429 with Retry-After.")
    ] = 64,
    per_key: Annotated[int, typer.Option(help="Requests in flight per API key.")] = 8,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take (504).")] = 600.0,
    drain: Annotated[
        float, typer.Option(help="On SIGTERM, seconds in-flight requests may run on.")
    ] = 30.0,
    no_store: Annotated[
        bool, typer.Option("--no-store", help="Do not store requests and their traces.")
    ] = False,
    db: DbOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    """Serve models and composed systems behind an OpenAI-compatible API (chat, completions,
    models; streaming, tools). Point any OpenAI client at it."""
    from ponder.serve import Limits, check_bind, create_app, load_service, read_api_keys, run_server

    with reported_errors(verbose):
        for flag, value in (
            ("--max-n", max_n),
            ("--max-tokens", max_tokens),
            ("--per-key", per_key),
            ("--max-active", max_active),
            ("--max-body-bytes", max_body_bytes),
        ):
            if value < 1:
                raise ConfigError(f"{flag} must be >= 1, got {value}")
        if max_queued < 0 or timeout <= 0 or drain < 0:
            raise ConfigError("--max-queued and --drain must be >= 0, --timeout > 0")
        keys = read_api_keys(api_key_file)
        warning = check_bind(host, keys, allow_no_keys=insecure_no_auth)
        if warning:
            err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
        the_db = None if no_store else (db if db is not None else default_db_path())
        service = load_service(
            model or [],
            system or [],
            backend=backend,
            base_url=base_urls(base_url),
            api_key_env=api_key_env,
            threads=threads,
            db=the_db,
            default_max_tokens=default_max_tokens,
        )
        limits = Limits(
            max_body_bytes=max_body_bytes,
            max_n=max_n,
            max_tokens=max_tokens,
            max_active=max_active,
            max_queued=max_queued,
            per_key=per_key,
            timeout_s=timeout,
            drain_s=drain,
        )
        app = create_app(service, api_keys=keys, limits=limits)
        names = service.names()

        def ready(url: str) -> None:
            console.print(f"ponder serve: listening on [bold]{url}/v1[/]", highlight=False)
            console.print("served (the `model` field):", highlight=False)
            for name in names:
                console.print(f"  {name}", highlight=False)
            stored = f"requests stored in {the_db}" if the_db else "requests not stored"
            auth = f"{len(keys)} API key(s) required" if keys else "no API key required"
            console.print(f"{auth}; {stored}", highlight=False)
            if the_db:
                login = " (log in with a key)" if keys else ""
                console.print(f"browse runs and requests: {url}/ui{login}", highlight=False)
            console.print("connect with the openai client:", highlight=False)
            console.print(
                _EXAMPLE.format(url=url, key="YOUR-KEY" if keys else "none", model=names[0]),
                highlight=False,
                markup=False,
            )

        run_server(app, host=host, port=port, drain_s=drain, on_ready=ready)
