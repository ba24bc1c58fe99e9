"""The SQLite sample store (WAL): runs, their problems, samples and verdicts; traces of system runs.

Every batch of samples is committed as soon as it is generated; a UNIQUE (run, problem, index) key makes a
resumed run unable to duplicate a sample. A system run stores each problem's answer as sample 0 and the
system's trace of it in ``traces`` (same transaction).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ponder.errors import NotFoundError, StoreError
from ponder.records import Problem, Sample, Verdict
from ponder.store._spec import RunSpec

if TYPE_CHECKING:
    from ponder.systems import Trace

DEFAULT_DB = "ponder.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    model TEXT NOT NULL,
    task TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS problems (
    run_id TEXT NOT NULL REFERENCES runs(id),
    problem_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    question TEXT NOT NULL,
    reference TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, problem_id)
);
CREATE TABLE IF NOT EXISTS samples (
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
);
CREATE TABLE IF NOT EXISTS verdicts (
    sample_id INTEGER NOT NULL REFERENCES samples(id),
    verifier TEXT NOT NULL,
    status TEXT NOT NULL,
    extracted TEXT,
    score REAL,
    detail TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY (sample_id, verifier)
);
CREATE TABLE IF NOT EXISTS traces (
    sample_id INTEGER PRIMARY KEY REFERENCES samples(id),
    trace TEXT NOT NULL,
    calls INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    wall_s REAL NOT NULL
);
"""


@dataclass(frozen=True)
class TraceRow:
    """A stored trace's usage (the trace itself is read with :meth:`Store.trace`)."""

    sample_id: int
    problem_id: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float


def default_db_path() -> Path:
    """``$PONDER_DB`` if set, else ``ponder.db`` in the current directory."""
    return Path(os.environ.get("PONDER_DB", DEFAULT_DB))


@dataclass(frozen=True)
class RunInfo:
    id: str
    spec: RunSpec
    created_at: float


@dataclass(frozen=True)
class RunSummary:
    id: str
    model: str
    task: str
    problems: int
    samples: int
    verified: int
    correct: int
    created_at: float


@dataclass(frozen=True)
class ProblemRow:
    """Per-problem tallies for one verifier."""

    problem_id: str
    reference: str | None
    samples: int
    verified: int
    correct: int
    first_correct: str | None


class Store:
    """A Ponder database. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path | None = None, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        try:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        with self._guard("initialise"):
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process kills in WAL mode (only an OS crash can lose the tail).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise StoreError(
                    f"database {self.path} is locked ({what})",
                    hint="another process holds a write lock; wait for it or use another --db",
                ) from exc
            if "full" in text:
                raise StoreError(
                    f"disk full while writing {self.path} ({what}); samples up to here are saved",
                    hint="free space and rerun the same command: it resumes where it stopped",
                ) from exc
            raise StoreError(f"database error on {self.path} ({what}): {text}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"database {self.path} is unreadable ({what}): {exc}") from exc

    @contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._guard(what):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                # SQLite already rolled back on some errors (SQLITE_FULL among them).
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # runs -------------------------------------------------------------------------------------------

    def ensure_run(self, spec: RunSpec) -> RunInfo:
        """Return the run with this spec, creating it if needed."""
        with self._tx("create run") as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (id, spec, model, task, created_at) VALUES (?,?,?,?,?)",
                (spec.run_id, spec.canonical(), spec.model, spec.task_name, time.time()),
            )
        return self.get_run(spec.run_id)

    def get_run(self, ref: str) -> RunInfo:
        """Find a run by id or unique id prefix."""
        with self._guard("read run"):
            rows = self._db.execute(
                "SELECT id, spec, created_at FROM runs WHERE id LIKE ? || '%'", (ref,)
            ).fetchall()
        if not rows:
            raise NotFoundError(
                f"no run {ref!r} in {self.path}", hint="list runs with: ponder runs"
            )
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows[:5])
            raise NotFoundError(
                f"run prefix {ref!r} is ambiguous ({ids})", hint="give more characters"
            )
        row = rows[0]
        return RunInfo(row["id"], RunSpec.model_validate_json(row["spec"]), row["created_at"])

    def runs(self) -> list[RunSummary]:
        with self._guard("list runs"):
            rows = self._db.execute(
                """
                SELECT r.id, r.model, r.task, r.created_at,
                  (SELECT COUNT(*) FROM problems p WHERE p.run_id = r.id) AS problems,
                  (SELECT COUNT(*) FROM samples s WHERE s.run_id = r.id) AS samples,
                  (SELECT COUNT(*) FROM verdicts v JOIN samples s ON s.id = v.sample_id
                     WHERE s.run_id = r.id) AS verified,
                  (SELECT COUNT(*) FROM verdicts v JOIN samples s ON s.id = v.sample_id
                     WHERE s.run_id = r.id AND v.status = 'correct') AS correct
                FROM runs r ORDER BY r.created_at
                """
            ).fetchall()
        return [
            RunSummary(
                r["id"],
                r["model"],
                r["task"],
                r["problems"],
                r["samples"],
                r["verified"],
                r["correct"],
                r["created_at"],
            )
            for r in rows
        ]

    # problems ---------------------------------------------------------------------------------------

    def add_problems(self, run_id: str, problems: Sequence[Problem]) -> None:
        """Record problems as part of a run (existing ones keep their position)."""
        with self._tx("add problems") as db:
            start = db.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM problems WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            db.executemany(
                "INSERT OR IGNORE INTO problems (run_id, problem_id, position, question, reference, "
                "metadata) VALUES (?,?,?,?,?,?)",
                [
                    (run_id, p.id, start + i, p.question, p.reference, json.dumps(p.metadata))
                    for i, p in enumerate(problems)
                ],
            )

    def problems(self, run_id: str) -> list[Problem]:
        with self._guard("read problems"):
            rows = self._db.execute(
                "SELECT problem_id, question, reference, metadata FROM problems WHERE run_id = ? "
                "ORDER BY position",
                (run_id,),
            ).fetchall()
        return [
            Problem(
                id=r["problem_id"],
                question=r["question"],
                reference=r["reference"],
                metadata=json.loads(r["metadata"]),
            )
            for r in rows
        ]

    # samples ----------------------------------------------------------------------------------------

    def existing_indices(self, run_id: str) -> dict[str, set[int]]:
        """problem id -> indices of the samples already stored."""
        out: dict[str, set[int]] = {}
        with self._guard("read samples"):
            for r in self._db.execute(
                "SELECT problem_id, idx FROM samples WHERE run_id = ?", (run_id,)
            ):
                out.setdefault(r[0], set()).add(r[1])
        return out

    def add_samples(self, samples: Sequence[Sample]) -> list[int]:
        """Insert samples in one transaction; returns their ids. A duplicate key is an error."""
        now = time.time()
        ids = []
        with self._tx("save samples") as db:
            for s in samples:
                cur = db.execute(
                    "INSERT INTO samples (run_id, problem_id, idx, text, finish_reason, "
                    "completion_tokens, prompt_tokens, latency_s, seed, mean_logprob, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        s.run_id,
                        s.problem_id,
                        s.index,
                        s.text,
                        s.finish_reason,
                        s.completion_tokens,
                        s.prompt_tokens,
                        s.latency_s,
                        s.seed,
                        s.mean_logprob,
                        now,
                    ),
                )
                ids.append(int(cur.lastrowid or 0))
        return ids

    def samples(self, run_id: str, problem_ids: Iterable[str] | None = None) -> list[Sample]:
        query = "SELECT * FROM samples WHERE run_id = ?"
        args: list[Any] = [run_id]
        if problem_ids is not None:
            ids = list(problem_ids)
            query += f" AND problem_id IN ({','.join('?' * len(ids))})"
            args += ids
        with self._guard("read samples"):
            rows = self._db.execute(query + " ORDER BY problem_id, idx", args).fetchall()
        return [_sample(r) for r in rows]

    # verdicts ---------------------------------------------------------------------------------------

    def unverified(
        self, run_id: str, verifier: str, *, force: bool = False
    ) -> list[tuple[Sample, str | None]]:
        """Samples (with their problem's reference) that lack a verdict from ``verifier``."""
        query = (
            "SELECT s.*, p.reference AS reference FROM samples s JOIN problems p "
            "ON p.run_id = s.run_id AND p.problem_id = s.problem_id WHERE s.run_id = ?"
        )
        if not force:
            query += (
                " AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id "
                "AND v.verifier = ?)"
            )
        args = (run_id, verifier) if not force else (run_id,)
        with self._guard("read samples"):
            rows = self._db.execute(query + " ORDER BY p.position, s.idx", args).fetchall()
        return [(_sample(r), r["reference"]) for r in rows]

    def add_verdicts(self, verifier: str, items: Sequence[tuple[int, Verdict]]) -> None:
        now = time.time()
        with self._tx("save verdicts") as db:
            db.executemany(
                "INSERT OR REPLACE INTO verdicts (sample_id, verifier, status, extracted, score, "
                "detail, created_at) VALUES (?,?,?,?,?,?,?)",
                [
                    (sid, verifier, v.status, v.extracted, v.score, v.detail, now)
                    for sid, v in items
                ],
            )

    def verifiers(self, run_id: str) -> list[str]:
        with self._guard("read verdicts"):
            rows = self._db.execute(
                "SELECT DISTINCT v.verifier FROM verdicts v JOIN samples s ON s.id = v.sample_id "
                "WHERE s.run_id = ?",
                (run_id,),
            ).fetchall()
        return [r[0] for r in rows]

    def verdicts(self, run_id: str, verifier: str) -> dict[int, Verdict]:
        """sample id -> verdict."""
        with self._guard("read verdicts"):
            rows = self._db.execute(
                "SELECT v.* FROM verdicts v JOIN samples s ON s.id = v.sample_id "
                "WHERE s.run_id = ? AND v.verifier = ?",
                (run_id, verifier),
            ).fetchall()
        return {
            r["sample_id"]: Verdict(
                status=r["status"], extracted=r["extracted"], score=r["score"], detail=r["detail"]
            )
            for r in rows
        }

    def verified_rows(self, run_id: str, verifier: str) -> list[tuple[Any, ...]]:
        """Every sample with a verdict from ``verifier``, as plain tuples for bulk analysis.

        Columns: problem_id, idx, status, extracted, score, mean_logprob, completion_tokens,
        prompt_tokens, latency_s, text; ordered by problem and index. Skips building a record per
        sample, which dominates the load time of a large run.
        """
        with self._guard("read verdicts"):
            cur = self._db.execute(
                "SELECT s.problem_id, s.idx, v.status, v.extracted, v.score, s.mean_logprob, "
                "s.completion_tokens, s.prompt_tokens, s.latency_s, s.text "
                "FROM samples s JOIN verdicts v ON v.sample_id = s.id "
                "WHERE s.run_id = ? AND v.verifier = ? ORDER BY s.problem_id, s.idx",
                (run_id, verifier),
            )
            cur.row_factory = None  # plain tuples: sqlite3.Row costs ~2x here
            return cur.fetchall()

    def problem_table(self, run_id: str, verifier: str) -> list[ProblemRow]:
        """One row per problem of the run, in run order."""
        with self._guard("read results"):
            rows = self._db.execute(
                """
                SELECT p.problem_id, p.reference,
                  COUNT(s.id) AS samples,
                  COUNT(v.sample_id) AS verified,
                  COALESCE(SUM(v.status = 'correct'), 0) AS correct,
                  (SELECT v2.extracted FROM samples s2 JOIN verdicts v2 ON v2.sample_id = s2.id
                     WHERE s2.run_id = p.run_id AND s2.problem_id = p.problem_id
                       AND v2.verifier = ? AND v2.status = 'correct'
                     ORDER BY s2.idx LIMIT 1) AS first_correct
                FROM problems p
                LEFT JOIN samples s ON s.run_id = p.run_id AND s.problem_id = p.problem_id
                LEFT JOIN verdicts v ON v.sample_id = s.id AND v.verifier = ?
                WHERE p.run_id = ?
                GROUP BY p.problem_id ORDER BY p.position
                """,
                (verifier, verifier, run_id),
            ).fetchall()
        return [
            ProblemRow(
                r["problem_id"],
                r["reference"],
                r["samples"],
                r["verified"],
                r["correct"],
                r["first_correct"],
            )
            for r in rows
        ]

    def export_jsonl(self, run_id: str, out: IO[str], verifier: str | None = None) -> int:
        """Write every sample (with its verdict from ``verifier`` if given) as one JSON line each."""
        verdicts = self.verdicts(run_id, verifier) if verifier else {}
        problems = {p.id: p for p in self.problems(run_id)}
        count = 0
        for s in self.samples(run_id):
            record: dict[str, Any] = s.model_dump()
            p = problems.get(s.problem_id)
            record["question"] = p.question if p else None
            record["reference"] = p.reference if p else None
            if s.id in verdicts:
                record["verdict"] = verdicts[s.id].model_dump()
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        return count

    # traces (system runs) ----------------------------------------------------------------------------

    def add_answer(self, sample: Sample, trace: Trace) -> int:
        """Store a system's answer (a sample) and its trace in one transaction; returns the sample id.

        A killed run therefore never leaves an answer without its trace, or the reverse. A duplicate
        (run, problem, index) is an error, as in :meth:`add_samples`.
        """
        with self._tx("save answer") as db:
            sample_id = _insert_sample(db, sample, time.time())
            _insert_trace(db, sample_id, trace)
        return sample_id

    def add_trace(self, sample_id: int, trace: Trace) -> None:
        """Store (or replace) the trace of an existing sample."""
        with self._tx("save trace") as db:
            _insert_trace(db, sample_id, trace)

    def trace(self, sample_id: int) -> Trace:
        """The trace of one sample.

        Raises:
            NotFoundError: the sample has no trace (it is not from a system run).
        """
        from ponder.systems import Trace

        with self._guard("read trace"):
            row = self._db.execute(
                "SELECT trace FROM traces WHERE sample_id = ?", (sample_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(
                f"sample {sample_id} has no trace in {self.path}",
                hint="traces exist for runs made by `ponder run`; list them with "
                "`ponder trace RUN`",
            )
        return Trace.model_validate_json(row[0])

    def trace_rows(self, run_id: str, problem_ids: Iterable[str] | None = None) -> list[TraceRow]:
        """Usage of every stored trace of a run (optionally of some problems), in problem order."""
        query = (
            "SELECT t.sample_id, s.problem_id, t.calls, t.prompt_tokens, t.completion_tokens, "
            "t.wall_s FROM traces t JOIN samples s ON s.id = t.sample_id "
            "JOIN problems p ON p.run_id = s.run_id AND p.problem_id = s.problem_id "
            "WHERE s.run_id = ?"
        )
        args: list[Any] = [run_id]
        if problem_ids is not None:
            ids = list(problem_ids)
            query += f" AND s.problem_id IN ({','.join('?' * len(ids))})"
            args += ids
        with self._guard("read traces"):
            rows = self._db.execute(query + " ORDER BY p.position, s.idx", args).fetchall()
        return [TraceRow(*tuple(r)) for r in rows]

    def has_traces(self, run_id: str) -> bool:
        """Whether any sample of the run has a trace (it is a system run)."""
        with self._guard("read traces"):
            row = self._db.execute(
                "SELECT 1 FROM traces t JOIN samples s ON s.id = t.sample_id "
                "WHERE s.run_id = ? LIMIT 1",
                (run_id,),
            ).fetchone()
        return row is not None


def _insert_sample(db: sqlite3.Connection, s: Sample, now: float) -> int:
    cur = db.execute(
        "INSERT INTO samples (run_id, problem_id, idx, text, finish_reason, completion_tokens, "
        "prompt_tokens, latency_s, seed, mean_logprob, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            s.run_id,
            s.problem_id,
            s.index,
            s.text,
            s.finish_reason,
            s.completion_tokens,
            s.prompt_tokens,
            s.latency_s,
            s.seed,
            s.mean_logprob,
            now,
        ),
    )
    return int(cur.lastrowid or 0)


def _insert_trace(db: sqlite3.Connection, sample_id: int, trace: Trace) -> None:
    u = trace.usage
    db.execute(
        "INSERT OR REPLACE INTO traces (sample_id, trace, calls, prompt_tokens, completion_tokens, "
        "wall_s) VALUES (?,?,?,?,?,?)",
        (
            sample_id,
            trace.model_dump_json(),
            u.calls,
            u.prompt_tokens,
            u.completion_tokens,
            u.wall_s,
        ),
    )


def _sample(r: sqlite3.Row) -> Sample:
    return Sample(
        id=r["id"],
        run_id=r["run_id"],
        problem_id=r["problem_id"],
        index=r["idx"],
        text=r["text"],
        finish_reason=r["finish_reason"],
        completion_tokens=r["completion_tokens"],
        prompt_tokens=r["prompt_tokens"],
        latency_s=r["latency_s"],
        seed=r["seed"],
        mean_logprob=r["mean_logprob"],
    )
