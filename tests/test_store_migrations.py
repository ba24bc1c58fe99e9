"""Schema versions: a database written by the first release (schema 0) upgrades in place, in one
transaction, and reports the same numbers; a newer database is refused; run ids never move."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from math import comb
from pathlib import Path

import pytest

from ponder.analysis import build_report, load_run, report_json
from ponder.errors import StoreError
from ponder.records import Message, Problem, SamplingParams
from ponder.store import SCHEMA_VERSION, RunSpec, Store

PONDER = [sys.executable, "-m", "ponder"]

# The schema of the releases before versioning, copied verbatim from the store as it was (user_version
# 0). Frozen here on purpose: it is what databases in the wild look like, whatever the store becomes.
SCHEMA_V0 = """
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
V0_TABLES = ("runs", "problems", "samples", "verdicts", "traces")

# A spec exactly as the first release stored it (its canonical JSON) and the id it hashed to.
V0_SPEC = (
    '{"model":"llamacpp:smollm2-135m@abc","params":{"max_tokens":64,"min_p":0.0,"seed":3,'
    '"stop":["\\n\\n"],"temperature":0.7,"top_k":0,"top_p":1.0},"task":{"name":"gsm8k",'
    '"shots":[],"template":"Q: {question}","verifier":"math"}}'
)
V0_ID = "1f3172f4b1a8"

# problem -> (reference, [(text, status, completion tokens)] per sample index)
V0_SAMPLES: dict[str, tuple[str, list[tuple[str, str, int]]]] = {
    "gsm8k/0": ("18", [("#### 18", "correct", 12), ("#### 7", "incorrect", 9)] * 3),
    "gsm8k/1": ("3", [("#### 4", "incorrect", 20), ("unsure", "unparsed", 31)] * 3),
    "gsm8k/2": ("70000", [("#### 70000", "correct", 15)] * 5 + [("#### 1", "incorrect", 8)]),
}
N = 6


def _v0_database(path: Path) -> None:
    """A database as the first release wrote it: its schema, a verified run and a traced answer."""
    con = sqlite3.connect(path)
    con.executescript(SCHEMA_V0)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(
        "INSERT INTO runs VALUES (?,?,?,?,?)",
        (V0_ID, V0_SPEC, "llamacpp:smollm2-135m@abc", "gsm8k", 1000.0),
    )
    for position, (pid, (ref, rows)) in enumerate(V0_SAMPLES.items()):
        con.execute(
            "INSERT INTO problems VALUES (?,?,?,?,?,?)",
            (V0_ID, pid, position, f"question {pid}", ref, '{"source": "v0"}'),
        )
        for idx, (text, status, tokens) in enumerate(rows):
            cur = con.execute(
                "INSERT INTO samples (run_id, problem_id, idx, text, finish_reason, "
                "completion_tokens, prompt_tokens, latency_s, seed, mean_logprob, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (V0_ID, pid, idx, text, "stop", tokens, 40, 0.5, 11 + idx, -0.1 * idx, 1001.0),
            )
            con.execute(
                "INSERT INTO verdicts VALUES (?,?,?,?,?,?,?)",
                (cur.lastrowid, "math", status, text[5:] or None, None, "", 1002.0),
            )
    con.execute(
        "INSERT INTO traces VALUES (?,?,?,?,?,?)",
        (1, '{"events": []}', 3, 100, 50, 1.5),
    )
    con.commit()
    con.close()


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every schema-0 table, in schema-0 columns only."""
    con = sqlite3.connect(path)
    out = {}
    for table in V0_TABLES:
        columns = [
            r[1]
            for r in sqlite3.connect(":memory:")
            .executescript(SCHEMA_V0)
            .execute(f"PRAGMA table_info({table})")
        ]
        out[table] = con.execute(
            f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid"
        ).fetchall()
    con.close()
    return out


def _user_version(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("PRAGMA user_version").fetchone()[0])
    finally:
        con.close()


def _expected_coverage(k: int) -> float:
    """Mean unbiased pass@k over the problems, from the raw rows above (independent of Ponder)."""
    values = []
    for _, rows in V0_SAMPLES.values():
        n, c = len(rows), sum(1 for _, status, _ in rows if status == "correct")
        values.append(1.0 - comb(n - c, k) / comb(n, k))
    return sum(values) / len(values)


def _ponder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PONDER, *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def test_run_ids_of_fixed_specs_never_change() -> None:
    """Ids computed by the first release; a spec change that moves them orphans every stored run."""
    spec = RunSpec(
        model="llamacpp:smollm2-135m@abc",
        task={"name": "gsm8k", "template": "Q: {question}", "shots": [], "verifier": "math"},
        params=SamplingParams(temperature=0.7, max_tokens=64, seed=3, stop=("\n\n",)),
    )
    assert spec.canonical() == V0_SPEC
    assert spec.run_id == V0_ID
    assert RunSpec(model="scripted:x", task={"name": "list"}, params=SamplingParams()).run_id == (
        "37c6cc6785dc"
    )
    # Stop sequences are part of the identity: another stop is another run.
    other = spec.model_copy(update={"params": spec.params.model_copy(update={"stop": ()})})
    assert other.run_id != V0_ID


def test_v0_database_upgrades_in_place_and_reports_the_same_numbers(tmp_path: Path) -> None:
    db = tmp_path / "v0.db"
    _v0_database(db)
    before = _rows(db)
    assert _user_version(db) == 0

    result = _ponder("report", V0_ID, "--json", "--bootstrap", "0", "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert _user_version(db) == SCHEMA_VERSION
    assert _rows(db) == before  # no row lost or changed
    printed = json.loads(result.stdout)
    (report,) = printed["runs"]

    # The numbers, computed from the raw rows without Ponder ...
    assert report["problems"] == 3 and report["k"][0] == 1 and report["k"][-1] == N
    assert report["coverage"]["mean"] == pytest.approx([_expected_coverage(k) for k in report["k"]])
    all_rows = [r for _, rows in V0_SAMPLES.values() for r in rows]
    assert report["cost"]["samples"] == len(all_rows) == 3 * N
    assert report["cost"]["prompt_tokens"] == 40 * len(all_rows)
    assert report["cost"]["completion_tokens"] == sum(t for _, _, t in all_rows)
    # ... and through the analysis API on the upgraded file.
    with Store(db) as store:
        api = report_json(build_report(load_run(store, V0_ID), bootstrap=0))
        assert store.prompts(V0_ID) == {}  # stored before prompts were: export rebuilds them
    assert api["coverage"]["mean"] == report["coverage"]["mean"]
    assert api["cost"] == report["cost"]

    # Opening again is a no-op.
    runs = _ponder("runs", "--json", "--db", str(db))
    assert runs.returncode == 0, runs.stderr
    assert V0_ID in runs.stdout and _rows(db) == before

    # A problem of the old run sampled again gets its prompt stored; a stored prompt stays.
    problem = Problem(id="gsm8k/0", question="question gsm8k/0", reference="18")
    with Store(db) as store:
        store.add_problems(V0_ID, [problem], [[Message(role="user", content="Q: first")]])
        store.add_problems(V0_ID, [problem], [[Message(role="user", content="Q: second")]])
        assert store.prompts(V0_ID) == {"gsm8k/0": [Message(role="user", content="Q: first")]}
        assert [p.id for p in store.problems(V0_ID)] == list(V0_SAMPLES)
    assert _rows(db) == before


def test_upgrade_is_one_transaction(tmp_path: Path) -> None:
    """A migration failing halfway leaves the file exactly at version 0."""
    db = tmp_path / "v0.db"
    _v0_database(db)
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE owners (x)"
    )  # a clash the first migration trips on after its first step
    con.commit()
    con.close()
    before = _rows(db)
    with pytest.raises(StoreError, match="owners"):
        Store(db)
    assert _user_version(db) == 0
    con = sqlite3.connect(db)
    columns = [r[1] for r in con.execute("PRAGMA table_info(problems)")]
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert "prompt" not in columns and "claims" not in tables  # the first step was rolled back
    assert _rows(db) == before


def test_database_from_a_newer_ponder_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer") as info:
        Store(db)
    assert "upgrade Ponder" in str(info.value)
    result = _ponder("runs", "--db", str(db))
    assert result.returncode == 1
    said = " ".join(result.stderr.split())
    assert f"has schema version {SCHEMA_VERSION + 1}, newer than this Ponder knows" in said
    assert "upgrade Ponder" in said
    assert _user_version(db) == SCHEMA_VERSION + 1  # untouched


def test_new_database_is_at_the_current_version(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    with Store(db) as store:
        assert store.runs() == []
    assert _user_version(db) == SCHEMA_VERSION


def test_version_4_database_gains_the_node_of_each_sample_keeping_its_rows(tmp_path: Path) -> None:
    from ponder.records import Sample, SamplingParams

    db = tmp_path / "v4.db"
    spec = RunSpec(model="scripted:x", task={"name": "t"}, params=SamplingParams())
    old = Sample(
        run_id=spec.run_id,
        problem_id="a",
        index=0,
        text="kept",
        finish_reason="stop",
        completion_tokens=1,
        prompt_tokens=1,
        latency_s=0.1,
        seed=3,
    )
    with Store(db) as store:
        store.ensure_run(spec)
        store.add_samples([old])
    # What version 4 wrote: samples without the node column.
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE samples DROP COLUMN node")
    con.execute("PRAGMA user_version = 4")
    con.commit()
    con.close()
    with Store(db) as store:
        (kept,) = store.samples(spec.run_id)
        assert (kept.text, kept.node) == ("kept", None)
        store.add_samples([old.model_copy(update={"index": 1, "node": "127.0.0.1/abcd1234"})])
        assert [s.node for s in store.samples(spec.run_id)] == [None, "127.0.0.1/abcd1234"]
    assert _user_version(db) == SCHEMA_VERSION
