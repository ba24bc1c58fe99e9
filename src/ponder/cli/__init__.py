"""The `ponder` command line. Every command is a thin layer over library calls."""

from __future__ import annotations

import typer

from ponder.cli import _models, _report, _run, _sample, _search, _serve, _tasks

app = typer.Typer(
    name="ponder",
    help="Turn extra inference-time compute into better answers, and measure how much better.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(_models.app, name="models")
app.command("tasks")(_tasks.tasks)
app.command("sample")(_sample.sample)
app.command("verify")(_sample.verify)
app.command("run")(_run.run)
app.command("trace")(_run.trace)
app.command("runs")(_report.runs)
app.command("show")(_report.show)
app.command("report")(_report.report)
app.command("export")(_report.export)
app.command("serve")(_serve.serve)
app.command("search")(_search.search_command)


def main() -> None:
    app()


__all__ = ["app", "main"]
