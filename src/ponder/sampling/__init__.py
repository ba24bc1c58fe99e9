"""Sampling: run identity, the SQLite store, the resumable sampler and the verification driver.

System runs (a composed system answering a task, with traces) are stored and verified the same way.
"""

from ponder.sampling._sampler import SamplingReport, WorkUnit, plan, sample_run
from ponder.sampling._spec import RunSpec, request_seed, run_spec
from ponder.sampling._store import (
    DEFAULT_DB,
    ProblemRow,
    RunInfo,
    RunSummary,
    Store,
    TraceRow,
    default_db_path,
)
from ponder.sampling._systems import (
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
from ponder.sampling._verifying import VerifyReport, verify_run

__all__ = [
    "DEFAULT_DB",
    "ComponentUsage",
    "ProblemRow",
    "RunInfo",
    "RunSpec",
    "RunStats",
    "RunSummary",
    "SamplingReport",
    "Store",
    "SystemRunReport",
    "TraceRow",
    "VerifyReport",
    "WorkUnit",
    "baseline_backend",
    "baseline_run",
    "baseline_settings",
    "default_db_path",
    "is_system_spec",
    "plan",
    "request_seed",
    "run_spec",
    "run_stats",
    "sample_run",
    "system_run",
    "system_spec",
    "verify_run",
]
