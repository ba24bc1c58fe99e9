"""The store's schema: version 0 plus an ordered list of numbered migrations.

A database records its schema version in ``PRAGMA user_version``. Version 0 is the schema of the
releases before versioning (every table created with ``CREATE TABLE IF NOT EXISTS``, user_version
left at 0); migration ``k`` takes a database from version ``k - 1`` to ``k``. Opening a database runs
every migration it lacks, all in one transaction together with the version bump, so a database is
always at one known version: an interrupted upgrade leaves it as it was.

Rules for whoever changes the schema:

* Add a new migration at the end of :data:`MIGRATIONS`, numbered one past the last. Never edit,
  reorder or remove an existing migration, and never edit :data:`SCHEMA_V0`: databases in the wild
  were written by them, and a test rebuilds a version-0 file from a frozen copy of that schema.
* A migration only adds (tables, nullable columns, indices) or rewrites rows in place; data a user
  stored is never dropped.
* A database whose version is above :data:`SCHEMA_VERSION` was written by a newer Ponder and is
  refused (its tables may mean things this release does not know); the fix is to upgrade Ponder.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ponder.errors import StoreError

SCHEMA_V0: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    model TEXT NOT NULL,
    task TEXT NOT NULL,
    created_at REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS problems (
    run_id TEXT NOT NULL REFERENCES runs(id),
    problem_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    question TEXT NOT NULL,
    reference TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, problem_id)
)""",
    """CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    problem_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    completion_tokens INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    seed INTEGER NOT NULL,
    mean_logprob REAL,
    created_at REAL NOT NULL,
    UNIQUE (run_id, problem_id, idx)
)""",
    """CREATE TABLE IF NOT EXISTS verdicts (
    sample_id INTEGER NOT NULL REFERENCES samples(id),
    verifier TEXT NOT NULL,
    status TEXT NOT NULL,
    extracted TEXT,
    score REAL,
    detail TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY (sample_id, verifier)
)""",
    """CREATE TABLE IF NOT EXISTS traces (
    sample_id INTEGER PRIMARY KEY REFERENCES samples(id),
    trace TEXT NOT NULL,
    calls INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    wall_s REAL NOT NULL
)""",
)
"""The schema of the releases before versioning (user_version 0). Frozen: never edit."""


@dataclass(frozen=True)
class Migration:
    """One schema step: ``statements`` take a database from ``version - 1`` to ``version``."""

    version: int
    what: str
    statements: tuple[str, ...]

    def apply(self, db: sqlite3.Connection) -> None:
        for statement in self.statements:
            db.execute(statement)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "prompts stored with their problem; claims of work units by sampling processes",
        (
            # The exact prompt (JSON: a list of chat messages, or a string) the run's model saw
            # for this problem; NULL for problems stored before this migration (export rebuilds).
            "ALTER TABLE problems ADD COLUMN prompt TEXT",
            # A process drawing samples of a run: who it is and when it last said it is alive.
            # AUTOINCREMENT: an id is never given to a second process, even after deletion.
            """CREATE TABLE owners (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    process_start TEXT,
    started_at REAL NOT NULL,
    heartbeat REAL NOT NULL
)""",
            # A sample index of a problem that an owner is drawing now (deleted once stored).
            """CREATE TABLE claims (
    run_id TEXT NOT NULL REFERENCES runs(id),
    problem_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    owner_id INTEGER NOT NULL REFERENCES owners(id) ON DELETE CASCADE,
    PRIMARY KEY (run_id, problem_id, idx)
)""",
            "CREATE INDEX claims_owner ON claims (owner_id)",
        ),
    ),
    Migration(
        2,
        "requests answered by `ponder serve`, with their traces",
        (
            # One row per answered (or failed) request; id is the trace id the response carries.
            # The request body is stored as sent, minus nothing secret: keys travel in headers,
            # which are never stored. trace is a system's Trace (JSON), NULL for pass-through.
            """CREATE TABLE server_requests (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    system TEXT,
    status INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    calls INTEGER NOT NULL DEFAULT 0,
    request TEXT NOT NULL,
    response TEXT,
    trace TEXT,
    error TEXT
)""",
            "CREATE INDEX server_requests_created ON server_requests (created_at)",
        ),
    ),
    Migration(
        3,
        "where and why adaptive sampling stopped each problem",
        (
            # One row per (run, problem, schedule): `rule` names the stop rule with its parameters,
            # the round size and the maximum (see ponder.runs.schedule_key); a replay that reaches
            # the same decision rewrites the row. answer is the leading extracted answer (NULL when
            # no sample answered); completion_tokens sums the samples the decision covers; budget
            # is the --budget in force (NULL without one).
            """CREATE TABLE adaptive_stops (
    run_id TEXT NOT NULL REFERENCES runs(id),
    problem_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    samples INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    reason TEXT NOT NULL,
    answer TEXT,
    votes INTEGER NOT NULL,
    statistic REAL,
    completion_tokens INTEGER NOT NULL,
    budget TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, problem_id, rule)
)""",
        ),
    ),
    Migration(
        4,
        "model generations kept for reuse by systems (the generation cache)",
        (
            # Completion `idx` of a request for a model's completions of one prompt: `key` hashes the
            # model identity, the exact prompt and the sampling parameters with the seed (see
            # ponder.systems.StoreGenerationCache). Rows are only added (INSERT OR IGNORE: of two
            # processes drawing the same index, the first to store it wins). prompt_tokens are those
            # of the request that drew the row.
            """CREATE TABLE generations (
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    completion_tokens INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (key, idx)
)""",
        ),
    ),
    Migration(
        5,
        "the node (machine or Ray node) that drew each sample",
        # NULL for samples stored before, and for samples drawn in this process without an executor
        # that names nodes.
        ("ALTER TABLE samples ADD COLUMN node TEXT",),
    ),
)
"""Every migration, in order; ``MIGRATIONS[k - 1].version == k``. Append only."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this release writes."""


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _check_not_newer(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database {path} has schema version {version}, newer than this Ponder knows "
            f"(up to {SCHEMA_VERSION}): it was written by a newer release, whose data this one "
            "could misread",
            hint="upgrade Ponder (pip install -U ponder), or use another --db",
        )


def upgrade(db: sqlite3.Connection, path: Path) -> int:
    """Bring the database on ``db`` (autocommit mode) to :data:`SCHEMA_VERSION`.

    Every missing migration and the version bump run in one write transaction, so a failure
    leaves the file at its old version. Returns the version found before upgrading.

    Raises:
        StoreError: the database is from a newer Ponder.
    """
    found = schema_version(db)
    _check_not_newer(found, path)
    if found == SCHEMA_VERSION:
        return found
    db.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have upgraded between the read above and the write lock.
        found = schema_version(db)
        _check_not_newer(found, path)
        if found == 0:
            for statement in SCHEMA_V0:
                db.execute(statement)
        for migration in MIGRATIONS[found:]:
            migration.apply(db)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return found
