"""Sampling: run identity, the SQLite store, the resumable sampler and the verification driver."""

from ponder.sampling._sampler import SamplingReport, WorkUnit, plan, sample_run
from ponder.sampling._spec import RunSpec, request_seed, run_spec
from ponder.sampling._store import (
    DEFAULT_DB,
    ProblemRow,
    RunInfo,
    RunSummary,
    Store,
    default_db_path,
)
from ponder.sampling._verifying import VerifyReport, verify_run

__all__ = [
    "DEFAULT_DB",
    "ProblemRow",
    "RunInfo",
    "RunSpec",
    "RunSummary",
    "SamplingReport",
    "Store",
    "VerifyReport",
    "WorkUnit",
    "default_db_path",
    "plan",
    "request_seed",
    "run_spec",
    "sample_run",
    "verify_run",
]
