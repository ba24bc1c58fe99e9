"""Several processes sampling one run: claims on sample indices, dead owners, real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ponder.errors import StoreError
from ponder.records import Problem, Sample, SamplingParams
from ponder.store import LEASE_S, RunSpec, Store

ROOT = Path(__file__).resolve().parent.parent
SPEC = RunSpec(model="scripted:claims", task={"name": "claims"}, params=SamplingParams())


def _store_with_run(path: Path) -> Store:
    store = Store(path)
    store.ensure_run(SPEC)
    store.add_problems(SPEC.run_id, [Problem(id="p", question="q")])
    return store


def _sample(idx: int, text: str = "x") -> Sample:
    return Sample(
        run_id=SPEC.run_id,
        problem_id="p",
        index=idx,
        text=text,
        finish_reason="stop",
        completion_tokens=1,
        prompt_tokens=1,
        latency_s=0.0,
        seed=0,
    )


def _foreign_owner(path: Path, *, host: str, pid: int, start: str | None, beat: float) -> int:
    """An owner row as another process would have written it."""
    con = sqlite3.connect(path)
    cur = con.execute(
        "INSERT INTO owners (host, pid, process_start, started_at, heartbeat) VALUES (?,?,?,?,?)",
        (host, pid, start, beat, beat),
    )
    con.commit()
    con.close()
    return int(cur.lastrowid or 0)


def _claim_as(path: Path, owner: int, indices: list[int]) -> None:
    con = sqlite3.connect(path)
    con.executemany(
        "INSERT INTO claims (run_id, problem_id, idx, owner_id) VALUES (?,?,?,?)",
        [(SPEC.run_id, "p", i, owner) for i in indices],
    )
    con.commit()
    con.close()


def test_claims_exclude_stored_and_claimed_indices(tmp_path: Path) -> None:
    with _store_with_run(tmp_path / "c.db") as store:
        a, b = store.register_owner(), store.register_owner()
        store.add_samples([_sample(0)])
        assert store.claim(SPEC.run_id, a, "p", [0, 1, 2]) == [1, 2]
        assert store.claim(SPEC.run_id, b, "p", [1, 2, 3]) == [3]
        assert {i: o.id for i, o in store.claims(SPEC.run_id, exclude=b)["p"].items()} == {
            1: a,
            2: a,
        }
        # Storing releases the claim in the same transaction.
        store.add_samples([_sample(1)], owner=a)
        assert set(store.claims(SPEC.run_id)["p"]) == {2, 3}
        # Releasing an owner drops what it still holds.
        store.release_owner(a)
        assert set(store.claims(SPEC.run_id)["p"]) == {3}
        assert store.claim(SPEC.run_id, b, "p", [2]) == [2]


def test_a_sample_drawn_twice_after_a_lost_lease_is_kept_once(tmp_path: Path) -> None:
    with _store_with_run(tmp_path / "c.db") as store:
        a = store.register_owner()
        assert store.claim(SPEC.run_id, a, "p", [0]) == [0]
        store.add_samples([_sample(0, "first")])  # someone else stored it meanwhile
        assert store.add_samples([_sample(0, "second")], owner=a) == []
        assert [s.text for s in store.samples(SPEC.run_id)] == ["first"]
        assert store.claims(SPEC.run_id) == {}


def test_dead_owners_never_block(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with _store_with_run(path) as store:
        me = store.register_owner()
        now, host = time.time(), socket.gethostname()
        finished = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        gone_pid = int(finished.stdout)
        # a process that ended, our own pid taken over by another process (start time differs),
        # a process elsewhere whose heartbeat stopped, and one elsewhere that is alive
        gone = _foreign_owner(path, host=host, pid=gone_pid, start=None, beat=now)
        reused = _foreign_owner(path, host=host, pid=os.getpid(), start="1", beat=now)
        stale = _foreign_owner(path, host="elsewhere", pid=1, start=None, beat=now - LEASE_S - 1)
        live = _foreign_owner(path, host="elsewhere", pid=1, start=None, beat=now)
        for owner, idx in ((gone, 0), (reused, 1), (stale, 2), (live, 3)):
            _claim_as(path, owner, [idx])
        assert store.claim(SPEC.run_id, me, "p", [0, 1, 2, 3]) == [0, 1, 2]
        claims = store.claims(SPEC.run_id, exclude=me)
        assert {i: o.id for i, o in claims["p"].items()} == {3: live}
        con = sqlite3.connect(path)
        owners = {r[0] for r in con.execute("SELECT id FROM owners")}
        con.close()
        assert owners == {me, live}


def test_an_owner_taken_for_dead_records_itself_again(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with _store_with_run(path) as store:
        me = store.register_owner()
        con = sqlite3.connect(path)
        con.execute("DELETE FROM owners WHERE id = ?", (me,))
        con.commit()
        con.close()
        assert store.heartbeat(me) is False
        assert store.heartbeat(me) is True
        assert store.claim(SPEC.run_id, me, "p", [0]) == [0]


# --- real processes -------------------------------------------------------------------------------


def _data(tmp_path: Path, problems: int) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
            for i in range(problems)
        )
    )
    return path


def _sampler(
    db: Path, data: Path, n: int, delay_s: float, *hold: str | int | Path
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests._sampler_proc", str(db), str(data), str(n), str(delay_s)]
        + [str(h) for h in hold],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def _claimed(db: Path) -> int:
    con = sqlite3.connect(db, timeout=30)
    try:
        return int(con.execute("SELECT COUNT(*) FROM claims").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _stored(db: Path) -> list[tuple[str, int]]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("SELECT problem_id, idx FROM samples").fetchall()
    except sqlite3.OperationalError:  # the sampler has not created its tables yet
        return []
    finally:
        con.close()


def _wait_until(what: str, ok: Callable[[], bool], *procs: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not ok():
        for proc in procs:
            assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _every_sample_once(db: Path, problems: int, n: int) -> None:
    stored = _stored(db)
    assert len(stored) == len(set(stored)) == problems * n
    per_problem = Counter(p for p, _ in stored)
    assert sorted(per_problem.values()) == [n] * problems
    assert {i for _, i in stored} == set(range(n))
    con = sqlite3.connect(db)
    left = con.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    owners = con.execute("SELECT COUNT(*) FROM owners").fetchone()[0]
    con.close()
    assert (left, owners) == (0, 0)  # finished processes leave no claims behind


def test_two_processes_share_one_run(tmp_path: Path) -> None:
    """The same sampling started twice on one database: each sample is drawn once, by one of them.

    The first process is held inside its second request (indices claimed, nothing stored) while the
    second one runs: the second draws everything else, then waits for the held unit instead of
    drawing it again or failing, and says which process it waits for.
    """
    db, data, gate = tmp_path / "shared.db", _data(tmp_path, 4), tmp_path / "go"
    n, total = 6, 24
    first = _sampler(db, data, n, 0.0, 1, gate)
    try:
        _wait_until("the first holds a claim", lambda: _claimed(db) == 2, first)
        assert len(_stored(db)) == 2
        second = _sampler(db, data, n, 0.0)
        try:
            _wait_until(
                "all but the held unit are stored",
                lambda: len(_stored(db)) == total - 2,
                first,
                second,
            )
            time.sleep(0.5)
            assert second.poll() is None  # waiting for the held unit, not failing nor redrawing
            assert _claimed(db) == 2
            gate.touch()
            out_second, err_second = second.communicate(timeout=120)
        finally:
            second.kill()
        out_first, err_first = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err_first
    assert second.returncode == 0, err_second
    a, b = json.loads(out_first), json.loads(out_second)
    _every_sample_once(db, 4, n)
    assert a["run_id"] == b["run_id"]
    assert (a["drawn"], a["drawn_elsewhere"]) == (4, total - 4)
    assert (b["already_present"], b["drawn"], b["drawn_elsewhere"]) == (2, total - 4, 2)
    said = " ".join(err_second.split())
    assert f"waiting for 2 sample(s) being drawn by another process (pid {first.pid} on" in said


def test_a_sampler_killed_outright_never_blocks_the_next(tmp_path: Path) -> None:
    """kill -9 while a request is in flight: its claim stays behind, and the rerun completes."""
    db, data = tmp_path / "killed.db", _data(tmp_path, 3)
    n, total = 8, 24
    victim = _sampler(db, data, n, 0.0, 3)  # holds its 4th request forever
    try:
        _wait_until(
            "the victim holds a claim", lambda: len(_stored(db)) == 6 and _claimed(db) == 2, victim
        )
        os.kill(victim.pid, signal.SIGKILL)
        # Not reaped yet: the dead sampler is a zombie that still has its pid, and its claim stays.
        assert _claimed(db) == 2
        rerun = _sampler(db, data, n, 0.0)
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        report = json.loads(out)
        assert (report["already_present"], report["drawn"]) == (6, total - 6)
        _every_sample_once(db, 3, n)
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.embedded
def test_the_same_ponder_sample_started_twice(tmp_path: Path) -> None:
    """Two real `ponder sample` commands on one database, started together on the real model."""
    db = tmp_path / "twice.db"
    args = [
        str(Path(sys.executable).parent / "ponder"),
        "sample",
        "--task",
        "gsm8k",
        "--limit",
        "2",
        "--n",
        "6",
        "--parallel",
        "2",
        "--concurrency",
        "1",
        "--model",
        "smollm2-135m",
        "--max-tokens",
        "4",
        "--json",
        "--db",
        str(db),
    ]
    env = {**os.environ, "COLUMNS": "200"}
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert "UNIQUE" not in err
        outs.append(json.loads(out)["sampling"])
    _every_sample_once(db, 2, 6)
    assert outs[0]["run_id"] == outs[1]["run_id"]
    assert outs[0]["drawn"] + outs[1]["drawn"] == 12
    for o in outs:
        assert o["already_present"] + o["drawn"] + o["drawn_elsewhere"] == 12


def test_concurrent_drivers_in_one_process_split_the_work(tmp_path: Path) -> None:
    """Two sampling calls and two system-run calls at once on their own connections to one file."""
    from ponder.backends import ScriptedBackend
    from ponder.runs import sample_run, system_run
    from ponder.systems import System
    from tests._fakes import arithmetic

    db = tmp_path / "both.db"
    task = arithmetic(5)
    params = SamplingParams(max_tokens=8, seed=1)

    async def sampling() -> list[Any]:
        backend = ScriptedBackend(outputs=["#### 1"], delay_s=0.01, batch=2)
        with Store(db) as a, Store(db) as b:
            return list(
                await asyncio.gather(
                    sample_run(a, backend, task, task.problems(), 6, params, poll_s=0.01),
                    sample_run(b, backend, task, task.problems(), 6, params, poll_s=0.01),
                )
            )

    first, second = asyncio.run(sampling())
    assert first.drawn + second.drawn == 30 and first.drawn > 0 and second.drawn > 0
    assert first.drawn_elsewhere == second.drawn and second.drawn_elsewhere == first.drawn
    with Store(db) as store:
        samples = store.samples(first.run_id)
    assert sorted((s.problem_id, s.index) for s in samples) == sorted(
        (p.id, i) for p in task.problems() for i in range(6)
    )

    async def systems() -> list[Any]:
        backend = ScriptedBackend(outputs=["#### 2"], delay_s=0.01)
        config = {"layers": [{"type": "generate"}]}
        async with (
            System.from_dict(config, default_backend=backend) as s1,
            System.from_dict(config, default_backend=backend) as s2,
        ):
            with Store(db) as a, Store(db) as b:
                return list(
                    await asyncio.gather(
                        system_run(a, s1, task, task.problems(), concurrency=1, poll_s=0.01),
                        system_run(b, s2, task, task.problems(), concurrency=1, poll_s=0.01),
                    )
                )

    one, two = asyncio.run(systems())
    assert one.run_id == two.run_id
    assert one.answered + two.answered == 5 and one.answered > 0 and two.answered > 0
    assert one.answered_elsewhere == two.answered
    with Store(db) as store:
        answers = store.samples(one.run_id)
        assert sorted(s.problem_id for s in answers) == [p.id for p in task.problems()]
        assert len(store.trace_rows(one.run_id)) == 5
        assert set(store.prompts(one.run_id)) == {p.id for p in task.problems()}


def test_a_failing_run_leaves_no_claims(tmp_path: Path) -> None:
    from ponder.backends import ScriptedBackend
    from ponder.errors import BackendError
    from ponder.runs import sample_run
    from tests._fakes import arithmetic

    db = tmp_path / "fail.db"
    task = arithmetic(2)
    backend = ScriptedBackend(fail_with=BackendError("server down: 503"), batch=2)
    with Store(db) as store, pytest.raises(BackendError, match="503"):
        asyncio.run(sample_run(store, backend, task, task.problems(), 2, SamplingParams()))
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    assert con.execute("SELECT COUNT(*) FROM owners").fetchone()[0] == 0
    con.close()


def test_opening_a_new_database_waits_for_a_writer(tmp_path: Path) -> None:
    """Switching a new file to WAL while another connection writes is answered "locked" at once by
    SQLite: the store waits (up to its timeout) instead of failing, as two processes opening the
    same new database together need."""
    path = tmp_path / "new.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE other (a)")
    timer = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    timer.start()
    try:
        with Store(path, timeout_s=20) as store:
            assert store.runs() == []
    finally:
        timer.join()
        writer.close()
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # a writer that never lets go: the timeout still ends the wait, with the actionable error
    stuck = sqlite3.connect(tmp_path / "stuck.db", isolation_level=None)
    stuck.execute("BEGIN IMMEDIATE")
    stuck.execute("CREATE TABLE other (a)")
    try:
        with pytest.raises(StoreError, match="locked"):
            Store(tmp_path / "stuck.db", timeout_s=0.3)
    finally:
        stuck.close()
