"""The store: run identity and the SQLite file that holds runs, problems, samples, verdicts and traces."""

from ponder.store._spec import RunSpec, request_seed, run_spec
from ponder.store._store import (
    DEFAULT_DB,
    ProblemRow,
    RunInfo,
    RunSummary,
    Store,
    TraceRow,
    default_db_path,
)

__all__ = [
    "DEFAULT_DB",
    "ProblemRow",
    "RunInfo",
    "RunSpec",
    "RunSummary",
    "Store",
    "TraceRow",
    "default_db_path",
    "request_seed",
    "run_spec",
]
