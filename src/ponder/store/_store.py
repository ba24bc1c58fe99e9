"""The SQLite sample store (WAL): runs, their problems and prompts, samples and verdicts; traces of
system runs; claims of the work units that sampling processes are drawing.

Every batch of samples is committed as soon as it is generated; a UNIQUE (run, problem, index) key makes a
resumed run unable to duplicate a sample. A system run stores each problem's answer as sample 0 and the
system's trace of it in ``traces`` (same transaction). The schema is versioned (see
:mod:`ponder.store._migrations`): opening a file upgrades it in place.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder._closing import Closing
from ponder.errors import NotFoundError, StoreError
from ponder.records import Completion, FinishReason, Message, Problem, Prompt, Sample, Verdict
from ponder.store._migrations import upgrade
from ponder.store._owners import Owner, is_alive, process_start, this_host
from ponder.store._spec import RunSpec

if TYPE_CHECKING:
    from ponder.systems import Trace

DEFAULT_DB = "ponder.db"


@dataclass(frozen=True)
class TraceRow:
    """A stored trace's usage (the trace itself is read with :meth:`Store.trace`)."""

    sample_id: int
    problem_id: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float


@dataclass(frozen=True)
class StoredGeneration:
    """One stored model completion, kept for reuse (see :meth:`Store.generations`).

    Attributes:
        key: What was asked: a hash of the model identity, the exact prompt and the sampling
            parameters with the seed (computed by the caller, e.g. ``ponder.systems``).
        idx: The completion's index among the completions drawn for ``key``.
        text: The completion's text.
        finish_reason: Why it ended.
        completion_tokens: Its tokens.
        prompt_tokens: The prompt tokens of the request that drew it.
        created: Unix time it was stored.
    """

    key: str
    idx: int
    text: str
    finish_reason: FinishReason
    completion_tokens: int
    prompt_tokens: int
    created: float

    def completion(self) -> Completion:
        """As a :class:`~ponder.records.Completion` (no latency: nothing was waited for)."""
        return Completion(
            text=self.text,
            finish_reason=self.finish_reason,
            completion_tokens=self.completion_tokens,
        )


_GENERATION_COLUMNS = tuple(f.name for f in fields(StoredGeneration))


class ServerRequest(BaseModel):
    """A request answered (or refused after it was parsed) by ``ponder serve``, as stored.

    Attributes:
        id: The trace id the response carried (``X-Ponder-Trace-Id`` header and body field).
        created_at: Unix time the request arrived.
        endpoint: ``/v1/chat/completions`` or ``/v1/completions``.
        model: The ``model`` field of the request, as sent.
        system: The served system that answered, None for a plain pass-through to a model.
        status: The HTTP status of the response.
        latency_s: Wall time from arrival to the last byte sent.
        prompt_tokens: Summed over every internal call.
        completion_tokens: Summed over every internal call.
        calls: Internal model calls made.
        request: The request body (JSON object) as received.
        response: The response body (for a stream, the assembled final response), if any.
        trace: The system's trace (a :class:`ponder.systems.Trace` as JSON data), if any.
        error: Why it failed, if it did (no secrets).
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    created_at: float
    endpoint: str
    model: str
    system: str | None = None
    status: int
    latency_s: float = Field(ge=0.0)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    calls: int = Field(0, ge=0)
    request: dict[str, Any]
    response: dict[str, Any] | None = None
    trace: dict[str, Any] | None = None
    error: str | None = None

    def parsed_trace(self) -> Trace | None:
        """The trace as a :class:`ponder.systems.Trace`, or None for a pass-through."""
        from ponder.systems import Trace

        return None if self.trace is None else Trace.model_validate(self.trace)


class AdaptiveStop(BaseModel):
    """Where adaptive sampling stopped one problem of a run, and why, as stored.

    Attributes:
        run_id: The run.
        problem_id: The problem.
        rule: The schedule: the stop rule with its parameters, the round size and the maximum
            (``ponder.runs.schedule_key``); one row per problem and schedule.
        samples: Samples the decision covers (indices ``0 .. samples - 1``).
        rounds: Rounds completed at that point.
        reason: ``rule`` (the rule fired), ``max`` (the maximum reached), ``budget`` (the run's
            budget was spent first) or ``hopeless`` (the budget allocator gave up on it).
        answer: The leading extracted answer at that point (None when no sample answered).
        votes: That answer's votes.
        statistic: The rule's statistic at that point (None where undefined).
        completion_tokens: Completion tokens of the samples the decision covers.
        budget: The run's budget in force (``2000samples``), None without one.
        created_at: Unix time the row was (last) written.
    """

    model_config = ConfigDict(frozen=True)

    run_id: str
    problem_id: str
    rule: str
    samples: int = Field(ge=0)
    rounds: int = Field(ge=0)
    reason: Literal["rule", "max", "budget", "hopeless"]
    answer: str | None = None
    votes: int = Field(0, ge=0)
    statistic: float | None = None
    completion_tokens: int = Field(0, ge=0)
    budget: str | None = None
    created_at: float = 0.0


_REQUEST_COLUMNS = tuple(ServerRequest.model_fields)
_STOP_COLUMNS = tuple(AdaptiveStop.model_fields)
_JSON_COLUMNS = frozenset({"request", "response", "trace"})


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


class Store(Closing):
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
        try:
            with self._guard("initialise"):
                self._wal(timeout_s)
                # NORMAL is durable across process kills in WAL mode (only an OS crash can lose the
                # tail).
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                upgrade(self._db, self.path)
        except BaseException:
            self._db.close()
            raise

    def _wal(self, timeout_s: float) -> None:
        """Switch to WAL, waiting up to ``timeout_s`` for a writer.

        Changing the journal mode needs the whole file, and SQLite answers "locked" at once, without
        its busy timeout, while another connection writes: two processes opening a new database
        together (one creating the tables, the other switching to WAL) would otherwise fail.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

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

    def add_problems(
        self, run_id: str, problems: Sequence[Problem], prompts: Sequence[Prompt] | None = None
    ) -> None:
        """Record problems as part of a run (existing ones keep their position).

        Args:
            prompts: The exact prompt the run's model is given for each problem (same order). A
                problem stored without one (before prompts were stored) gets it here; a stored
                prompt is never replaced.
        """
        if prompts is not None and len(prompts) != len(problems):
            raise ValueError(f"{len(prompts)} prompts for {len(problems)} problems")
        encoded = [_encode_prompt(p) for p in prompts] if prompts is not None else None
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
            if encoded is not None:
                db.executemany(
                    "UPDATE problems SET prompt = ? WHERE run_id = ? AND problem_id = ? "
                    "AND prompt IS NULL",
                    [(e, run_id, p.id) for p, e in zip(problems, encoded, strict=True)],
                )

    def prompts(self, run_id: str) -> dict[str, Prompt]:
        """problem id -> the exact prompt stored with it (problems stored without one are absent)."""
        with self._guard("read prompts"):
            rows = self._db.execute(
                "SELECT problem_id, prompt FROM problems WHERE run_id = ? AND prompt IS NOT NULL",
                (run_id,),
            ).fetchall()
        return {r[0]: _decode_prompt(r[1]) for r in rows}

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

    def add_samples(
        self,
        samples: Sequence[Sample],
        traces: Sequence[Trace] | None = None,
        *,
        owner: int | None = None,
    ) -> list[int]:
        """Insert samples (and, for a system run, their traces) in one transaction; returns the ids.

        The one way samples enter the store. A killed process therefore never leaves a sample
        without its trace, or the reverse.

        Args:
            traces: One trace per sample (same order), for the answers of a system run.
            owner: The owner (see :meth:`register_owner`) whose claims on these samples' indices
                are released in the same transaction. A sample already stored is then skipped
                (its claim had been taken for dead and the unit drawn again elsewhere), and only
                the ids of the samples inserted are returned.

        Raises:
            StoreError: a sample's (run, problem, index) is already stored (without ``owner``).
        """
        if traces is not None and len(traces) != len(samples):
            raise ValueError(f"{len(traces)} traces for {len(samples)} samples")
        now = time.time()
        ids = []
        with self._tx("save samples") as db:
            for i, s in enumerate(samples):
                cur = db.execute(
                    "INSERT INTO samples (run_id, problem_id, idx, text, finish_reason, "
                    "completion_tokens, prompt_tokens, latency_s, seed, mean_logprob, node, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                    + (" ON CONFLICT (run_id, problem_id, idx) DO NOTHING" if owner else ""),
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
                        s.node,
                        now,
                    ),
                )
                if owner is not None:
                    db.execute(
                        "DELETE FROM claims WHERE run_id = ? AND problem_id = ? AND idx = ? "
                        "AND owner_id = ?",
                        (s.run_id, s.problem_id, s.index, owner),
                    )
                    if cur.rowcount == 0:
                        continue
                sample_id = int(cur.lastrowid or 0)
                ids.append(sample_id)
                if traces is not None:
                    _insert_trace(db, sample_id, traces[i])
        return ids

    def samples(self, run_id: str, problem_ids: Iterable[str] | None = None) -> list[Sample]:
        where, args = _of_problems("problem_id", run_id, problem_ids)
        with self._guard("read samples"):
            rows = self._db.execute(
                f"SELECT * FROM samples WHERE run_id = ?{where} ORDER BY problem_id, idx", args
            ).fetchall()
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

    # traces (system runs) ----------------------------------------------------------------------------

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
        where, args = _of_problems("s.problem_id", run_id, problem_ids)
        with self._guard("read traces"):
            rows = self._db.execute(query + where + " ORDER BY p.position, s.idx", args).fetchall()
        return [TraceRow(*tuple(r)) for r in rows]

    # requests answered by `ponder serve` -----------------------------------------------------------

    def add_server_request(self, record: ServerRequest) -> None:
        """Store one served request (its id must be new).

        Raises:
            StoreError: the id is already stored, or the write failed.
        """
        values = [
            json.dumps(v) if k in _JSON_COLUMNS and v is not None else v
            for k, v in record.model_dump().items()
        ]
        marks = ", ".join("?" for _ in _REQUEST_COLUMNS)
        with self._tx("store a served request") as db:
            db.execute(
                f"INSERT INTO server_requests ({', '.join(_REQUEST_COLUMNS)}) VALUES ({marks})",
                values,
            )

    def server_requests(self, *, limit: int = 100, offset: int = 0) -> list[ServerRequest]:
        """Served requests, newest first."""
        with self._guard("list served requests"):
            rows = self._db.execute(
                f"SELECT {', '.join(_REQUEST_COLUMNS)} FROM server_requests "
                "ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [_server_request(r) for r in rows]

    def server_request(self, request_id: str) -> ServerRequest:
        """One served request by its trace id.

        Raises:
            NotFoundError: no such request in this database.
        """
        with self._guard("read a served request"):
            row = self._db.execute(
                f"SELECT {', '.join(_REQUEST_COLUMNS)} FROM server_requests WHERE id = ?",
                (request_id,),
            ).fetchone()
        if row is None:
            raise NotFoundError(
                f"no served request {request_id!r} in {self.path}",
                hint="trace ids come from the X-Ponder-Trace-Id header of a `ponder serve` response",
            )
        return _server_request(row)

    # where adaptive sampling stopped each problem -------------------------------------------------

    def add_stops(self, stops: Sequence[AdaptiveStop]) -> None:
        """Store stop decisions in one transaction, replacing a problem's earlier row of the same
        run and schedule (a replay that reaches the same decision writes it once)."""
        now = time.time()
        marks = ", ".join("?" for _ in _STOP_COLUMNS)
        rows = [
            tuple(now if k == "created_at" else v for k, v in stop.model_dump().items())
            for stop in stops
        ]
        with self._tx("store stop decisions") as db:
            db.executemany(
                f"INSERT OR REPLACE INTO adaptive_stops ({', '.join(_STOP_COLUMNS)}) "
                f"VALUES ({marks})",
                rows,
            )

    def stops(self, run_id: str, rule: str | None = None) -> list[AdaptiveStop]:
        """The run's stop decisions (of one schedule ``rule``, or all), by schedule and problem
        position."""
        query = (
            f"SELECT {', '.join('a.' + c for c in _STOP_COLUMNS)} FROM adaptive_stops a "
            "LEFT JOIN problems p ON p.run_id = a.run_id AND p.problem_id = a.problem_id "
            "WHERE a.run_id = ?"
        )
        args: list[Any] = [run_id]
        if rule is not None:
            query += " AND a.rule = ?"
            args.append(rule)
        with self._guard("read stop decisions"):
            rows = self._db.execute(
                query + " ORDER BY a.rule, p.position, a.problem_id", args
            ).fetchall()
        return [AdaptiveStop.model_validate(dict(r)) for r in rows]

    # generations kept for reuse (the generation cache of systems) ---------------------------------

    def generations(self, key: str, n: int) -> list[StoredGeneration]:
        """The stored completions of ``key`` with indices ``0 .. n - 1`` that exist, by index."""
        with self._guard("read stored generations"):
            rows = self._db.execute(
                f"SELECT {', '.join(_GENERATION_COLUMNS)} FROM generations "
                "WHERE key = ? AND idx < ? ORDER BY idx",
                (key, n),
            ).fetchall()
        return [StoredGeneration(*tuple(r)) for r in rows]

    def add_generations(
        self, key: str, start: int, completions: Sequence[Completion], prompt_tokens: int
    ) -> list[StoredGeneration]:
        """Store ``completions`` as indices ``start, start + 1, ...`` of ``key``.

        An index already stored keeps its first completion (another process may have drawn it
        meanwhile), so every reader sees the same completion at each index.

        Returns:
            What is stored for indices ``0 .. start + len(completions) - 1`` afterwards, by index.
        """
        now = time.time()
        rows = [
            (key, start + i, c.text, c.finish_reason, c.completion_tokens, prompt_tokens, now)
            for i, c in enumerate(completions)
        ]
        marks = ", ".join("?" for _ in _GENERATION_COLUMNS)
        with self._tx("store generations") as db:
            db.executemany(
                f"INSERT OR IGNORE INTO generations ({', '.join(_GENERATION_COLUMNS)}) "
                f"VALUES ({marks})",
                rows,
            )
        return self.generations(key, start + len(completions))

    # claims of work units (processes drawing samples of the same run) ----------------------------

    def register_owner(self) -> int:
        """Record this process as an owner of claims; returns its id (release it when done)."""
        with self._tx("register sampler") as db:
            cur = db.execute(
                "INSERT INTO owners (host, pid, process_start, started_at, heartbeat) "
                "VALUES (?,?,?,?,?)",
                _this_process(),
            )
        return int(cur.lastrowid or 0)

    def heartbeat(self, owner: int) -> bool:
        """Renew an owner's lease; False if it had been taken for dead (it is recorded again)."""
        with self._tx("heartbeat") as db:
            cur = db.execute("UPDATE owners SET heartbeat = ? WHERE id = ?", (time.time(), owner))
            if cur.rowcount == 1:
                return True
            _ensure_owner(db, owner)
        return False

    def release_owner(self, owner: int) -> None:
        """Forget an owner and every claim it still holds."""
        with self._tx("release claims") as db:
            db.execute("DELETE FROM owners WHERE id = ?", (owner,))

    def claim(self, run_id: str, owner: int, problem_id: str, indices: Sequence[int]) -> list[int]:
        """Claim the sample indices of one problem for ``owner``; returns those it got.

        An index is not given when it is already stored or claimed by a live owner; claims of dead
        owners (see :mod:`ponder.store._owners`) are dropped first.
        """
        with self._tx("claim samples") as db:
            self._reap(db)
            _ensure_owner(db, owner)
            taken = {
                r[0]
                for r in db.execute(
                    "SELECT idx FROM samples WHERE run_id = ? AND problem_id = ? "
                    "UNION SELECT idx FROM claims WHERE run_id = ? AND problem_id = ?",
                    (run_id, problem_id, run_id, problem_id),
                )
            }
            got = [i for i in indices if i not in taken]
            db.executemany(
                "INSERT INTO claims (run_id, problem_id, idx, owner_id) VALUES (?,?,?,?)",
                [(run_id, problem_id, i, owner) for i in got],
            )
        return got

    def claims(self, run_id: str, *, exclude: int | None = None) -> dict[str, dict[int, Owner]]:
        """problem id -> sample index -> the live owner drawing it (dead owners are dropped)."""
        with self._tx("read claims") as db:
            self._reap(db)
            rows = db.execute(
                "SELECT c.problem_id, c.idx, o.* FROM claims c JOIN owners o ON o.id = c.owner_id "
                "WHERE c.run_id = ? AND o.id IS NOT ?",
                (run_id, exclude),
            ).fetchall()
        out: dict[str, dict[int, Owner]] = {}
        for r in rows:
            out.setdefault(r["problem_id"], {})[r["idx"]] = _owner(r)
        return out

    def _reap(self, db: sqlite3.Connection) -> None:
        """Delete owners that are dead, and with them their claims (inside a transaction)."""
        now, host = time.time(), this_host()
        dead = [
            (o.id,)
            for o in map(_owner, db.execute("SELECT * FROM owners"))
            if not is_alive(o, now=now, host=host)
        ]
        if dead:
            db.executemany("DELETE FROM owners WHERE id = ?", dead)


def _of_problems(
    column: str, run_id: str, problem_ids: Iterable[str] | None
) -> tuple[str, list[Any]]:
    """The condition (after ``run_id = ?``) and arguments that keep rows of ``problem_ids`` only
    (all of the run's rows when None)."""
    if problem_ids is None:
        return "", [run_id]
    ids = list(problem_ids)
    return f" AND {column} IN ({','.join('?' * len(ids))})", [run_id, *ids]


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
        node=r["node"],
    )


def _this_process() -> tuple[str, int, str | None, float, float]:
    """host, pid, process start, started at, heartbeat: a new owner row for this process."""
    now, pid = time.time(), os.getpid()
    return this_host(), pid, process_start(pid), now, now


def _ensure_owner(db: sqlite3.Connection, owner: int) -> None:
    """Record ``owner`` (this process) again if it was taken for dead and deleted meanwhile."""
    db.execute(
        "INSERT OR IGNORE INTO owners (id, host, pid, process_start, started_at, heartbeat) "
        "VALUES (?,?,?,?,?,?)",
        (owner, *_this_process()),
    )


def _owner(r: sqlite3.Row) -> Owner:
    return Owner(**{f.name: r[f.name] for f in fields(Owner)})


def _encode_prompt(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return json.dumps(prompt, ensure_ascii=False)
    return json.dumps([m.model_dump(mode="json") for m in prompt], ensure_ascii=False)


def _decode_prompt(raw: str) -> Prompt:
    data = json.loads(raw)
    if isinstance(data, str):
        return data
    return [Message.model_validate(m) for m in data]


def _server_request(row: sqlite3.Row) -> ServerRequest:
    values = {
        k: json.loads(row[k]) if k in _JSON_COLUMNS and row[k] is not None else row[k]
        for k in _REQUEST_COLUMNS
    }
    return ServerRequest.model_validate(values)
