"""Rich rendering: progress bars with throughput, summary tables."""

from __future__ import annotations

import math

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ponder.analysis import RunSummaryStats
from ponder.cli._common import err_console


class _RateColumn(ProgressColumn):
    """Samples/s and tokens/s since the task started (tokens are kept in the task's fields)."""

    def render(self, task: Task) -> Text:
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
    table.add_column("pass@k (unbiased)", justify="right")
    for p in stats.points:
        table.add_row(str(p.k), fmt(p.coverage), fmt(p.pass_at_k))
    return table
