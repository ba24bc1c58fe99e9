"""`ponder runs`, `ponder show`, `ponder report`, `ponder export`."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ponder.analysis import RunSummaryStats, summarize
from ponder.cli._common import (
    DbOpt,
    JsonOpt,
    RunArg,
    VerifierOpt,
    console,
    emit_json,
    open_store,
    reported_errors,
    setup_logging,
)
from ponder.cli._render import summary_table
from ponder.errors import UserError
from ponder.sampling import Store


def _verifier_for(store: Store, run_id: str, verifier: str | None) -> str:
    found = store.verifiers(run_id)
    if verifier is not None:
        if verifier not in found:
            raise UserError(
                f"run {run_id} has no verdicts from verifier {verifier!r} (it has: {found or 'none'})",
                hint=f"run: ponder verify {run_id}",
            )
        return verifier
    if not found:
        raise UserError(
            f"run {run_id} has no verdicts yet", hint=f"verify it first: ponder verify {run_id}"
        )
    return found[0]


def stats(store: Store, run_id: str, verifier: str) -> RunSummaryStats:
    problems = [p.id for p in store.problems(run_id)]
    return summarize(problems, store.samples(run_id), store.verdicts(run_id, verifier))


def summary_json(store: Store, run_id: str, verifier: str) -> dict[str, Any]:
    s = stats(store, run_id, verifier)
    data = asdict(s)
    # JSON has no NaN: undefined estimates are null.
    for p in data["points"]:
        for key in ("coverage", "pass_at_k"):
            if p[key] != p[key]:
                p[key] = None
    return {"run": run_id, "verifier": verifier, **data}


def print_summary(store: Store, run_id: str, verifier: str) -> None:
    s = stats(store, run_id, verifier)
    console.print(
        f"{s.problems} problems, {s.verified} verified samples ({s.correct} correct, "
        f"{s.unparsed} unparsed, {s.errors} errors); {s.completion_tokens} completion tokens"
    )
    if s.points:
        console.print(summary_table(f"run {run_id} ({verifier})", s))
    else:
        console.print("no problem has a verified sample yet")


def runs(db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """List the runs in the database."""
    setup_logging(False)
    with reported_errors(), open_store(db) as store:
        items = store.runs()
        if json_out:
            emit_json([asdict(r) for r in items])
            return
        table = Table(title=f"runs in {store.path}", title_justify="left")
        for col in (
            "run",
            "task",
            "model",
            "problems",
            "samples",
            "verified",
            "correct",
            "created",
        ):
            table.add_column(col, justify="right" if col in ("problems", "samples") else "left")
        for r in items:
            table.add_row(
                r.id,
                r.task,
                r.model,
                str(r.problems),
                str(r.samples),
                str(r.verified),
                str(r.correct),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)),
            )
        console.print(table)


def show(
    run: RunArg,
    verifier: VerifierOpt = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Per-problem table: samples, verified, correct, first correct answer."""
    setup_logging(False)
    with reported_errors(), open_store(db) as store:
        info = store.get_run(run)
        found = store.verifiers(info.id)
        name = verifier or (found[0] if found else "math")
        rows = store.problem_table(info.id, name)
        if json_out:
            emit_json(
                {
                    "run": info.id,
                    "spec": info.spec.model_dump(),
                    "problems": [asdict(r) for r in rows],
                }
            )
            return
        console.print(
            f"run [bold]{info.id}[/]: task {info.spec.task_name}, model {info.spec.model}"
        )
        console.print(f"params: {info.spec.params.model_dump()}")
        table = Table(title_justify="left")
        for col in (
            "problem",
            "reference",
            "samples",
            "verified",
            "correct",
            "first correct answer",
        ):
            table.add_column(
                col, justify="right" if col in ("samples", "verified", "correct") else "left"
            )
        for r in rows:
            table.add_row(
                r.problem_id,
                r.reference or "",
                str(r.samples),
                str(r.verified),
                str(r.correct),
                r.first_correct or ("-" if r.verified else "(unverified)"),
            )
        console.print(table)


def report(
    run: RunArg,
    verifier: VerifierOpt = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Coverage@k and unbiased pass@k for k = 1, 2, 4, ... n."""
    setup_logging(False)
    with reported_errors(), open_store(db) as store:
        info = store.get_run(run)
        name = _verifier_for(store, info.id, verifier)
        if json_out:
            emit_json(summary_json(store, info.id, name))
            return
        console.print(
            f"run [bold]{info.id}[/]: task {info.spec.task_name}, model {info.spec.model}"
        )
        print_summary(store, info.id, name)


def export(
    run: RunArg,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output file (default: stdout).")
    ] = None,
    verifier: VerifierOpt = None,
    db: DbOpt = None,
) -> None:
    """Export a run's samples (with verdicts) as JSON lines."""
    setup_logging(False)
    with reported_errors(), open_store(db) as store:
        info = store.get_run(run)
        found = store.verifiers(info.id)
        name = verifier or (found[0] if found else None)
        if out is None:
            store.export_jsonl(info.id, sys.stdout, name)
            return
        with out.open("w", encoding="utf-8") as fh:
            count = store.export_jsonl(info.id, fh, name)
        console.print(f"wrote {count} samples to {out}")
