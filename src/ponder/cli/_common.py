"""Shared CLI plumbing: consoles, error reporting, JSON output, option types."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.logging import RichHandler

from ponder.errors import ConfigError, PonderError, UserError
from ponder.store import Store, default_db_path

console = Console()
err_console = Console(stderr=True)

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
    typer.Option(help="Whose verdicts to use (default: the run's first verifier)."),
]
RunArg = Annotated[str, typer.Argument(help="Run id (or a unique prefix); see `ponder runs`.")]

M = TypeVar("M", bound=BaseModel)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )


def open_store(db: Path | None) -> Store:
    return Store(db if db is not None else default_db_path())


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
def reported_errors() -> Iterator[None]:
    """Turn Ponder errors into a clear message and exit code (2: user error, 1: run error)."""
    try:
        yield
    except PonderError as exc:
        kind = "error" if isinstance(exc, UserError) else "run failed"
        err_console.print(f"[bold red]{kind}:[/] {exc.message}", highlight=False)
        if exc.hint:
            err_console.print(f"  [yellow]hint:[/] {exc.hint}", highlight=False)
        if exc.__cause__ is not None and not isinstance(exc, UserError):
            err_console.print(f"  cause: {exc.__cause__!r}", highlight=False)
        raise typer.Exit(2 if isinstance(exc, UserError) else 1) from None


F = TypeVar("F", bound=Callable[..., Any])
