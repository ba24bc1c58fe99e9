"""Everything a report shows about one run, computed once: curves, selection, scaling law, cost, problems."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ponder.analysis._cost import CostSummary, Prices, cost_curve, cost_summary
from ponder.analysis._curves import Curve, coverage_curve, k_grid_log, samples_to_reach
from ponder.analysis._data import RunData
from ponder.analysis._passk import solved_by_first_k
from ponder.analysis._scaling import ScalingFit, fit_scaling_law
from ponder.analysis._select import Method, selection_curve
from ponder.errors import UserError

SELECTION_METHODS: tuple[Method, ...] = ("majority", "weighted", "best_of")
COVERAGE_TARGETS = (0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class ProblemRow:
    problem_id: str
    reference: str | None
    samples: int
    correct: int
    first_correct_index: int | None
    first_correct_answer: str | None
    top_answer: str | None
    """The most frequent extracted answer (what majority vote over all samples picks)."""


@dataclass(frozen=True)
class RunReport:
    data: RunData
    ks: np.ndarray
    coverage: Curve
    """Unbiased pass@k averaged over problems, with a bootstrap band over problems."""
    solved_by_first_k: np.ndarray
    """Share of problems solved by one of their first k samples (NaN where a problem has fewer
    than k); an empirical count, noisier than coverage, shown beside it and labelled apart."""
    selection: dict[str, Curve]
    fit: ScalingFit | None
    fit_error: str | None
    cost: CostSummary
    cost_by_k: dict[str, np.ndarray]
    samples_needed: dict[float, int | None]
    problems: list[ProblemRow]
    has_scores: bool
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.data.label


def _first_k(data: RunData, ks: np.ndarray) -> np.ndarray:
    first = [p.first_correct for p in data.problems]
    n = [p.n for p in data.problems]
    return np.array([solved_by_first_k(first, n, int(k)) for k in ks], dtype=np.float64)


def _problem_rows(data: RunData) -> list[ProblemRow]:
    rows = []
    for p in data.problems:
        idx = p.first_correct
        counts: dict[str, int] = {}
        for a in p.answers:
            if a is not None:
                counts[a] = counts.get(a, 0) + 1
        top = max(counts, key=lambda a: counts[a]) if counts else None
        rows.append(
            ProblemRow(
                problem_id=p.problem_id,
                reference=p.reference,
                samples=p.n,
                correct=p.c,
                first_correct_index=idx,
                first_correct_answer=p.answers[idx] if idx is not None else None,
                top_answer=top,
            )
        )
    return rows


def build_report(
    data: RunData,
    *,
    bootstrap: int = 1000,
    subsets: int = 100,
    holdout: int = 2,
    prices: Prices | None = None,
    params: int | None = None,
    seed: int = 0,
) -> RunReport:
    """Compute every analysis of one run (all estimates use only verified samples)."""
    n = data.n_per_problem()
    if len(n) == 0 or n.max() == 0:
        raise UserError(
            f"run {data.run_id} has no verified samples",
            hint=f"verify it first: ponder verify {data.run_id}",
        )
    notes = []
    if int(n.min()) == 0:
        # A run still being sampled (or killed early) has problems with nothing verified yet: report
        # the others and say so, rather than refuse or count the empty ones as failures.
        empty = int((n == 0).sum())
        notes.append(
            f"{empty} of {len(n)} problems have no verified sample yet and are left out "
            f"(sample or verify them: ponder verify {data.run_id})"
        )
        data = replace(data, problems=[p for p in data.problems if p.n > 0])
        n = data.n_per_problem()
    n_min = int(n.min())
    if n_min < int(n.max()):
        notes.append(
            f"problems have {n_min} to {int(n.max())} verified samples; curves stop at k={n_min} "
            "(beyond it pass@k is undefined for some problems)"
        )
    ks = k_grid_log(n_min)
    coverage = coverage_curve(data, ks, bootstrap=bootstrap, seed=seed)
    has_scores = any(bool(np.isfinite(p.scores).any()) for p in data.problems)
    selection: dict[str, Curve] = {}
    for method in SELECTION_METHODS:  # a tuple of Method literals
        if method != "majority" and not has_scores:
            continue
        selection[method] = selection_curve(data, method, ks, subsets=subsets, seed=seed)
    if not has_scores:
        notes.append(
            "no per-sample scores (verifier scores or token log-probabilities): best-of-k and weighted "
            "vote are not shown; sample with logprobs to get them"
        )
    fit: ScalingFit | None = None
    fit_error: str | None = None
    try:
        fit = fit_scaling_law(ks, coverage.mean, holdout=holdout)
    except UserError as exc:
        fit_error = exc.message
    prices = prices or Prices()
    return RunReport(
        data=data,
        ks=ks,
        coverage=coverage,
        solved_by_first_k=_first_k(data, ks),
        selection=selection,
        fit=fit,
        fit_error=fit_error,
        cost=cost_summary(data, prices=prices, params=params),
        cost_by_k=cost_curve(data, ks, prices=prices, params=params),
        samples_needed={t: samples_to_reach(coverage, t) for t in COVERAGE_TARGETS},
        problems=_problem_rows(data),
        has_scores=has_scores,
        notes=notes,
    )


def check_comparable(reports: Sequence[RunReport]) -> None:
    """Runs drawn on different tasks must not be drawn as one comparison."""
    tasks = {r.data.task for r in reports}
    if len(tasks) > 1:
        raise UserError(
            f"runs are on different tasks ({', '.join(sorted(tasks))}); their curves cannot be compared "
            "on the same axes",
            hint="report each task's runs separately",
        )


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _arr(a: np.ndarray) -> list[float | None]:
    return [_num(float(x)) for x in a]


def report_json(r: RunReport) -> dict[str, Any]:
    """A JSON-ready dict (undefined values are null)."""
    out: dict[str, Any] = {
        "run": r.data.run_id,
        "label": r.label,
        "task": r.data.task,
        "model": r.data.spec.model,
        "verifier": r.data.verifier,
        "problems": len(r.data.problems),
        "k": [int(k) for k in r.ks],
        "coverage": {
            "mean": _arr(r.coverage.mean),
            "lo": _arr(r.coverage.lo),
            "hi": _arr(r.coverage.hi),
        },
        "solved_by_first_k": _arr(r.solved_by_first_k),
        "selection": {m: _arr(c.mean) for m, c in r.selection.items()},
        "gap_to_coverage": {m: _arr(r.coverage.mean - c.mean) for m, c in r.selection.items()},
        "samples_needed": {f"{t:.2f}": v for t, v in r.samples_needed.items()},
        "cost": {
            "samples": r.cost.samples,
            "prompt_tokens": r.cost.prompt_tokens,
            "completion_tokens": r.cost.completion_tokens,
            "params": r.cost.params,
            "flops": _num(r.cost.flops),
            "dollars": _num(r.cost.dollars),
            "by_k": {key: _arr(np.asarray(v, dtype=float)) for key, v in r.cost_by_k.items()},
        },
        "notes": r.notes,
    }
    if r.fit is not None:
        f = r.fit
        out["scaling_law"] = {
            "model": "coverage = exp(a * k^b)",
            "a": f.a,
            "b": f.b,
            "a_ci": list(f.a_ci),
            "b_ci": list(f.b_ci),
            "r2": f.r2,
            "holdout_k": [int(k) for k in f.holdout_k],
            "holdout_error": _num(f.holdout_error),
            "extrapolate_k": f.extrapolate_k,
            "extrapolated": f.extrapolated,
        }
    else:
        out["scaling_law"] = {"error": r.fit_error}
    return out
