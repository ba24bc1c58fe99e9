"""`ponder tasks`: the tasks ``--task`` accepts (built-in, plugins, and reasoning-gym datasets)."""

from __future__ import annotations

import inspect
from typing import Any

from rich.table import Table

from ponder.cli._common import JsonOpt, console, emit_json, reported_errors
from ponder.errors import UserError
from ponder.plugins import lookup
from ponder.tasks import task_names
from ponder.verify.gym import (
    GYM_INSTALL,
    dataset_options,
    dataset_summary,
    gym_datasets,
    gym_version,
)


def _summary(obj: object) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip().replace("``", "") if doc else ""


def _options(factory: object) -> list[str] | None:
    """The keyword options a task factory takes (None when its signature cannot be read)."""
    try:
        params = inspect.signature(factory).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return sorted(p.name for p in params if p.kind in kinds)


def _registered() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in task_names():
        try:
            factory = lookup("task", name)
        except UserError as exc:  # a plugin that fails to load is listed with the reason
            description, options = f"(failed to load: {exc.message})", None
        else:
            description, options = _summary(factory), _options(factory)
        rows.append(
            {"name": name, "source": "ponder", "description": description, "options": options}
        )
    return rows


def _gym() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        version = gym_version()
    except UserError:
        return {"installed": False, "version": None, "install_command": GYM_INSTALL}, []
    rows = [
        {
            "name": f"gym:{name}",
            "source": "reasoning-gym",
            "description": dataset_summary(name),
            "options": dataset_options(name),
        }
        for name in gym_datasets()
    ]
    return {"installed": True, "version": version, "install_command": GYM_INSTALL}, rows


def tasks(json_out: JsonOpt = False) -> None:
    """List the tasks --task accepts: built-in and plugin tasks, and (with the gym extra) every
    reasoning-gym dataset as gym:NAME, with the options -T takes."""
    with reported_errors():
        registered = _registered()
        gym, datasets = _gym()
        if json_out:
            emit_json({"tasks": registered + datasets, "gym": gym})
            return
        table = Table(title="tasks", title_justify="left")
        for col in ("name", "description", "options (-T)"):
            table.add_column(col)
        for row in registered + datasets:
            options = ", ".join(row["options"]) if row["options"] is not None else ""
            table.add_row(row["name"], row["description"], options)
        console.print(table)
        if gym["installed"]:
            console.print(
                f"gym:NAME tasks come from reasoning-gym {gym['version']}; every one also takes "
                "size (default 100), seed (default 0), system_prompt, template and stop."
            )
        else:
            console.print(
                "reasoning-gym is not installed, so its datasets (gym:NAME) are not listed; "
                f"install it with: {GYM_INSTALL}",
                highlight=False,
            )
