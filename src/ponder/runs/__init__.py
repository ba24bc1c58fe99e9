"""Runs: the drivers that fill the store — the resumable sampler, system runs with traces, and verification.

Run identity and the store itself live in :mod:`ponder.store`.
"""

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
    "plan",
    "run_stats",
    "sample_run",
    "system_run",
    "system_spec",
    "verify_run",
]
