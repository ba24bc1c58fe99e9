"""Analysis of stored samples: pass@k, coverage curves, selection@k, the scaling law, cost, reports.

Also what adaptive stop rules would have spent and won, replayed over the stored samples
(:func:`simulate_adaptive`).

Everything works on :class:`RunData` (a run's verified samples as arrays), loaded with :func:`load_run`.
"""

from typing import TYPE_CHECKING, Any

from ponder.analysis._adaptive import (
    DEFAULT_RULES,
    AdaptivePoint,
    AdaptiveSimulation,
    BaselinePoint,
    Estimate,
    RuleVerdict,
    SimulatedRows,
    adaptive_json,
    simulate_adaptive,
)
from ponder.analysis._cost import CostSummary, Prices, cost_curve, cost_summary, model_params
from ponder.analysis._curves import (
    Curve,
    coverage_curve,
    k_grid_log,
    per_problem_pass_at_k,
    samples_to_reach,
)
from ponder.analysis._data import ProblemSamples, RunData, ScoreSource, load_run
from ponder.analysis._passk import (
    coverage_at_k,
    k_grid,
    pass_at_k,
    pass_at_k_matrix,
    solved_by_first_k,
)
from ponder.analysis._report import RunReport, build_report, check_comparable, report_json
from ponder.analysis._scaling import ScalingFit, fit_scaling_law
from ponder.analysis._select import (
    Method,
    gap_to_coverage,
    per_problem_selection,
    selection_curve,
)
from ponder.analysis._stops import (
    STOPS_COLUMNS,
    StopsSection,
    reasons_text,
    stops_html,
    stops_json,
    stops_rows,
    stops_sections,
    vote_correct,
)
from ponder.analysis._summary import KPoint, RunSummaryStats, summarize, summarize_tallies
from ponder.analysis._tally import (
    ProblemTally,
    declared_verifier,
    run_tallies,
    run_verifier,
    tally,
)

if TYPE_CHECKING:
    from ponder.analysis._html import render_html
    from ponder.analysis._plots import figure_svg, save_plots


def __getattr__(name: str) -> Any:
    # Rendering pulls in matplotlib (~0.5 s); load it only when a report is rendered.
    if name == "render_html":
        from ponder.analysis._html import render_html

        return render_html
    if name == "figure_svg":
        from ponder.analysis._plots import figure_svg

        return figure_svg
    if name == "save_plots":
        from ponder.analysis._plots import save_plots

        return save_plots
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_RULES",
    "STOPS_COLUMNS",
    "AdaptivePoint",
    "AdaptiveSimulation",
    "BaselinePoint",
    "CostSummary",
    "Curve",
    "Estimate",
    "KPoint",
    "Method",
    "Prices",
    "ProblemSamples",
    "ProblemTally",
    "RuleVerdict",
    "RunData",
    "RunReport",
    "RunSummaryStats",
    "ScalingFit",
    "ScoreSource",
    "SimulatedRows",
    "StopsSection",
    "adaptive_json",
    "build_report",
    "check_comparable",
    "cost_curve",
    "cost_summary",
    "coverage_at_k",
    "coverage_curve",
    "declared_verifier",
    "figure_svg",
    "fit_scaling_law",
    "gap_to_coverage",
    "k_grid",
    "k_grid_log",
    "load_run",
    "model_params",
    "pass_at_k",
    "pass_at_k_matrix",
    "per_problem_pass_at_k",
    "per_problem_selection",
    "reasons_text",
    "render_html",
    "report_json",
    "run_tallies",
    "run_verifier",
    "samples_to_reach",
    "save_plots",
    "selection_curve",
    "simulate_adaptive",
    "solved_by_first_k",
    "stops_html",
    "stops_json",
    "stops_rows",
    "stops_sections",
    "summarize",
    "summarize_tallies",
    "tally",
    "vote_correct",
]
