"""Analysis of stored samples: pass@k, coverage, run summaries."""

from ponder.analysis._passk import coverage_at_k, k_grid, pass_at_k
from ponder.analysis._summary import KPoint, RunSummaryStats, summarize

__all__ = ["KPoint", "RunSummaryStats", "coverage_at_k", "k_grid", "pass_at_k", "summarize"]
