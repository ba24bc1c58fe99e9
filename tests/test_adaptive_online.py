"""Online adaptive sampling (`sample_adaptive`) on the scripted backend and a real SQLite file.

Each problem's answers are scripted as a stream by sample index: the backend finds which problem
and first index a request is for from its seed (the sampler derives seeds with the public
`request_seed`), so a sample's text depends only on its (problem, index), however it is drawn.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from ponder.adaptive import Schedule, make_stop_rule
from ponder.analysis import vote_correct
from ponder.backends import ScriptedBackend
from ponder.errors import BackendError, ConfigError
from ponder.records import Prompt, SamplingParams
from ponder.runs import parse_budget, sample_adaptive, sample_run, schedule_key
from ponder.store import Store, request_seed
from ponder.verify import make_verifier
from tests._fakes import arithmetic

PARAMS = SamplingParams(temperature=0.7, max_tokens=20, seed=5)
MAX = 16


def run(coro):
    return asyncio.run(coro)


def streams_backend(
    streams: dict[str, Sequence[str]], params: SamplingParams = PARAMS, max_n: int = 64
) -> ScriptedBackend:
    """A backend whose sample ``k`` of problem ``pid`` is ``streams[pid][k]``."""
    where = {request_seed(params.seed, pid, k): (pid, k) for pid in streams for k in range(max_n)}

    def fn(prompt: Prompt, i: int, p: SamplingParams) -> str:
        pid, first = where[p.seed]
        return streams[pid][first + i]

    return ScriptedBackend(fn=fn, batch=16)


def indices(db: Path) -> dict[str, list[int]]:
    """problem id -> stored sample indices (with repeats, if a sample were stored twice)."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT problem_id, idx FROM samples ORDER BY problem_id, idx")
        out: dict[str, list[int]] = {}
        for pid, idx in rows:
            out.setdefault(pid, []).append(idx)
        return out
    finally:
        con.close()


# p0 (reference 0) is decided at once; p1 (reference 2) splits 50/50 between two answers.
DECIDED = ["#### 0"] * 64
SPLIT = ["#### 2", "#### 9"] * 32


def test_decided_problem_stops_at_the_minimum_and_split_one_runs_to_the_maximum(
    tmp_path: Path,
) -> None:
    task = arithmetic(2)
    backend = streams_backend({"p0": DECIDED, "p1": SPLIT})
    schedule = Schedule(make_stop_rule("beta"), MAX)
    with Store(tmp_path / "a.db") as store, make_verifier("math") as verifier:
        rep = run(
            sample_adaptive(store, backend, task, task.problems(), schedule, PARAMS, verifier)
        )
        stops = {s.problem_id: s for s in rep.stops}
        assert (stops["p0"].samples, stops["p0"].rounds, stops["p0"].reason) == (4, 1, "rule")
        assert (stops["p1"].samples, stops["p1"].rounds, stops["p1"].reason) == (MAX, 4, "max")
        assert stops["p0"].answer == "0" and stops["p0"].votes == 4
        # P(p > 1/2) for p ~ Beta(5, 1) = 1 - 0.5^5
        assert stops["p0"].statistic == pytest.approx(1 - 0.5**5)
        assert stops["p1"].votes == MAX // 2 and stops["p1"].answer == "2"
        assert rep.drawn == 4 + MAX and rep.reasons() == {"rule": 1, "max": 1}
        # One n-request per round, never more than the round.
        assert [n for _, n, _ in backend.calls].count(4) == len(backend.calls) == 1 + MAX // 4
        assert rep.vote_correct == {"p0": True, "p1": True}
        assert rep.mean_samples == (4 + MAX) / 2
        # Every sample is verified and stored as `ponder verify` stores it: nothing left to do.
        assert store.unverified(rep.run_id, verifier.name) == []
        # The stops are stored, under the schedule's key, with the completion tokens they cover.
        stored = store.stops(rep.run_id)
        assert [s.problem_id for s in stored] == ["p0", "p1"]
        assert {s.rule for s in stored} == {schedule_key(schedule)}
        assert schedule_key(schedule) == ("beta(min_samples=4, confidence=0.95) round=4 max=16")
        assert stored[0].completion_tokens == 4 * 2  # "#### 0" is two words
        assert stored == store.stops(rep.run_id, rule=schedule_key(schedule))
        assert store.stops(rep.run_id, rule="other") == []
    assert indices(tmp_path / "a.db") == {"p0": [0, 1, 2, 3], "p1": list(range(MAX))}


@pytest.mark.parametrize("rule", ["margin", "supermajority", "beta", "dirichlet", "window"])
def test_a_rule_never_stops_before_its_minimum_or_after_its_maximum(
    tmp_path: Path, rule: str
) -> None:
    task = arithmetic(3)
    streams = {"p0": DECIDED, "p1": SPLIT, "p2": ["#### 4", "#### 4", "#### 7"] * 22}
    backend = streams_backend(streams)
    schedule = Schedule(make_stop_rule(rule, {"min_samples": 8}), 12, round_size=3)
    with Store(tmp_path / "m.db") as store, make_verifier("math") as verifier:
        rep = run(
            sample_adaptive(store, backend, task, task.problems(), schedule, PARAMS, verifier)
        )
    for s in rep.stops:
        assert 8 <= s.samples <= 12
        assert s.samples in (9, 12)  # checkpoints: round ends (3, 6, 9) and the maximum
        # at the maximum the rule may fire too (it is asked first); before it only the rule stops
        assert s.reason == "rule" if s.samples == 9 else s.reason in ("rule", "max")
    # the decided problem stops at the first checkpoint at or past the minimum
    assert {s.problem_id: s.samples for s in rep.stops}["p0"] == 9


def test_killed_run_resumes_its_rounds_without_losing_or_duplicating(tmp_path: Path) -> None:
    task = arithmetic(4)
    streams = {"p0": DECIDED, "p1": SPLIT, "p2": ["#### 4"] * 64, "p3": SPLIT}
    schedule = Schedule(make_stop_rule("beta"), MAX)
    db = tmp_path / "k.db"

    # Reference: one uninterrupted run.
    with Store(tmp_path / "ref.db") as store, make_verifier("math") as verifier:
        full = run(
            sample_adaptive(
                store, streams_backend(streams), task, task.problems(), schedule, PARAMS, verifier
            )
        )

    backend = streams_backend(streams)
    original = backend.generate
    calls = {"n": 0}

    async def dies(prompt, n, params):
        calls["n"] += 1
        if calls["n"] == 5:
            raise BackendError("server down after 5 attempts: 503")
        return await original(prompt, n, params)

    backend.generate = dies  # type: ignore[method-assign]
    with Store(db) as store, make_verifier("math") as verifier:
        with pytest.raises(BackendError, match="503"):
            run(
                sample_adaptive(
                    store,
                    backend,
                    task,
                    task.problems(),
                    schedule,
                    PARAMS,
                    verifier,
                    concurrency=2,
                )
            )
        before = store.samples(full.run_id)
        assert 4 <= len(before) < sum(s.samples for s in full.stops)
        backend.generate = original  # type: ignore[method-assign]
        backend.calls.clear()
        again = run(
            sample_adaptive(store, backend, task, task.problems(), schedule, PARAMS, verifier)
        )
        after = {(s.problem_id, s.index): s.text for s in store.samples(full.run_id)}
    assert again.already_present == len(before)
    assert again.drawn == len(after) - len(before)
    assert all(after[(s.problem_id, s.index)] == s.text for s in before)  # nothing rewritten
    # Indices 0..k-1 exactly once, and the same stops as the uninterrupted run.
    stopped = {s.problem_id: s.samples for s in full.stops}
    assert indices(db) == {pid: list(range(k)) for pid, k in stopped.items()}
    assert [s.model_dump(exclude={"created_at"}) for s in again.stops] == [
        s.model_dump(exclude={"created_at"}) for s in full.stops
    ]
    # A third run has nothing to draw and rewrites the same stops.
    with Store(db) as store, make_verifier("math") as verifier:
        third = run(
            sample_adaptive(store, backend, task, task.problems(), schedule, PARAMS, verifier)
        )
        assert third.drawn == 0 and len(store.stops(full.run_id)) == len(full.stops)


def test_fixed_run_extended_adaptively_reuses_its_samples(tmp_path: Path) -> None:
    task = arithmetic(2)
    backend = streams_backend({"p0": DECIDED, "p1": SPLIT})
    with Store(tmp_path / "f.db") as store, make_verifier("math") as verifier:
        fixed = run(sample_run(store, backend, task, task.problems(), 8, PARAMS))
        assert store.unverified(fixed.run_id, verifier.name)  # not verified yet
        backend.calls.clear()
        rep = run(
            sample_adaptive(
                store,
                backend,
                task,
                task.problems(),
                Schedule(make_stop_rule("beta"), MAX),
                PARAMS,
                verifier,
            )
        )
        assert rep.run_id == fixed.run_id  # the rule is not part of the run's identity
        assert rep.already_present == 16
        # p0 is decided by its stored samples: nothing drawn for it; p1 goes on from index 8.
        assert {p[0][0].content for p in backend.calls} == {"Q: What is 1 + 1?"}
        assert rep.drawn == MAX - 8
        stops = {s.problem_id: (s.samples, s.reason) for s in rep.stops}
        assert stops == {"p0": (4, "rule"), "p1": (MAX, "max")}
        assert store.unverified(fixed.run_id, verifier.name) == []
    assert indices(tmp_path / "f.db") == {"p0": list(range(8)), "p1": list(range(MAX))}


def test_round_larger_than_the_backend_batch_is_split_into_requests(tmp_path: Path) -> None:
    task = arithmetic(1)
    backend = streams_backend({"p0": SPLIT})
    backend.batch = 3
    with Store(tmp_path / "b.db") as store, make_verifier("math") as verifier:
        rep = run(
            sample_adaptive(
                store,
                backend,
                task,
                task.problems(),
                Schedule(make_stop_rule("fixed"), 8, round_size=8),
                PARAMS,
                verifier,
            )
        )
    assert [n for _, n, _ in backend.calls] == [3, 3, 2]
    assert rep.stops[0].samples == 8 and rep.requests == 3


def test_rounds_of_several_problems_are_in_flight_at_once_never_two_of_one(
    tmp_path: Path,
) -> None:
    task = arithmetic(6)
    streams = {f"p{i}": SPLIT for i in range(6)}
    backend = streams_backend(streams)
    backend.delay_s = 0.02
    seen: list[str] = []
    original = backend.generate
    active: set[str] = set()

    async def watch(prompt, n, params):
        question = prompt[0].content
        assert question not in active, "two rounds of one problem in flight"
        active.add(question)
        seen.append(question)
        try:
            return await original(prompt, n, params)
        finally:
            active.discard(question)

    backend.generate = watch  # type: ignore[method-assign]
    with Store(tmp_path / "c.db") as store, make_verifier("math") as verifier:
        run(
            sample_adaptive(
                store,
                backend,
                task,
                task.problems(),
                Schedule(make_stop_rule("beta"), 8),
                PARAMS,
                verifier,
                concurrency=3,
            )
        )
    assert backend.max_in_flight == 3
    assert len(seen) == 12


def test_budget_syntax() -> None:
    assert str(parse_budget("2000samples")) == "2000samples"
    assert parse_budget("300000tokens").unit == "tokens"
    assert parse_budget("300_000 tokens").amount == 300_000
    assert parse_budget("1 sample").amount == 1
    for bad in ("2000", "samples", "0samples", "-5tokens", "2k tokens", "10 seconds", ""):
        with pytest.raises(ConfigError, match="invalid --budget") as info:
            parse_budget(bad)
        assert "2000samples or 300000tokens" in str(info.value.hint)


def test_n_below_the_rules_minimum_is_an_error() -> None:
    with pytest.raises(ConfigError, match="below the minimum"):
        Schedule(make_stop_rule("beta", {"min_samples": 8}), 4)


def test_two_samplers_on_one_run_split_the_rounds_and_agree(tmp_path: Path) -> None:
    """Two concurrent adaptive samplers (two connections, two claim owners) on one run draw
    every index once and store the same stops as one sampler alone."""
    task = arithmetic(6)
    streams = {f"p{i}": (DECIDED if i % 2 else SPLIT) for i in range(6)}
    schedule = Schedule(make_stop_rule("beta"), MAX)
    with Store(tmp_path / "ref.db") as store, make_verifier("math") as verifier:
        alone = run(
            sample_adaptive(
                store, streams_backend(streams), task, task.problems(), schedule, PARAMS, verifier
            )
        )

    async def both() -> list:
        backends = [streams_backend(streams), streams_backend(streams)]
        for b in backends:
            b.delay_s = 0.01
        with (
            Store(tmp_path / "two.db") as one,
            Store(tmp_path / "two.db") as two,
            make_verifier("math") as v1,
            make_verifier("math") as v2,
        ):
            return await asyncio.gather(
                *(
                    sample_adaptive(
                        store,
                        b,
                        task,
                        task.problems(),
                        schedule,
                        PARAMS,
                        v,
                        concurrency=2,
                        poll_s=0.02,
                    )
                    for store, b, v in ((one, backends[0], v1), (two, backends[1], v2))
                )
            )

    reports = run(both())
    assert sum(r.drawn for r in reports) == sum(s.samples for s in alone.stops)
    assert all(r.drawn > 0 for r in reports)  # both took part
    expected = [s.model_dump(exclude={"created_at"}) for s in alone.stops]
    for r in reports:
        assert [s.model_dump(exclude={"created_at"}) for s in r.stops] == expected
    stopped = {s.problem_id: s.samples for s in alone.stops}
    assert indices(tmp_path / "two.db") == {pid: list(range(k)) for pid, k in stopped.items()}


def test_vote_correct_reads_the_verdicts_of_the_samples_that_voted_for_the_answer() -> None:
    answers = ["1", None, "2", " 2\n"]
    assert vote_correct(answers, [False, False, False, True], "2")  # same class after strip
    assert not vote_correct(answers, [True, False, False, False], "2")
    assert vote_correct(answers, [True, False, False, False], "1")
    assert not vote_correct(answers, [True, True, True, True], None)  # no answer: never correct
    assert not vote_correct(answers, [True, True, True, True], "3")
