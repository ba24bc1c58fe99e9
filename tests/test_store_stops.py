"""Schema version 3: the adaptive_stops table, its upgrade in place, and Store.add_stops / stops."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ponder.errors import StoreError
from ponder.records import Problem, SamplingParams
from ponder.store import SCHEMA_VERSION, AdaptiveStop, RunSpec, Store

SPEC = RunSpec(model="scripted:x", task={"name": "list"}, params=SamplingParams())


def _stop(pid: str, rule: str = "beta(...) round=4 max=8", **kw: object) -> AdaptiveStop:
    values: dict[str, object] = {
        "run_id": SPEC.run_id, "problem_id": pid, "rule": rule, "samples": 4, "rounds": 1,
        "reason": "rule", "answer": "7", "votes": 4, "statistic": 0.97, "completion_tokens": 12,
    }  # fmt: skip
    return AdaptiveStop.model_validate({**values, **kw})


def _version(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


def test_version_2_database_upgrades_to_3_keeping_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "v2.db"
    with Store(db) as store:
        run = store.ensure_run(SPEC)
        store.add_problems(run.id, [Problem(id="a", question="q", reference="7")], ["prompt"])
    # What version 2 wrote: everything but the tables migrations 3 and later add.
    con = sqlite3.connect(db)
    con.execute("DROP TABLE adaptive_stops")
    con.execute("DROP TABLE generations")
    con.execute("ALTER TABLE samples DROP COLUMN node")
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    assert SCHEMA_VERSION >= 3

    with Store(db) as store:
        assert [p.id for p in store.problems(SPEC.run_id)] == ["a"]
        assert store.stops(SPEC.run_id) == []
        store.add_stops([_stop("a")])
        assert [s.problem_id for s in store.stops(SPEC.run_id)] == ["a"]
    assert _version(db) == SCHEMA_VERSION


def test_stops_upsert_per_problem_and_schedule_in_problem_order(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        run = store.ensure_run(SPEC)
        problems = [Problem(id=pid, question="q") for pid in ("z", "a")]
        store.add_problems(run.id, problems, ["p", "p"])
        store.add_stops([_stop("a"), _stop("z", statistic=None, answer=None, votes=0)])
        store.add_stops([_stop("a", samples=8, rounds=2, reason="max", budget="16samples")])
        store.add_stops([_stop("a", rule="window(...) round=4 max=8", reason="max")])
        got = store.stops(run.id)
        # z was stored first in the run, so it comes first; one row per problem and schedule.
        assert [(s.rule[:4], s.problem_id) for s in got] == [
            ("beta", "z"), ("beta", "a"), ("wind", "a"),
        ]  # fmt: skip
        beta_a = got[1]
        assert (beta_a.samples, beta_a.rounds, beta_a.reason, beta_a.budget) == (
            8, 2, "max", "16samples",
        )  # fmt: skip
        assert beta_a.created_at > 0
        assert got[0].statistic is None and got[0].answer is None
        assert [s.problem_id for s in store.stops(run.id, rule="window(...) round=4 max=8")] == [
            "a"
        ]
        with pytest.raises(StoreError, match="FOREIGN KEY"):
            store.add_stops([_stop("a").model_copy(update={"run_id": "no-such-run"})])
        with pytest.raises(ValueError):
            _stop("a", reason="tired")
