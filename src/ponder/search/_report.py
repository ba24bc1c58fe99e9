"""What a search shows: the trials and test tables (rich), one self-contained HTML page, JSON, and
the systems of the front written as ordinary config files."""

from __future__ import annotations

import html
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from ponder.search._results import SearchResult, TestResult, TrialResult

_LAYER = re.compile(r"^layers\[(\d+)\]\.([^.]+)\.(.+)$")
_GENERATE_SHORT = {"generate.n": "n", "generate.temperature": "T"}
TRIAL_COLUMNS = (
    "trial",
    "state",
    "system",
    "dev acc",
    "tokens/q",
    "calls/q",
    "reused",
    "note",
)
"""The columns of :func:`trial_row`, in order."""


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def _short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _model_label(value: Any) -> str:
    """A model spec (proposals label specs by their JSON) as ``backend:model``."""
    if isinstance(value, str) and value.startswith("{"):
        try:
            spec = json.loads(value)
        except json.JSONDecodeError:
            return _short_value(value)
        if isinstance(spec, dict) and "backend" in spec:
            name = spec.get("model") or spec.get("name")
            return _short_value(f"{spec['backend']}:{name}" if name else spec["backend"])
    return _short_value(value)


def decisions(params: Mapping[str, Any]) -> str:
    """A trial's decisions in short form: ``qwen n=8 T=0.7 + critique + rank(top_k=2)``.

    Layers left out are not shown; a layer's knobs follow its name in parentheses.
    """
    head: list[str] = []
    layers: dict[int, tuple[str, bool, list[str]]] = {}
    for key, value in params.items():
        if key == "generate.model":
            head.insert(0, _model_label(value))
        elif key in _GENERATE_SHORT:
            head.append(f"{_GENERATE_SHORT[key]}={_short_value(value)}")
        elif (m := _LAYER.match(key)) is not None:
            index, kind, knob = int(m.group(1)), m.group(2), m.group(3)
            name, used, knobs = layers.get(index, (kind, True, []))
            if knob == "use":
                used = bool(value)
            else:
                knobs.append(f"{knob}={_short_value(value)}")
            layers[index] = (name, used, knobs)
        else:
            head.append(f"{key}={_short_value(value)}")
    parts = [" ".join(head)] if head else []
    for _, (name, used, knobs) in sorted(layers.items()):
        if used:
            parts.append(f"{name}({', '.join(knobs)})" if knobs else name)
    return " + ".join(parts) or "–"


def trial_row(trial: TrialResult, *, on_front: bool = False) -> list[str]:
    """One trial as the cells of :data:`TRIAL_COLUMNS` (a ``*`` after the number marks the front);
    the CLI adds these to :func:`new_trials_table` as trials end."""
    reused = f"{trial.reused_calls}/{trial.calls}" if trial.calls else "–"
    return [
        f"{trial.number}{' *' if on_front else ''}",
        trial.state,
        decisions(trial.params),
        _num(trial.accuracy),
        _num(trial.tokens_per_query, 1),
        _num(trial.calls_per_query, 2),
        reused,
        trial.note,
    ]


def new_trials_table(title: str | None = None) -> Table:
    """An empty table with the columns of :func:`trial_row`."""
    table = Table(title=title)
    for name in TRIAL_COLUMNS:
        numeric = name in {"dev acc", "tokens/q", "calls/q", "reused"}
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    return table


def trials_table(result: SearchResult) -> Table:
    """Every trial of a search, in order; front rows marked ``*`` and bold."""
    on_front = set(result.front)
    table = new_trials_table(
        f"search {result.study} ({result.algorithm}, {len(result.dev_ids)} dev problems; "
        "* = Pareto front)"
    )
    for t in result.trials:
        table.add_row(
            *trial_row(t, on_front=t.number in on_front),
            style="bold" if t.number in on_front else None,
        )
    return table


def _ci(row: TestResult) -> str:
    return f"[{row.ci[0]:.3f}, {row.ci[1]:.3f}]"


def test_table(result: SearchResult) -> Table:
    """The test evaluation: each system of the front tested, then the baselines."""
    table = Table(title=f"test split ({len(result.test_ids)} problems; 95% bootstrap intervals)")
    for name in ("system", "kind", "correct", "accuracy", "95% CI", "tokens/q", "calls/q", "run"):
        table.add_column(name, justify="left" if name in {"system", "kind", "run"} else "right")
    for row in result.tests:
        table.add_row(
            row.label,
            row.kind,
            f"{row.correct}/{row.problems}",
            _num(row.accuracy),
            _ci(row),
            _num(row.tokens_per_query, 1),
            _num(row.calls_per_query, 2),
            row.run_id[:12],
        )
    return table


test_table.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite its name


# ----- config files ---------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "search"


def config_yaml(config: Mapping[str, Any]) -> str:
    """A system config as the YAML ``ponder run`` and ``ponder serve`` read."""
    return yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)


def write_configs(
    result: SearchResult, directory: str | Path, *, trials: list[int] | None = None
) -> dict[int, Path]:
    """Write each system of the front (or of ``trials``) as ``<study>-trial<N>.yaml`` in
    ``directory`` (created if missing): an ordinary system config that ``ponder run CONFIG --task
    T`` and ``ponder serve CONFIG`` use as it is, headed by a comment with its dev results.

    Returns:
        trial number -> path written.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[int, Path] = {}
    for number in result.front if trials is None else trials:
        t = result.trial(number)
        path = out / f"{_safe(result.study)}-trial{number}.yaml"
        header = (
            f"# Found by `ponder search` (study {result.study}, trial {number}): dev accuracy "
            f"{_num(t.accuracy)} on {t.problems} problems, {_num(t.tokens_per_query, 1)} tokens "
            f"per query.\n"
        )
        path.write_text(header + config_yaml(t.config), encoding="utf-8")
        written[number] = path
    return written


# ----- JSON -----------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    # JSON has no NaN or tuples: undefined numbers are null, intervals are lists.
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def result_json(result: SearchResult) -> dict[str, Any]:
    """The whole result as JSON-ready data (``ponder search --json``), with the calls the search
    made and how many were reused."""
    data = asdict(result)
    data["configs"] = {str(k): v for k, v in result.configs.items()}
    data["calls"] = result.calls
    data["reused_calls"] = result.reused_calls
    return dict(_clean(data))


# ----- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;vertical-align:top}
th{background:#f5f5f5}td.l,th.l{text-align:left}
tr.front td{font-weight:600}tr.out td{color:#888}
.charts svg{max-width:100%;height:auto}
details{margin:.2rem 0}summary{cursor:pointer}
pre{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:.4rem;font-size:.8rem;margin:.2rem 0;
text-align:left}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _scatter(result: SearchResult) -> str:
    """Dev accuracy against tokens per query: complete trials in colour, pruned and infeasible
    ones (their partial results) in grey, the front as a step line."""
    from matplotlib.figure import Figure

    from ponder.analysis import figure_svg

    fig = Figure(figsize=(7.5, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    # (tokens per query, accuracy, trial): partial results of pruned/infeasible trials too.
    drawn = [
        (t.tokens_per_query, t.accuracy, t)
        for t in result.trials
        if t.accuracy is not None and t.tokens_per_query
    ]
    groups = (
        ([p for p in drawn if p[2].state != "complete"], "#bbbbbb", "x", "pruned / infeasible"),
        ([p for p in drawn if p[2].state == "complete"], "#1f77b4", "o", "complete"),
    )
    for points, color, marker, label in groups:
        if points:
            ax.scatter(
                [x for x, _, _ in points],
                [y for _, y, _ in points],
                color=color,
                marker=marker,
                label=label,
            )
    on_front = sorted(
        (x, y) for x, y, t in drawn if t.number in set(result.front) and t.state == "complete"
    )
    if on_front:
        ax.plot(
            [x for x, _ in on_front],
            [y for _, y in on_front],
            drawstyle="steps-post",
            color="#d62728",
            marker="o",
            label="Pareto front",
        )
    labels: dict[tuple[float, float], list[str]] = {}
    for x, y, t in drawn:  # trials at the same point share one label
        labels.setdefault((x, y), []).append(str(t.number))
    for (x, y), numbers in labels.items():
        ax.annotate(
            ", ".join(numbers), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    costs = [x for x, _, _ in drawn]
    if costs and max(costs) / min(costs) > 20:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        # Plain labels (10, 100): matplotlib's 10^n needs its slow mathtext parser.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.set_xlabel("tokens per query (dev)")
    ax.set_ylabel("accuracy (dev)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("trials: accuracy against cost")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(loc="lower right", fontsize=8)
    return figure_svg(fig)


def _trial_html(t: TrialResult, on_front: bool) -> str:
    cls = "front" if on_front else ("out" if t.state != "complete" else "")
    run = _e(t.run_id[:12]) if t.run_id else "–"
    return (
        f"<tr class='{cls}'><td>{t.number}{' ★' if on_front else ''}</td>"
        f"<td class=l>{_e(t.state)}</td><td class=l>{_e(decisions(t.params))}</td>"
        f"<td>{t.correct}/{t.problems}</td><td>{_num(t.accuracy)}</td>"
        f"<td>{_num(t.tokens_per_query, 1)}</td><td>{_num(t.calls_per_query, 2)}</td>"
        f"<td>{t.reused_calls}/{t.calls}</td><td class=l>{run}</td><td class=l>{_e(t.note)}</td>"
        f"<td class=l><details><summary>config</summary><pre>{_e(config_yaml(t.config))}</pre>"
        "</details></td></tr>"
    )


def _test_html(result: SearchResult) -> str:
    if not result.tests:
        return "<p>No test evaluation.</p>"
    rows = "".join(
        f"<tr><td class=l>{_e(r.label)}</td><td class=l>{_e(r.kind)}</td>"
        f"<td>{r.correct}/{r.problems}</td><td>{_num(r.accuracy)}</td><td>{_e(_ci(r))}</td>"
        f"<td>{_num(r.tokens_per_query, 1)}</td><td>{_num(r.calls_per_query, 2)}</td>"
        f"<td class=l>{_e(r.run_id[:12])}</td></tr>"
        for r in result.tests
    )
    return (
        "<table><tr><th class=l>system</th><th class=l>kind</th><th>correct</th>"
        "<th>accuracy</th><th>95% CI</th><th>tokens/query</th><th>calls/query</th>"
        f"<th class=l>run</th></tr>{rows}</table>"
    )


def render_search_html(result: SearchResult) -> str:
    """The search as one self-contained HTML page (inline SVG, no scripts or network): the accuracy
    against cost scatter of the trials with the Pareto front, every trial with its config, and
    the test evaluation with bootstrap intervals. All text is escaped."""
    on_front = set(result.front)
    title = f"Ponder search {result.study}"
    task = ", ".join(f"{k}={v}" for k, v in result.task.items())
    trials = "".join(_trial_html(t, t.number in on_front) for t in result.trials)
    configs = "".join(
        f"<li>trial {n}: <code>{_e(path)}</code></li>" for n, path in result.configs.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p>Space <b>{_e(result.space.get("name", "space"))}</b> on task <b>{_e(task)}</b>, searched with
{_e(result.algorithm)} on {len(result.dev_ids)} dev problems; {len(result.test_ids)} test problems held
out. {len(result.trials)} trials made {result.calls} model calls, {result.reused_calls} of them served from
stored generations. Generated {_e(time.strftime("%Y-%m-%d %H:%M"))} by Ponder.</p>
<h2>Accuracy against cost (dev)</h2>
<div class=charts>{_scatter(result)}</div>
<h2>Test evaluation</h2>
<p>The systems of the Pareto front tested, then one greedy sample and a sample-N vote at about the
best system's tokens per query, on the same test problems; intervals are 95% percentile bootstraps over
the test problems.</p>
{_test_html(result)}
<h2>Trials</h2>
<table><tr><th>trial</th><th class=l>state</th><th class=l>system</th><th>correct</th><th>accuracy</th>
<th>tokens/query</th><th>calls/query</th><th>reused calls</th><th class=l>run</th><th class=l>note</th>
<th class=l>config</th></tr>{trials}</table>
{f"<h2>Config files</h2><ul>{configs}</ul>" if configs else ""}
</body></html>
"""
