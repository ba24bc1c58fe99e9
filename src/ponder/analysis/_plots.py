"""Charts of one or more runs on shared axes (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ponder.errors import UserError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ponder.analysis._adaptive import AdaptiveSimulation
    from ponder.analysis._report import RunReport

_SELECTION_STYLE = {"majority": "--", "weighted": "-.", "best_of": ":"}
_SELECTION_LABEL = {
    "majority": "majority vote",
    "weighted": "weighted vote",
    "best_of": "best-of-k",
}


def _figure() -> Figure:
    # Imported here: matplotlib costs ~0.5 s to import and only reports need it.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), dpi=100, layout="constrained")
    return fig


def _colors(count: int) -> list[str]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    return [palette[i % len(palette)] for i in range(count)]


_SUFFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e4, "k"))


def _plain_number(x: float) -> str:
    """``1``, ``20k``, ``3M``, ``1T`` (FLOPs reach 1e15 and beyond: ``1e+06M`` is unreadable)."""
    for scale, suffix in _SUFFIXES:
        if x >= scale:
            value = x / scale if scale != 1e4 else x / 1e3
            return f"{value:g}{suffix}" if x < 1e18 else f"{x:.0e}"
    return f"{x:g}"


def _log_x(ax: Axes, base: int = 10) -> None:
    """A log x axis labelled 1, 2, 4, ... or 10k, 1M: plainer to read than 2^n, and it skips
    matplotlib's mathtext parser, which was most of the time it took to draw a chart."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log", base=base)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _plain_number(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _nice_log_ticks(lo: float, hi: float) -> list[float]:
    """Round numbers (1-2-5 steps, else every digit) between ``lo`` and ``hi``; at least two when
    the range allows. A log axis's own ticks sit at whole decades only, so a range narrower than a
    decade (tokens at k = 1..8) would otherwise get no labelled tick at all."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 or hi < lo:
        return []
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), tuple(float(m) for m in range(1, 10))):
        ticks = [m * 10.0**e for e in decades for m in mantissas]
        inside = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
        if len(inside) >= 3 or (mantissas[-1] == 9.0 and inside):
            return inside
    # Narrower than one step between round numbers: label the ends themselves.
    return sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})


def _finish(ax: Axes, *, xlabel: str, ylabel: str, title: str) -> None:
    """Labels, a 0-1 share axis, the grid and the legend: the same on every chart."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title)


def coverage_figure(reports: Sequence[RunReport]) -> Figure:
    """Coverage (with its band) and selection@k against k on a log axis."""
    fig = _figure()
    ax = fig.add_subplot()
    for r, color in zip(reports, _colors(len(reports)), strict=True):
        c = r.coverage
        ax.plot(c.k, c.mean, "-o", color=color, ms=3, label=f"{r.label}: coverage (pass@k)")
        ax.fill_between(c.k, c.lo, c.hi, color=color, alpha=0.15, linewidth=0)
        for method, curve in r.selection.items():
            ax.plot(
                curve.k,
                curve.mean,
                _SELECTION_STYLE[method],
                color=color,
                label=f"{r.label}: {_SELECTION_LABEL[method]}",
            )
    _log_x(ax, base=2)
    _finish(
        ax,
        xlabel="samples per problem (k)",
        ylabel="share of problems solved",
        title="Coverage and selection@k",
    )
    return fig


def scaling_figure(reports: Sequence[RunReport]) -> Figure:
    """Observed coverage, the fitted exponentiated power law, and its extrapolation to 10x k."""
    fig = _figure()
    ax = fig.add_subplot()
    for r, color in zip(reports, _colors(len(reports)), strict=True):
        ax.plot(r.coverage.k, r.coverage.mean, "o", color=color, ms=4, label=f"{r.label}: observed")
        f = r.fit
        if f is None:
            continue
        kk = np.unique(np.geomspace(1, f.extrapolate_k, 200).round().astype(int))
        fitted = kk <= r.ks.max()
        ax.plot(
            kk[fitted],
            f.predict(kk[fitted]),
            "-",
            color=color,
            label=f"{r.label}: exp({f.a:.3g}·k^{f.b:.3g}), R²={f.r2:.3f}",
        )
        ax.plot(kk[~fitted], f.predict(kk[~fitted]), "--", color=color, alpha=0.7)
        if len(f.holdout_k):
            ax.plot(f.holdout_k, f.holdout_observed, "x", color=color, ms=8, label="held out")
    _log_x(ax, base=2)
    _finish(
        ax,
        xlabel="samples per problem (k)",
        ylabel="coverage",
        title="Scaling law: log coverage = a·k^b (dashed: extrapolation)",
    )
    return fig


CostAxis = Literal["tokens", "flops"]
"""What the cost chart's x axis counts: tokens, or FLOPs (``2 * params`` per token, see :mod:`ponder.analysis`)."""

_COST_AXIS = {
    "tokens": ("total_tokens", "total tokens (prompt + completion, all problems)"),
    "flops": ("flops", "FLOPs (2 x parameters x tokens, all problems)"),
}


def cost_figure(reports: Sequence[RunReport], x: CostAxis = "tokens") -> Figure:
    """Coverage (solid) and majority vote (dashed) against what they cost: tokens or FLOPs.

    FLOPs put runs of different models on one axis (a small model with many samples against a large
    one with few); they need each run's parameter count.

    Raises:
        UserError: ``x="flops"`` for a run whose model's parameter count is unknown.
    """
    if x not in _COST_AXIS:
        raise UserError(f"unknown cost axis {x!r}", hint=f"choose one of: {', '.join(_COST_AXIS)}")
    key, xlabel = _COST_AXIS[x]
    fig = _figure()
    ax = fig.add_subplot()
    spans = []
    for r, color in zip(reports, _colors(len(reports)), strict=True):
        cost = np.asarray(r.cost_by_k[key], dtype=float)
        if not np.isfinite(cost).any():
            raise UserError(
                f"run {r.data.run_id} has no FLOPs: the parameter count of {r.data.spec.model} is unknown",
                hint="pass the model's parameter count (ponder report --params N), or plot tokens",
            )
        ax.plot(cost, r.coverage.mean, "-o", color=color, ms=3, label=f"{r.label}: coverage")
        if "majority" in r.selection:
            ax.plot(
                cost,
                r.selection["majority"].mean,
                _SELECTION_STYLE["majority"],
                color=color,
                label=f"{r.label}: majority vote",
            )
        spans.append(cost[np.isfinite(cost) & (cost > 0)])
    _log_x(ax)
    shown = np.concatenate(spans) if spans else np.array([])
    if shown.size:
        from matplotlib.ticker import FixedLocator

        ax.xaxis.set_major_locator(FixedLocator(_nice_log_ticks(shown.min(), shown.max())))
    _finish(
        ax,
        xlabel=xlabel,
        ylabel="share of problems solved",
        title=f"Coverage versus cost ({x})",
    )
    return fig


# --- adaptive stop rules, simulated (ponder report --adaptive) -------------------------------------

AdaptiveAxis = Literal["samples", "tokens"]
"""What an adaptive chart's x axis counts per problem: samples, or completion tokens."""


def adaptive_figure(sim: AdaptiveSimulation, x: AdaptiveAxis, label: str) -> Figure:
    """Accuracy of the vote at the stop (solid) and coverage (dotted) of every rule's threshold
    sweep against the mean samples or completion tokens per problem, beside fixed-N majority@k
    and coverage@k (black) on the same orderings."""
    fig = _figure()
    ax = fig.add_subplot()
    base_x = [float(b.k) if x == "samples" else b.tokens.mean for b in sim.baseline]
    ax.plot(base_x, [b.accuracy.mean for b in sim.baseline], "--", color="black",
            label="majority@k (fixed N)")  # fmt: skip
    ax.plot(base_x, [b.coverage.mean for b in sim.baseline], ":", color="black",
            label="coverage@k (fixed N)")  # fmt: skip
    spans = [np.asarray(base_x)]
    for rule, color in zip(sim.rules(), _colors(len(sim.rules())), strict=True):
        pts = sim.curve(rule)
        xs = np.array([p.samples.mean if x == "samples" else p.tokens.mean for p in pts])
        ax.plot(xs, [p.accuracy.mean for p in pts], "-o", color=color, ms=3,
                label=f"{rule}: vote accuracy")  # fmt: skip
        ax.plot(xs, [p.coverage.mean for p in pts], ":", color=color, alpha=0.6)
        spans.append(xs)
    _log_x(ax)
    shown = np.concatenate(spans)
    shown = shown[np.isfinite(shown) & (shown > 0)]
    if shown.size:
        from matplotlib.ticker import FixedLocator

        ax.xaxis.set_major_locator(FixedLocator(_nice_log_ticks(shown.min(), shown.max())))
    what = "samples" if x == "samples" else "completion tokens"
    _finish(
        ax,
        xlabel=f"mean {what} per problem",
        ylabel="share of problems (dotted: coverage)",
        title=f"{label}: adaptive stop rules vs fixed N ({what})",
    )
    return fig


# --- end of adaptive stop rules -----------------------------------------------------------------


FIGURES = {"coverage": coverage_figure, "scaling": scaling_figure, "cost": cost_figure}


def figure_svg(fig: Figure) -> str:
    """The figure as an inline SVG element (no external references)."""
    from matplotlib import rc_context

    buf = io.StringIO()
    # Text stays text (rendered with the page's sans-serif font) instead of glyph outlines: a
    # third of the time and the size, and the labels can be selected and searched.
    with rc_context({"svg.fonttype": "none", "font.family": "sans-serif"}):
        fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def save_plots(
    reports: Sequence[RunReport],
    directory: Path,
    formats: Sequence[str] = ("png", "svg"),
    *,
    cost_x: CostAxis = "tokens",
) -> list[Path]:
    """Write every chart in every format to ``directory``; returns the paths.

    ``cost_x``: the x axis of the cost chart (tokens or FLOPs).
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in FIGURES.items():
        fig = cost_figure(reports, cost_x) if name == "cost" else make(reports)
        for fmt in formats:
            path = directory / f"{name}.{fmt}"
            fig.savefig(path, format=fmt)
            written.append(path)
    return written
