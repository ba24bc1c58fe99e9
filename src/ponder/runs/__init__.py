"""Runs: the drivers that fill the store — the resumable sampler, adaptive sampling (rounds until a
stop rule fires), system runs with traces, and verification.

Run identity and the store itself live in :mod:`ponder.store`.
"""

from ponder.runs._adaptive import (
    AdaptiveReport,
    Budget,
    parse_budget,
    sample_adaptive,
    schedule_key,
)
from ponder.runs._sampler import SamplingReport, WorkUnit, plan, sample_run
from ponder.runs._systems import (
    ComponentUsage,
    RunStats,
    SystemRunReport,
    baseline_backend,
    baseline_run,
    baseline_settings,
    is_system_spec,
    run_stats,
    system_run,
    system_spec,
)
from ponder.runs._verifying import VerifyReport, verify_run

__all__ = [
    "AdaptiveReport",
    "Budget",
    "ComponentUsage",
    "RunStats",
    "SamplingReport",
    "SystemRunReport",
    "VerifyReport",
    "WorkUnit",
    "baseline_backend",
    "baseline_run",
    "baseline_settings",
    "is_system_spec",
    "parse_budget",
    "plan",
    "run_stats",
    "sample_adaptive",
    "sample_run",
    "schedule_key",
    "system_run",
    "system_spec",
    "verify_run",
]
