"""`ponder runs`, `ponder show`, `ponder report`, `ponder export`."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ponder.analysis import run_tallies, run_verifier
from ponder.cli._common import (
    DbOpt,
    JsonOpt,
    RunArg,
    VerifierOpt,
    console,
    emit_json,
    err_console,
    fmt,
    open_store,
    reported_errors,
)
from ponder.errors import UserError
from ponder.runs import is_system_spec
from ponder.store import AdaptiveStop


def runs(db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """List the runs in the database."""
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
    """Per-problem table: samples, verified, correct, first correct answer (the run's verifier)."""
    with reported_errors(), open_store(db) as store:
        info = store.get_run(run)
        name = run_verifier(store, info.id, verifier, need_verdicts=False)
        rows = run_tallies(store, info.id, name)
        stops = store.stops(info.id)
        if json_out:
            emit_json(
                {
                    "run": info.id,
                    "spec": info.spec.model_dump(),
                    "verifier": name,
                    "problems": [asdict(r) for r in rows],
                    "stops": [s.model_dump(exclude={"run_id"}) for s in stops],
                }
            )
            return
        console.print(
            f"run [bold]{info.id}[/]: task {info.spec.task_name}, model {info.spec.model}"
        )
        if is_system_spec(info.spec):
            console.print(
                f"a system run (seed {info.spec.params.seed}): one answer per problem; see how one "
                f"was made with: ponder trace {info.id} PROBLEM",
                highlight=False,
            )
        else:
            console.print(f"params: {info.spec.params.model_dump()}")
        console.print(f"verdicts of verifier {name}", highlight=False)
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
                r.first_correct_answer or ("-" if r.verified else "(unverified)"),
            )
        console.print(table)
        _print_stops(stops)


def _print_stops(stops: list[AdaptiveStop]) -> None:
    """Where adaptive sampling stopped each problem, one table per schedule."""
    by_rule: dict[str, list[AdaptiveStop]] = {}
    for s in stops:
        by_rule.setdefault(s.rule, []).append(s)
    for rule, items in by_rule.items():
        # A line of its own: a table title would wrap at the table's width.
        console.print(f"adaptive stops: {rule}", highlight=False)
        table = Table()
        for col in ("problem", "samples", "rounds", "reason", "answer", "votes", "tokens"):
            table.add_column(
                col, justify="left" if col in ("problem", "reason", "answer") else "right"
            )
        for s in items:
            table.add_row(
                s.problem_id,
                str(s.samples),
                str(s.rounds),
                s.reason,
                "-" if s.answer is None else _one_line(s.answer),
                str(s.votes),
                str(s.completion_tokens),
            )
        console.print(table)


def _one_line(text: str, limit: int = 40) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def report(
    runs: Annotated[list[str], typer.Argument(help="One or more run ids (or unique prefixes).")],
    verifier: VerifierOpt = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML report here.")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Write the charts as PNG and SVG into this folder.")
    ] = None,
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap resamples for the coverage band.")
    ] = 1000,
    subsets: Annotated[
        int, typer.Option(help="Random k-subsets per problem for selection@k.")
    ] = 100,
    holdout: Annotated[int, typer.Option(help="Largest k values held out of the scaling fit.")] = 2,
    price_in: Annotated[float, typer.Option(help="Dollars per million prompt tokens.")] = 0.0,
    price_out: Annotated[float, typer.Option(help="Dollars per million completion tokens.")] = 0.0,
    params: Annotated[
        int | None, typer.Option(help="Model parameters for FLOPs (default: from the registry).")
    ] = None,
    samples_per_problem: Annotated[
        int, typer.Option(help="Samples per problem shown in the HTML sample browser.")
    ] = 20,
    seed: Annotated[
        int, typer.Option(help="Seed of the bootstrap, subset and (--adaptive) ordering draws.")
    ] = 0,
    scores: Annotated[
        str,
        typer.Option(
            help="What best-of-k and weighted vote rank by: auto or logprob (the mean token "
            "log-probability, the model's own confidence), or verifier (the verifier's score, "
            "e.g. partial credit: it knows the reference, so that ranking is an oracle bound).",
        ),
    ] = "auto",
    cost_x: Annotated[
        str,
        typer.Option(
            "--x",
            help="X axis of the cost chart: tokens, or flops (2 x parameters x tokens; puts runs "
            "of different models at equal compute on one axis).",
        ),
    ] = "tokens",
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive",
            help="Also simulate adaptive stop rules on the stored samples: accuracy and coverage "
            "against mean samples and tokens per problem, beside majority@k.",
        ),
    ] = False,
    orderings: Annotated[
        int | None,
        typer.Option(
            help="--adaptive: random orderings of each problem's samples (default 100).",
            show_default=False,
        ),
    ] = None,
    rules: Annotated[
        str | None,
        typer.Option(
            help="--adaptive: comma-separated stop rules (default: margin, supermajority, beta, "
            "dirichlet, window), each swept over its thresholds."
        ),
    ] = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Coverage@k (mean unbiased pass@k) with its band, selection@k (majority, weighted, best-of-k),
    the scaling-law fit and cost; with --adaptive, stop rules simulated from the stored samples.

    Several runs of the same task are compared on the same axes.
    """
    with reported_errors(), open_store(db) as store:
        from ponder.analysis import Prices, build_report, check_comparable, load_run

        if bootstrap < 0 or subsets < 1 or holdout < 0 or samples_per_problem < 0:
            raise UserError(
                "--bootstrap, --holdout and --samples-per-problem must be >= 0, --subsets >= 1"
            )
        if scores not in ("auto", "logprob", "verifier"):
            raise UserError(f"unknown --scores {scores!r}", hint="choose auto, logprob or verifier")
        if cost_x not in ("tokens", "flops"):
            raise UserError(f"unknown --x {cost_x!r}", hint="choose tokens or flops")
        prices = Prices(prompt_per_million=price_in, completion_per_million=price_out)
        reports = [
            build_report(
                load_run(
                    store,
                    ref,
                    verifier,
                    scores=scores,  # type: ignore[arg-type]  # checked above
                ),
                bootstrap=bootstrap,
                subsets=subsets,
                holdout=holdout,
                prices=prices,
                params=params,
                seed=seed,
            )
            for ref in runs
        ]
        check_comparable(reports)
        sims = _adaptive_sims(reports, adaptive, orderings, rules, seed)
        # --- adaptive stops (online adaptive sampling; see ponder.analysis.stops_sections) ---
        from ponder.analysis import stops_sections

        stops = [stops_sections(store, r.data) for r in reports]
        # --- end adaptive stops ---
        written: list[str] = []
        if html_out is not None:
            from ponder.analysis import render_html

            html_out.write_text(
                render_html(
                    reports,
                    samples_per_problem=samples_per_problem,
                    cost_x=cost_x,  # type: ignore[arg-type]  # checked above
                    adaptive=sims,
                    stops=stops,
                ),
                "utf-8",
            )
            written.append(str(html_out))
        if plots is not None:
            from ponder.analysis import save_plots

            written += [
                str(p)
                for p in save_plots(
                    reports,
                    plots,
                    cost_x=cost_x,  # type: ignore[arg-type]  # checked above
                )
            ]
        if json_out:
            from ponder.analysis import report_json, stops_json

            runs_json = [
                {**report_json(r), "adaptive_stops": stops_json(s)}
                for r, s in zip(reports, stops, strict=True)
            ]
            _add_adaptive_json(runs_json, sims)
            emit_json({"runs": runs_json, "written": written})
            return
        for i, (r, s) in enumerate(zip(reports, stops, strict=True)):
            print_report(r)
            print_stops_section(s)
            if sims:
                print_adaptive(sims[i])
        for path in written:
            console.print(f"wrote {path}")


def print_report(r: Any) -> None:
    """The terminal summary of one run's report."""
    console.print(
        f"run [bold]{r.data.run_id}[/]: task {r.data.task}, model {r.data.spec.model}, "
        f"{len(r.data.problems)} problems, {r.cost.samples} verified samples"
    )
    table = Table(title_justify="left")
    for col in (
        "k",
        "coverage@k",
        "95% band",
        "solved by first k",
        *[f"{m}@k" for m in r.selection],
        "tokens",
    ):
        table.add_column(col, justify="right")
    for i, k in enumerate(r.ks):
        table.add_row(
            str(int(k)),
            fmt(r.coverage.mean[i]),
            f"{fmt(r.coverage.lo[i])}-{fmt(r.coverage.hi[i])}",
            fmt(r.solved_by_first_k[i]),
            *[fmt(c.mean[i]) for c in r.selection.values()],
            f"{int(r.cost_by_k['total_tokens'][i]):,}",
        )
    console.print(table)
    if r.fit is not None:
        f = r.fit
        console.print(
            f"scaling law: coverage = exp(a*k^b), a = {f.a:.4g} [{f.a_ci[0]:.4g}, {f.a_ci[1]:.4g}], "
            f"b = {f.b:.4g} [{f.b_ci[0]:.4g}, {f.b_ci[1]:.4g}], R^2 = {f.r2:.4f}; "
            f"coverage at k={f.extrapolate_k}: {fmt(f.extrapolated)}"
            + (f"; held-out error {f.holdout_error:.4f}" if len(f.holdout_k) else "")
        )
    else:
        console.print(f"scaling law: not fitted: {r.fit_error}")
    needed = ", ".join(
        f"{int(t * 100)}%: {v if v is not None else 'not reached'}"
        for t, v in r.samples_needed.items()
    )
    console.print(f"samples per problem to reach coverage {needed}")
    for note in r.notes:
        console.print(f"[yellow]note:[/] {note}")


# --- adaptive stop rules, simulated (ponder report --adaptive) -------------------------------------


def _adaptive_sims(
    reports: list[Any], adaptive: bool, orderings: int | None, rules: str | None, seed: int
) -> list[Any]:
    """One simulation per report's run (none without --adaptive)."""
    if not adaptive:
        if rules is not None or orderings is not None:
            raise UserError("--orderings and --rules go with --adaptive", hint="add --adaptive")
        return []
    orderings = 100 if orderings is None else orderings
    from ponder.analysis import DEFAULT_RULES, simulate_adaptive

    if orderings < 1:
        raise UserError(f"--orderings must be >= 1, got {orderings}", hint="the default is 100")
    names = [n.strip() for n in rules.split(",") if n.strip()] if rules else list(DEFAULT_RULES)
    if not names:
        raise UserError("--rules names no rule", hint=f"e.g. --rules {','.join(DEFAULT_RULES)}")
    return [simulate_adaptive(r.data, names, orderings=orderings, seed=seed) for r in reports]


def _add_adaptive_json(runs_json: list[dict[str, Any]], sims: list[Any]) -> None:
    from ponder.analysis import adaptive_json

    for out, sim in zip(runs_json, sims, strict=False):
        out["adaptive"] = adaptive_json(sim)


def print_adaptive(sim: Any) -> None:
    """The terminal table of a simulation: every rule's points, then majority@k on the same axes;
    the best rule's points at or above majority@k are starred."""
    best = sim.best()
    left = f" ({sim.left_out} problems with fewer samples left out)" if sim.left_out else ""
    console.print(
        f"adaptive stop rules simulated on {sim.problems} problems{left}: N = {sim.max_samples}, "
        f"rounds of {sim.round_size}, {sim.orderings} orderings per problem",
        highlight=False,
    )
    table = Table(title_justify="left")
    for col in ("rule", "threshold", "mean samples", "mean tokens", "vote accuracy", "± se",
                "coverage", "stopped early", ">= maj@k"):  # fmt: skip
        table.add_column(col, justify="left" if col == "rule" else "right")
    for v in sim.verdicts():
        for p, above in zip(sim.curve(v.rule), v.at_or_above, strict=True):
            star = "*" if best is not None and best.rule == v.rule and above else ""
            table.add_row(
                p.rule,
                "" if p.threshold is None else f"{p.threshold:g}",
                f"{p.samples.mean:.2f}",
                f"{p.tokens.mean:,.0f}",
                fmt(p.accuracy.mean),
                fmt(p.accuracy.stderr),
                fmt(p.coverage.mean),
                f"{p.early:.0%}",
                ("yes" if above else "no") + star,
            )
    for b in sim.baseline_shown():
        table.add_row(
            "maj@k", f"k={b.k}", str(b.k), f"{b.tokens.mean:,.0f}", fmt(b.accuracy.mean),
            fmt(b.accuracy.stderr), fmt(b.coverage.mean), "", "",
        )  # fmt: skip
    console.print(table)
    for v in sim.verdicts():
        reach = (
            f"reaches majority@{sim.max_samples} within 1 point at {v.samples_to_match:.2f} "
            f"samples per problem ({v.ratio:.2f} of N)"
            if v.ratio is not None
            else f"never comes within 1 point of majority@{sim.max_samples}"
        )
        console.print(
            f"  {v.rule}: {sum(v.at_or_above)}/{len(v.at_or_above)} points at or above "
            f"majority@k{' (everywhere)' if v.dominates else ''}, worst point "
            f"{v.worst_gap * 100:+.1f} points (paired se "
            f"{v.gap_stderr[v.gaps.index(v.worst_gap)] * 100:.1f}); {reach}",
            highlight=False,
        )
    console.print(
        f"best rule (*): {best.rule}" if best is not None
        else "no rule is at or above majority@k everywhere",
        highlight=False,
    )  # fmt: skip


# --- end of adaptive stop rules -----------------------------------------------------------------
def print_stops_section(sections: list[Any]) -> None:
    """The report's adaptive stops (:func:`ponder.analysis.stops_sections`) in the terminal."""
    from ponder.analysis import STOPS_COLUMNS, reasons_text, stops_rows

    for section in sections:
        console.print(
            f"adaptive stops: {section.rule} (stopped by {reasons_text(section)})",
            highlight=False,
        )
        table = Table()
        for col in STOPS_COLUMNS:
            table.add_column(col, justify="left" if col == "vote" else "right")
        for row in stops_rows(section):
            table.add_row(*row)
        console.print(table)
        for note in section.notes:
            console.print(f"[yellow]note:[/] {note}")


def export(
    run: RunArg,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="jsonl: every sample with its verdict; parquet: the same as a table (needs -o); "
            "sft: correct samples as chat examples; dpo: correct/incorrect preference pairs.",
        ),
    ] = "jsonl",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output file (default: stdout).")
    ] = None,
    verifier: VerifierOpt = None,
    db: DbOpt = None,
    max_pairs_per_problem: Annotated[
        int, typer.Option(help="dpo: at most this many pairs per problem (0: all).")
    ] = 4,
    seed: Annotated[int, typer.Option(help="dpo: seed of the pair choice.")] = 0,
    dedupe: Annotated[
        bool,
        typer.Option("--dedupe/--no-dedupe", help="sft/dpo: use identical texts once per problem."),
    ] = True,
    include_unparsed: Annotated[
        bool,
        typer.Option(
            "--include-unparsed", help="dpo: samples with no final answer may be rejected too."
        ),
    ] = False,
) -> None:
    """Export a run: samples as JSON lines or Parquet, or training data (SFT examples, DPO pairs)."""
    from ponder.export import FORMATS, export_run

    with reported_errors():
        if fmt not in FORMATS:
            raise UserError(f"unknown format {fmt!r}", hint=f"choose one of: {', '.join(FORMATS)}")
        if fmt == "parquet" and out is None:
            raise UserError("--format parquet needs an output file", hint="pass -o FILE.parquet")
        if max_pairs_per_problem < 0:
            raise UserError(
                f"--max-pairs-per-problem must be >= 0, got {max_pairs_per_problem}",
                hint="0 means all pairs",
            )
        with open_store(db) as store:
            result = export_run(
                store,
                run,
                fmt,  # type: ignore[arg-type]  # checked against FORMATS above
                out if out is not None else sys.stdout,
                verifier=verifier,
                max_pairs_per_problem=max_pairs_per_problem or None,
                seed=seed,
                dedupe=dedupe,
                include_unparsed=include_unparsed,
            )
        err_console.print(result.summary(), highlight=False, soft_wrap=True)
