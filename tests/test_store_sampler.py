"""Store and sampler logic on the scripted backend and a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from ponder.analysis import run_tallies
from ponder.backends import ScriptedBackend
from ponder.errors import BackendError, ConfigError, NotFoundError, StoreError
from ponder.records import SamplingParams, Verdict
from ponder.runs import plan, sample_run
from ponder.store import Store, request_seed, run_spec
from tests._fakes import arithmetic

PARAMS = SamplingParams(temperature=0.5, max_tokens=50, seed=7)


def run(coro):
    return asyncio.run(coro)


def test_plan_splits_missing_indices_into_batches() -> None:
    task = arithmetic(2)
    units = plan(task.problems(), 10, {"p0": {0, 1, 2}}, 4)
    assert [(u.problem.id, u.indices) for u in units] == [
        ("p0", (3, 4, 5, 6)),
        ("p0", (7, 8, 9)),
        ("p1", (0, 1, 2, 3)),
        ("p1", (4, 5, 6, 7)),
        ("p1", (8, 9)),
    ]


def test_sample_run_stores_n_per_problem_and_extends_without_redrawing(tmp_path: Path) -> None:
    task = arithmetic(3)
    backend = ScriptedBackend(choices=["#### 0", "#### 2", "#### 4"], batch=4)
    with Store(tmp_path / "p.db") as store:
        rep = run(sample_run(store, backend, task, task.problems(), 6, PARAMS))
        assert (rep.drawn, rep.already_present, rep.requested) == (18, 0, 18)
        # 6 samples with batch 4 -> 2 requests per problem, each an n-request
        assert sorted(n for _, n, _ in backend.calls) == [2, 2, 2, 4, 4, 4]
        first = {(s.problem_id, s.index): s.text for s in store.samples(rep.run_id)}

        backend.calls.clear()
        rep2 = run(sample_run(store, backend, task, task.problems(), 10, PARAMS))
        assert rep2.run_id == rep.run_id
        assert (rep2.drawn, rep2.already_present) == (12, 18)
        assert all(n <= 4 for _, n, _ in backend.calls)
        samples = store.samples(rep.run_id)
        assert len(samples) == 30
        for p in task.problems():
            assert sorted(s.index for s in samples if s.problem_id == p.id) == list(range(10))
        # earlier samples untouched
        assert all(first[(s.problem_id, s.index)] == s.text for s in samples if s.index < 6)

        backend.calls.clear()
        rep3 = run(sample_run(store, backend, task, task.problems(), 10, PARAMS))
        assert rep3.drawn == 0 and backend.calls == []


def test_run_identity_depends_on_spec_not_on_n(tmp_path: Path) -> None:
    task = arithmetic(1)
    backend = ScriptedBackend(outputs=["x"])
    a = run_spec(backend, task, PARAMS).run_id
    assert a == run_spec(backend, task, PARAMS).run_id
    assert a != run_spec(backend, task, PARAMS.model_copy(update={"temperature": 0.9})).run_id
    task.template = "Question: {question}"
    assert a != run_spec(backend, task, PARAMS).run_id
    assert a != run_spec(ScriptedBackend(outputs=["x"], name="other"), arithmetic(1), PARAMS).run_id


def test_request_seeds_are_derived_and_distinct() -> None:
    seeds = {request_seed(0, f"p{i}", j) for i in range(50) for j in range(0, 64, 8)}
    assert len(seeds) == 400
    assert request_seed(3, "p1", 8) == request_seed(3, "p1", 8)
    assert all(0 <= s < 2**31 for s in seeds)


def test_prompt_tokens_split_exactly_and_usage_recorded(tmp_path: Path) -> None:
    task = arithmetic(1)  # prompt "user: Q: What is 0 + 0?" -> 7 words
    backend = ScriptedBackend(outputs=["a b c", "d e"], batch=3)
    with Store(tmp_path / "p.db") as store:
        rep = run(sample_run(store, backend, task, task.problems(), 3, PARAMS))
        samples = store.samples(rep.run_id)
        assert sum(s.prompt_tokens for s in samples) == rep.prompt_tokens == 7
        assert [s.completion_tokens for s in samples] == [3, 2, 3]
        assert rep.completion_tokens == 8


def test_concurrency_fills_slots_and_is_bounded(tmp_path: Path) -> None:
    task = arithmetic(8)
    backend = ScriptedBackend(outputs=["1"], batch=8, delay_s=0.05)
    with Store(tmp_path / "p.db") as store:
        run(sample_run(store, backend, task, task.problems(), 2, PARAMS))
    # 8 slots / 2 samples per request -> 4 requests in flight
    assert backend.max_in_flight == 4
    backend2 = ScriptedBackend(outputs=["1"], batch=8, delay_s=0.02)
    with Store(tmp_path / "q.db") as store:
        run(sample_run(store, backend2, task, task.problems(), 2, PARAMS, concurrency=1))
    assert backend2.max_in_flight == 1


def test_backend_failure_keeps_committed_samples(tmp_path: Path) -> None:
    task = arithmetic(4)
    calls = {"n": 0}

    def fn(prompt, i, params):
        return "#### 1"

    backend = ScriptedBackend(fn=fn, batch=2)
    original = backend.generate

    async def flaky(prompt, n, params):
        calls["n"] += 1
        if calls["n"] == 3:
            raise BackendError("server down after 5 attempts: 503")
        return await original(prompt, n, params)

    backend.generate = flaky  # type: ignore[method-assign]
    with Store(tmp_path / "p.db") as store:
        with pytest.raises(BackendError, match="503"):
            run(sample_run(store, backend, task, task.problems(), 2, PARAMS, concurrency=1))
        spec = run_spec(backend, task, PARAMS)
        assert len(store.samples(spec.run_id)) == 4  # two requests committed before the failure
        backend.generate = original  # type: ignore[method-assign]
        rep = run(sample_run(store, backend, task, task.problems(), 2, PARAMS))
        assert rep.drawn == 4 and len(store.samples(spec.run_id)) == 8


def test_duplicate_sample_is_rejected_by_the_store(tmp_path: Path) -> None:
    task = arithmetic(1)
    backend = ScriptedBackend(outputs=["x"])
    with Store(tmp_path / "p.db") as store:
        rep = run(sample_run(store, backend, task, task.problems(), 1, PARAMS))
        s = store.samples(rep.run_id)[0]
        with pytest.raises(StoreError):
            store.add_samples([s.model_copy(update={"id": None})])
        assert len(store.samples(rep.run_id)) == 1


def test_verdicts_tallies_and_export(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from ponder.cli import app

    task = arithmetic(2)
    backend = ScriptedBackend(outputs=["#### 0", "#### 5", "#### 2", "#### 2"], batch=2)
    with Store(tmp_path / "p.db") as store:
        rep = run(sample_run(store, backend, task, task.problems(), 2, PARAMS, concurrency=1))
        todo = store.unverified(rep.run_id, "math")
        assert len(todo) == 4
        verdicts = [
            (
                s.id,
                Verdict(
                    status="correct" if s.text == f"#### {ref}" else "incorrect",
                    extracted=s.text[5:],
                ),
            )
            for s, ref in todo
        ]
        store.add_verdicts("math", verdicts)
        assert store.unverified(rep.run_id, "math") == []
        assert len(store.unverified(rep.run_id, "math", force=True)) == 4
        rows = run_tallies(store, rep.run_id, "math")
        assert [(r.problem_id, r.samples, r.correct, r.first_correct_answer) for r in rows] == [
            ("p0", 2, 1, "0"),
            ("p1", 2, 2, "2"),
        ]
    # The store has no export of its own: `ponder export -f jsonl` is the one way.
    result = CliRunner().invoke(
        app, ["export", rep.run_id, "-f", "jsonl", "--db", str(tmp_path / "p.db")]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(lines) == 4
    assert {x["verdict"]["status"] for x in lines} == {"correct", "incorrect"}
    assert lines[0]["question"] == "What is 0 + 0?"


def test_get_run_by_prefix_and_errors(tmp_path: Path) -> None:
    task = arithmetic(1)
    with Store(tmp_path / "p.db") as store:
        rep = run(
            sample_run(store, ScriptedBackend(outputs=["x"]), task, task.problems(), 1, PARAMS)
        )
        assert store.get_run(rep.run_id[:5]).id == rep.run_id
        with pytest.raises(NotFoundError, match="ponder runs"):
            store.get_run("zzzz")


def test_locked_database_is_reported_not_swallowed(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    task = arithmetic(1)
    with Store(path) as store:
        run(sample_run(store, ScriptedBackend(outputs=["x"]), task, task.problems(), 1, PARAMS))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with Store(path, timeout_s=0.2) as store, pytest.raises(StoreError, match="locked"):
            run(sample_run(store, ScriptedBackend(outputs=["y"]), task, task.problems(), 2, PARAMS))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_invalid_n_and_empty_problem_list_rejected(tmp_path: Path) -> None:
    task = arithmetic(1)
    with Store(tmp_path / "p.db") as store:
        with pytest.raises(ConfigError):
            run(sample_run(store, ScriptedBackend(), task, task.problems(), 0, PARAMS))
        with pytest.raises(ConfigError, match="no problems"):
            run(sample_run(store, ScriptedBackend(), task, [], 1, PARAMS))


def test_sampling_params_validation_names_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValidationError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValidationError, match="top_p"):
        SamplingParams(top_p=0)


def test_full_disk_is_reported_and_earlier_samples_survive(tmp_path: Path) -> None:
    task = arithmetic(40)
    backend = ScriptedBackend(outputs=["word " * 400], batch=4)
    long = PARAMS.model_copy(update={"max_tokens": 1000})
    path = tmp_path / "p.db"
    with Store(path) as store:
        # Cap the file so SQLite fails with SQLITE_FULL, the error a full disk produces.
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages + 30}")
        with pytest.raises(StoreError, match="disk full") as info:
            run(sample_run(store, backend, task, task.problems(), 4, long, concurrency=1))
        assert "resumes" in str(info.value)
    with Store(path) as store:
        saved = store.samples(run_spec(backend, task, long).run_id)
    assert 0 < len(saved) < 160 and len(saved) % 4 == 0  # whole requests only, nothing half-written
