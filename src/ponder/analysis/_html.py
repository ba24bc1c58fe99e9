"""A self-contained HTML report: inline SVG charts and tables, no scripts or network needed to open it."""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Sequence

import numpy as np

from ponder.analysis._adaptive import AdaptiveSimulation
from ponder.analysis._plots import (
    AdaptiveAxis,
    CostAxis,
    adaptive_figure,
    cost_figure,
    coverage_figure,
    figure_svg,
    scaling_figure,
)
from ponder.analysis._report import RunReport
from ponder.analysis._stops import StopsSection, stops_html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}
.charts svg{max-width:100%;height:auto}
.note{color:#8a5a00;font-size:.85rem}
.correct{color:#17692a;font-weight:600}.incorrect{color:#a11}.unparsed{color:#777}
details{margin:.2rem 0}summary{cursor:pointer}
pre{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:.4rem;font-size:.8rem;margin:.2rem 0}
.sample{margin:.4rem 0 .8rem 1rem}
"""


def _f(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def _e(text: object) -> str:
    return html.escape(str(text))


def _run_header(r: RunReport) -> str:
    spec = r.data.spec
    p = spec.params
    return (
        f"<tr><td class=l>{_e(r.data.run_id)}</td><td class=l>{_e(spec.model)}</td>"
        f"<td class=l>{_e(r.data.task)}</td><td>{len(r.data.problems)}</td>"
        f"<td>{r.cost.samples}</td><td>{p.temperature}</td><td>{p.top_p}</td><td>{p.top_k or 'off'}</td>"
        f"<td>{p.min_p or 'off'}</td><td>{p.max_tokens}</td>"
        f"<td class=l>{_e(r.data.verifier)}</td></tr>"
    )


def _k_table(r: RunReport) -> str:
    methods = list(r.selection)
    head = "".join(f"<th>{_e(m)}@k</th><th>gap</th>" for m in methods)
    rows = []
    for i, k in enumerate(r.ks):
        cells = "".join(
            f"<td>{_f(r.selection[m].mean[i])}</td><td>{_f(r.coverage.mean[i] - r.selection[m].mean[i])}</td>"
            for m in methods
        )
        rows.append(
            f"<tr><td>{int(k)}</td><td>{_f(r.coverage.mean[i])}</td>"
            f"<td>{_f(r.coverage.lo[i])} – {_f(r.coverage.hi[i])}</td><td>{_f(r.solved_by_first_k[i])}</td>"
            f"{cells}<td>{int(r.cost_by_k['total_tokens'][i]):,}</td></tr>"
        )
    return (
        f"<h3>{_e(r.label)}</h3><table><tr><th>k</th><th>coverage@k</th><th>95% band</th>"
        f"<th>solved by first k</th>{head}<th>tokens</th></tr>{''.join(rows)}</table>"
    )


def _fit_block(r: RunReport) -> str:
    f = r.fit
    if f is None:
        return f"<p class=note>{_e(r.label)}: no fit: {_e(r.fit_error)}</p>"
    hold = (
        f"held-out k {', '.join(str(int(k)) for k in f.holdout_k)}: mean abs. error {_f(f.holdout_error, 4)}"
        if len(f.holdout_k)
        else "no held-out points"
    )
    return (
        f"<p><b>{_e(r.label)}</b>: coverage = exp(a·k<sup>b</sup>), a = {f.a:.4g} "
        f"[{f.a_ci[0]:.4g}, {f.a_ci[1]:.4g}], b = {f.b:.4g} [{f.b_ci[0]:.4g}, {f.b_ci[1]:.4g}], "
        f"R² = {f.r2:.4f}; {hold}; extrapolated coverage at k = {f.extrapolate_k}: "
        f"{_f(f.extrapolated)}</p>"
    )


def _cost_block(r: RunReport) -> str:
    c = r.cost
    needed = ", ".join(
        f"{int(t * 100)}%: {v if v is not None else 'not reached'}"
        for t, v in r.samples_needed.items()
    )
    flops = "unknown (parameter count unknown)" if math.isnan(c.flops) else f"{c.flops:.3g}"
    return (
        f"<p><b>{_e(r.label)}</b>: {c.samples:,} samples, {c.prompt_tokens:,} prompt tokens evaluated, "
        f"{c.completion_tokens:,} completion tokens; FLOPs ≈ {flops}; dollars {_f(c.dollars, 4)}. "
        f"Samples per problem needed to reach coverage {needed}.</p>"
    )


def _short(text: str | None, limit: int = 120) -> str:
    """One line of at most ``limit`` characters (code answers are whole programs)."""
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _reference(reference: str | None) -> str:
    """How a reference is shown: a code problem's is a JSON test spec, shown by what it tests."""
    if reference and reference.startswith("{"):
        try:
            spec = json.loads(reference)
        except json.JSONDecodeError:
            return _short(reference)
        if isinstance(spec, dict) and isinstance(spec.get("entry_point"), str):
            return f"tests of {spec['entry_point']}()"
    return _short(reference)


def _problem_table(r: RunReport) -> str:
    rows = []
    for p in r.problems:
        rate = p.correct / p.samples if p.samples else float("nan")
        rows.append(
            f"<tr><td class=l>{_e(p.problem_id)}</td><td class=l>{_e(_reference(p.reference))}</td>"
            f"<td>{p.samples}</td><td>{p.correct}</td><td>{_f(rate)}</td>"
            f"<td>{'' if p.first_correct_index is None else p.first_correct_index}</td>"
            f"<td class=l><code>{_e(_short(p.top_answer))}</code></td></tr>"
        )
    return (
        f"<h3>{_e(r.label)}</h3><table><tr><th class=l>problem</th><th class=l>reference</th>"
        "<th>samples</th><th>correct</th><th>pass@1</th><th>first correct</th>"
        f"<th class=l>majority answer</th></tr>{''.join(rows)}</table>"
    )


def _sample_browser(r: RunReport, per_problem: int) -> str:
    parts = [f"<h3>{_e(r.label)}</h3>"]
    for prob in r.data.problems:
        shown = min(prob.n, per_problem)
        items = []
        for i in range(shown):
            status = (
                "correct"
                if prob.correct[i]
                else ("unparsed" if prob.answers[i] is None else "incorrect")
            )
            score = prob.scores[i]
            score_txt = "" if np.isnan(score) else f", score {score:.3f}"
            text = prob.texts[i] if i < len(prob.texts) else ""
            items.append(
                f"<div class=sample>#{i} <span class={status}>{status}</span>, answer "
                f"<code>{_e(_short(prob.answers[i]) if prob.answers[i] is not None else '—')}</code>"
                f"{score_txt}<pre>{_e(text)}</pre></div>"
            )
        more = f" (first {shown} of {prob.n} shown)" if shown < prob.n else ""
        parts.append(
            f"<details><summary>{_e(prob.problem_id)}: {prob.c}/{prob.n} correct, reference "
            f"<code>{_e(_reference(prob.reference))}</code>{more}</summary>{''.join(items)}</details>"
        )
    return "".join(parts)


# --- adaptive stop rules, simulated (ponder report --adaptive) -------------------------------------


def _se(x: float | None) -> str:
    return "" if x is None or math.isnan(x) else f" ± {x:.3f}"


def _adaptive_table(sim: AdaptiveSimulation) -> str:
    marks = {v.rule: v for v in sim.verdicts()}
    best = sim.best()
    rows = []
    for rule in sim.rules():
        verdict = marks[rule]
        for p, above in zip(sim.curve(rule), verdict.at_or_above, strict=True):
            star = " ★" if best is not None and best.rule == rule and above else ""
            threshold = "" if p.threshold is None else f"{p.threshold:g}"
            rows.append(
                f"<tr><td class=l>{_e(p.rule)}</td><td>{threshold}</td>"
                f"<td>{p.samples.mean:.2f}</td><td>{p.tokens.mean:,.0f}</td>"
                f"<td>{_f(p.accuracy.mean)}{_se(p.accuracy.stderr)}</td><td>{_f(p.coverage.mean)}</td>"
                f"<td>{p.early:.0%}</td><td>{'yes' if above else 'no'}{star}</td></tr>"
            )
    for b in sim.baseline_shown():
        rows.append(
            f"<tr><td class=l>maj@k</td><td>k={b.k}</td><td>{b.k}</td>"
            f"<td>{b.tokens.mean:,.0f}</td><td>{_f(b.accuracy.mean)}{_se(b.accuracy.stderr)}</td>"
            f"<td>{_f(b.coverage.mean)}</td><td></td><td></td></tr>"
        )
    return (
        "<table><tr><th class=l>rule</th><th>threshold</th><th>mean samples</th><th>mean tokens</th>"
        "<th>vote accuracy</th><th>coverage</th><th>stopped early</th><th>at or above majority@k</th>"
        f"</tr>{''.join(rows)}</table>"
    )


def _adaptive_verdict(sim: AdaptiveSimulation) -> str:
    best = sim.best()
    n = sim.max_samples
    parts = []
    for v in sim.verdicts():
        reach = (
            f"reaches majority@{n} within 1 point at {v.samples_to_match:.2f} samples "
            f"({v.ratio:.2f} of N)"
            if v.samples_to_match is not None and v.ratio is not None
            else f"never comes within 1 point of majority@{n}"
        )
        parts.append(
            f"<li><b>{_e(v.rule)}</b>: {sum(v.at_or_above)} of {len(v.at_or_above)} points at or "
            f"above majority@k{' (everywhere)' if v.dominates else ''}, worst point "
            f"{v.worst_gap * 100:+.1f} points (paired standard error "
            f"{v.gap_stderr[v.gaps.index(v.worst_gap)] * 100:.1f}); {reach}</li>"
        )
    head = (
        f"Best rule (★): <b>{_e(best.rule)}</b>, at or above majority@k at every mean number of samples."
        if best is not None
        else "No rule is at or above majority@k at every mean number of samples."
    )
    return f"<p>{head}</p><ul>{''.join(parts)}</ul>"


def adaptive_section(reports: Sequence[RunReport], sims: Sequence[AdaptiveSimulation]) -> str:
    """The report's section on adaptive stop rules simulated from the stored samples."""
    if not sims:
        return ""
    parts = [
        "<h2>Adaptive stop rules (simulated from the stored samples)</h2>",
        "<p>Each rule is replayed over random orderings of every problem's stored samples, drawing "
        "in rounds and stopping where the rule fires (or at N); accuracy is the vote at the stop "
        "(ties count as a uniform random pick), coverage whether any sample drawn so far is "
        "correct. Majority@k and coverage@k (black) are fixed-N sampling on the same orderings. "
        "Spreads are standard errors over problems.</p>",
    ]
    for r, sim in zip(reports, sims, strict=True):
        left = f", {sim.left_out} left out (fewer samples)" if sim.left_out else ""
        how = "every ordering" if sim.exact else f"{sim.orderings} orderings per problem"
        parts.append(
            f"<h3>{_e(r.label)}</h3><p>N = {sim.max_samples}, rounds of {sim.round_size}, "
            f"{sim.problems} problems{left}, {how} (seed {sim.seed}).</p>"
        )
        axes: tuple[AdaptiveAxis, ...] = ("samples", "tokens")
        for x in axes:
            fig = adaptive_figure(sim, x, r.label)
            parts.append(f"<div class='charts adaptive'>{figure_svg(fig)}</div>")
        parts.append(_adaptive_verdict(sim))
        parts.append(_adaptive_table(sim))
    return "".join(parts)


# --- end of adaptive stop rules -----------------------------------------------------------------


def render_html(
    reports: Sequence[RunReport],
    *,
    samples_per_problem: int = 20,
    cost_x: CostAxis = "tokens",
    adaptive: Sequence[AdaptiveSimulation] = (),
    stops: Sequence[Sequence[StopsSection]] = (),
) -> str:
    """The whole report as one HTML document; ``cost_x`` is the cost chart's x axis (tokens or FLOPs);
    ``adaptive``: simulations of adaptive stop rules, one per report, for their own section;
    ``stops``: each run's adaptive stops (:func:`ponder.analysis.stops_sections`), if any."""
    notes = "".join(f"<p class=note>{_e(r.label)}: {_e(n)}</p>" for r in reports for n in r.notes)
    figures = (coverage_figure(reports), scaling_figure(reports), cost_figure(reports, cost_x))
    charts = "".join(f"<div class=charts>{figure_svg(fig)}</div>" for fig in figures)
    title = f"Ponder report: {', '.join(r.label for r in reports)}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p>Task <b>{_e(reports[0].data.task)}</b>; generated {_e(time.strftime("%Y-%m-%d %H:%M"))} by Ponder.
Coverage@k is the unbiased pass@k estimate (Chen et al. 2021) averaged over problems, with a 95% bootstrap
band over problems; "solved by first k" is the share of problems with a correct answer among their first k
stored samples (a noisier count of the same quantity); selection@k methods are averaged over random subsets of
k samples.</p>
<table><tr><th class=l>run</th><th class=l>model</th><th class=l>task</th><th>problems</th><th>samples</th>
<th>temperature</th><th>top_p</th><th>top_k</th><th>min_p</th><th>max tokens</th><th class=l>verifier</th></tr>
{"".join(_run_header(r) for r in reports)}</table>
{notes}
<h2>Coverage and selection</h2>
{charts}
<h2>Per k</h2>
{"".join(_k_table(r) for r in reports)}
{adaptive_section(reports, adaptive)}
<h2>Scaling law</h2>
{"".join(_fit_block(r) for r in reports)}
<h2>Cost</h2>
{"".join(_cost_block(r) for r in reports)}
<!-- adaptive stops (online adaptive sampling; see ponder.analysis.stops_html) -->
{stops_html([section for sections in stops for section in sections])}
<!-- end adaptive stops -->
<h2>Problems</h2>
{"".join(_problem_table(r) for r in reports)}
<h2>Samples</h2>
{"".join(_sample_browser(r, samples_per_problem) for r in reports)}
</body></html>
"""
