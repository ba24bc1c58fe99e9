"""Export for training: jsonl, parquet, SFT and DPO records from a real store, task and verifier."""

from __future__ import annotations

import asyncio
import io
import json
import random
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ponder.backends import ScriptedBackend
from ponder.cli import app
from ponder.errors import ConfigError, UserError
from ponder.export import ExportReport, export_run, pick_pairs, prompt_builder
from ponder.records import Message, Prompt, SamplingParams
from ponder.runs import sample_run, verify_run
from ponder.store import Store
from ponder.tasks import JsonlTask, Task, get_task, select_problems
from ponder.verify import MathVerifier
from tests._fakes import arithmetic

PARAMS = SamplingParams(temperature=0.7, max_tokens=64, seed=3)
UNSURE = "I am not sure."

# What the scripted model answers, by the start of the question (gsm8k/0: 18, /1: 3, /2: 70000).
SCRIPT: dict[str, list[str]] = {
    # correct (one repeated), incorrect and unparsed samples
    "Janet": [
        "#### 18",
        "#### 7",
        "16 - 3 - 4 = 9 eggs, and 9 * 2 = 18.\n#### 18",
        UNSURE,
        "Maybe 20.\n#### 20",
        "#### 18",
        "#### 9",
        "She makes 18 dollars.\n#### 18",
    ],
    # correct and unparsed, never incorrect
    "A robe": ["#### 3", "2 + 1 = 3 bolts.\n#### 3", UNSURE, "#### 3"],
    # never correct
    "Josh": ["#### 7", UNSURE],
    # the jsonl task's problems
    "What is 6": ["#### 42", "#### 41"],
    "What is 2": ["#### 4", "#### 5"],
}
N = 8


def scripted(prompt: Prompt, i: int, params: SamplingParams) -> str:
    question = prompt if isinstance(prompt, str) else prompt[-1].content
    for start, texts in SCRIPT.items():
        if start in question:
            return texts[i % len(texts)]
    return "#### 0"


@dataclass
class Runs:
    db: Path
    gsm8k: str
    gsm8k_task: Task
    jsonl: str
    jsonl_task: Task
    jsonl_file: Path
    bare: str
    """A run of a task the registry does not know: prompts cannot be rebuilt."""
    unverified: str
    sent: dict[str, list[Message]]
    """problem id -> the prompt the backend received for it (gsm8k run)."""


def _sample(store: Store, task: Task, problems: list[Any], backend: ScriptedBackend) -> str:
    return asyncio.run(sample_run(store, backend, task, problems, N, PARAMS)).run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    tmp = tmp_path_factory.mktemp("export")
    db = tmp / "runs.db"
    data = tmp / "mini.jsonl"
    data.write_text(
        json.dumps({"uid": "a", "prompt": "What is 6 * 7?", "solution": "42"})
        + "\n"
        + json.dumps({"uid": "b", "prompt": "What is 2 + 2?", "solution": 4})
        + "\n",
        encoding="utf-8",
    )
    gsm8k_task = get_task(
        "gsm8k",
        system_prompt="You are a careful tutor.",
        template="Question: {question}\nEnd with '#### <answer>'.",
        few_shot=2,
    )
    jsonl_task = JsonlTask(
        path=str(data),
        question_field="prompt",
        answer_field="solution",
        id_field="uid",
        name="mini",
        few_shot=1,
    )
    backend = ScriptedBackend(fn=scripted)
    with Store(db) as store:
        gsm8k = _sample(store, gsm8k_task, select_problems(gsm8k_task.problems(), limit=3), backend)
        sent = {}
        for prompt, _, _ in backend.calls:
            assert isinstance(prompt, list)
            for p in gsm8k_task.problems()[:3]:
                if p.question in prompt[-1].content:
                    sent[p.id] = prompt
        jsonl = _sample(store, jsonl_task, jsonl_task.problems(), backend)
        bare_task = arithmetic(2)
        bare = _sample(store, bare_task, bare_task.problems(), ScriptedBackend(outputs=["#### 2"]))
        default = get_task("gsm8k")
        unverified = _sample(
            store,
            default,
            select_problems(default.problems(), limit=1),
            ScriptedBackend(fn=scripted),
        )
        with MathVerifier(workers=1) as verifier:
            for run_id in (gsm8k, jsonl, bare):
                verify_run(store, run_id, verifier)
    yield Runs(db, gsm8k, gsm8k_task, jsonl, jsonl_task, data, bare, unverified, sent)


def export(runs: Runs, run_id: str, fmt: Any, **kwargs: Any) -> tuple[list[dict], ExportReport]:
    buf = io.StringIO()
    with Store(runs.db) as store:
        report = export_run(store, run_id, fmt, buf, **kwargs)
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert report.records == len(records)
    return records, report


def statuses(runs: Runs, run_id: str) -> dict[tuple[str, int], tuple[str, str]]:
    """(problem id, sample index) -> (verdict status, text)."""
    with Store(runs.db) as store:
        verdicts = store.verdicts(run_id, "math")
        return {
            (s.problem_id, s.index): (verdicts[s.id or 0].status, s.text)
            for s in store.samples(run_id)
        }


# --- prompts --------------------------------------------------------------------------------------


def stored_before_prompts(runs: Runs, tmp_path: Path) -> Runs:
    """A copy of the runs as a database upgraded from schema 0 has them: no stored prompts."""
    db = tmp_path / "legacy.db"
    with Store(runs.db):
        pass  # checkpoints the WAL into the file before it is copied
    shutil.copy(runs.db, db)
    con = sqlite3.connect(db)
    con.execute("UPDATE problems SET prompt = NULL")
    con.commit()
    con.close()
    return replace(runs, db=db)


def test_export_uses_the_stored_prompts(runs: Runs) -> None:
    with Store(runs.db) as store:
        stored = store.prompts(runs.gsm8k)
        problems = store.problems(runs.gsm8k)
        bare = store.problems(runs.bare)
        bare_prompts = store.prompts(runs.bare)
    assert stored == runs.sent  # exactly what the backend received
    records, report = export(runs, runs.gsm8k, "sft")
    assert report.prompt_source == "stored" and report.prompt_note == ""
    for r in records:
        assert r["metadata"]["prompt_rebuilt"] is True
        sent = runs.sent[r["metadata"]["problem_id"]]
        assert r["messages"][:-1] == [m.model_dump() for m in sent]
    assert {p.id for p in problems} == set(stored)
    # A task that cannot be rebuilt (not in the registry) still exports its exact prompts.
    records, report = export(runs, runs.bare, "sft")
    assert report.prompt_source == "stored" and "NOT rebuilt" not in report.summary()
    by_id = {p.id: p for p in bare}
    for r in records:
        problem = by_id[r["metadata"]["problem_id"]]
        assert r["messages"][0] == {"role": "user", "content": f"Q: {problem.question}"}
        assert [m.model_dump() for m in bare_prompts[problem.id]] == r["messages"][:-1]


def test_problems_without_a_stored_prompt_are_rebuilt(runs: Runs, tmp_path: Path) -> None:
    legacy = stored_before_prompts(runs, tmp_path)
    con = sqlite3.connect(legacy.db)
    stored = {
        r[0]: r[1]
        for r in sqlite3.connect(runs.db).execute(
            "SELECT problem_id, prompt FROM problems WHERE run_id = ?", (runs.gsm8k,)
        )
    }
    first = sorted(stored)[0]
    con.execute(
        "UPDATE problems SET prompt = ? WHERE run_id = ? AND problem_id = ?",
        (stored[first], runs.gsm8k, first),
    )
    con.commit()
    con.close()
    with Store(legacy.db) as store:
        assert set(store.prompts(runs.gsm8k)) == {first}
        problems = store.problems(runs.gsm8k)
        builder = prompt_builder(
            store.get_run(runs.gsm8k).spec.task,
            store.prompts(runs.gsm8k),
            [p.id for p in problems],
        )
    assert builder.source == "task"  # how the others are rebuilt
    assert all(builder.prompt(p) == runs.sent[p.id] for p in problems)


def test_prompts_are_rebuilt_through_the_registry(runs: Runs) -> None:
    with Store(runs.db) as store:
        spec = store.get_run(runs.gsm8k).spec
        problems = store.problems(runs.gsm8k)
    builder = prompt_builder(spec.task)
    assert builder.source == "task" and builder.rebuilt
    for p in problems:
        rebuilt = builder.prompt(p)
        assert rebuilt == runs.gsm8k_task.prompt(p) == runs.sent[p.id]
        assert [m.role for m in rebuilt] == [
            "system",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
        ]


def test_jsonl_prompts_are_rebuilt_and_survive_a_moved_file(runs: Runs, tmp_path: Path) -> None:
    runs = stored_before_prompts(runs, tmp_path)
    with Store(runs.db) as store:
        spec = store.get_run(runs.jsonl).spec
        problems = store.problems(runs.jsonl)
    assert [p.id for p in problems] == ["a", "b"]
    builder = prompt_builder(spec.task)
    assert builder.source == "task"
    assert all(builder.prompt(p) == runs.jsonl_task.prompt(p) for p in problems)

    moved = runs.jsonl_file.with_name("moved.jsonl")
    runs.jsonl_file.rename(moved)
    try:
        builder = prompt_builder(spec.task)
        assert builder.source == "spec" and builder.rebuilt
        assert "does not exist" in builder.reason
        assert all(builder.prompt(p) == runs.jsonl_task.prompt(p) for p in problems)
        records, report = export(runs, runs.jsonl, "sft")
        assert report.prompt_source == "spec"
        for r in records:
            assert r["metadata"]["prompt_rebuilt"] is True
            problem = next(p for p in problems if p.id == r["metadata"]["problem_id"])
            prompt = [m.model_dump() for m in runs.jsonl_task.prompt(problem)]
            assert r["messages"][:-1] == prompt
    finally:
        moved.rename(runs.jsonl_file)


def test_changed_spec_is_not_taken_for_the_same_task(runs: Runs) -> None:
    with Store(runs.db) as store:
        spec = dict(store.get_run(runs.gsm8k).spec.task)
    spec["shots"] = spec["shots"][:1]  # not what few_shot=2 gives: the registry task differs
    builder = prompt_builder(spec)
    assert builder.source == "spec" and "shots" in builder.reason


def test_unknown_task_falls_back_to_the_bare_question(runs: Runs, tmp_path: Path) -> None:
    runs = stored_before_prompts(runs, tmp_path)
    builder = prompt_builder({"name": "no-such-task", "template": "Q: {question}"})
    assert builder.source == "question" and not builder.rebuilt
    assert "no-such-task" in builder.reason
    records, report = export(runs, runs.bare, "sft")
    assert report.prompt_source == "question" and report.prompt_rebuilt is False
    assert "NOT rebuilt" in report.summary()
    assert records
    for r in records:
        assert r["metadata"]["prompt_rebuilt"] is False
        user, answer = r["messages"]
        assert user["role"] == "user" and user["content"].startswith("What is ")
        assert answer == {"role": "assistant", "content": "#### 2"}


# --- sft ------------------------------------------------------------------------------------------


def test_sft_has_only_correct_samples_after_the_sampled_prompt(runs: Runs) -> None:
    verdicts = statuses(runs, runs.gsm8k)
    records, report = export(runs, runs.gsm8k, "sft")
    assert report.prompt_source == "stored"
    assert report.skipped_problems == {"no_correct": 1}
    seen: Counter[str] = Counter()
    for r in records:
        meta = r["metadata"]
        assert set(meta) >= {"run_id", "problem_id", "sample_index", "model", "task"}
        assert meta["run_id"] == runs.gsm8k and meta["task"] == "gsm8k"
        assert meta["model"] == "scripted:scripted"
        status, text = verdicts[(meta["problem_id"], meta["sample_index"])]
        assert status == "correct"
        *prompt, last = r["messages"]
        assert last == {"role": "assistant", "content": text}
        assert prompt == [m.model_dump() for m in runs.sent[meta["problem_id"]]]
        seen[meta["problem_id"]] += 1
    # gsm8k/0: four correct samples, one a repeat; gsm8k/1: six correct, two distinct texts
    assert seen == {"gsm8k/0": 3, "gsm8k/1": 2}
    assert report.duplicates == 1 + 4

    all_records, report = export(runs, runs.gsm8k, "sft", dedupe=False)
    correct = sum(1 for status, _ in verdicts.values() if status == "correct")
    assert len(all_records) == correct == 10 and report.duplicates == 0


# --- dpo ------------------------------------------------------------------------------------------


def test_dpo_pairs_correct_against_incorrect_within_the_cap(runs: Runs) -> None:
    verdicts = statuses(runs, runs.gsm8k)
    records, report = export(runs, runs.gsm8k, "dpo", seed=1)
    assert report.skipped_problems == {"no_correct": 1, "no_rejected": 1}
    assert "skipped 2 problems (1 with no correct sample, 1 with no incorrect" in report.summary()
    assert len(records) == 4  # gsm8k/0 has 3 distinct correct x 3 incorrect texts; cap 4
    pairs = set()
    for r in records:
        meta = r["metadata"]
        assert meta["problem_id"] == "gsm8k/0"
        good = verdicts[("gsm8k/0", meta["chosen_index"])]
        bad = verdicts[("gsm8k/0", meta["rejected_index"])]
        assert good[0] == "correct" and bad[0] == "incorrect" == meta["rejected_status"]
        assert r["chosen"] == [{"role": "assistant", "content": good[1]}]
        assert r["rejected"] == [{"role": "assistant", "content": bad[1]}]
        assert r["prompt"] == [m.model_dump() for m in runs.sent["gsm8k/0"]]
        pairs.add((meta["chosen_index"], meta["rejected_index"]))
    assert len(pairs) == 4
    # the first pairs use distinct samples on both sides
    assert len({c for c, _ in pairs}) == 3 and len({r for _, r in pairs}) == 3

    again, _ = export(runs, runs.gsm8k, "dpo", seed=1)
    assert again == records
    others = [export(runs, runs.gsm8k, "dpo", seed=s)[0] for s in range(2, 6)]
    assert any(o != records for o in others)

    everything, _ = export(runs, runs.gsm8k, "dpo", max_pairs_per_problem=None)
    assert len(everything) == 9
    capped, _ = export(runs, runs.gsm8k, "dpo", max_pairs_per_problem=2)
    assert len(capped) == 2


def test_dpo_unparsed_samples_only_when_asked(runs: Runs) -> None:
    records, report = export(
        runs, runs.gsm8k, "dpo", include_unparsed=True, max_pairs_per_problem=None
    )
    assert report.skipped_problems == {"no_correct": 1}
    by_problem = Counter(r["metadata"]["problem_id"] for r in records)
    # gsm8k/0: 3 correct x (3 incorrect + 1 unparsed); gsm8k/1: 2 distinct correct x 1 unparsed
    assert by_problem == {"gsm8k/0": 12, "gsm8k/1": 2}
    assert {r["metadata"]["rejected_status"] for r in records} == {"incorrect", "unparsed"}
    no_dedupe, _ = export(
        runs, runs.gsm8k, "dpo", include_unparsed=True, max_pairs_per_problem=None, dedupe=False
    )
    # gsm8k/0: 4 x 4; gsm8k/1: 6 correct x 2 unparsed
    assert len(no_dedupe) == 16 + 12


def test_pick_pairs_distinct_capped_and_spread() -> None:
    for n_chosen, n_rejected in [(1, 1), (3, 5), (5, 3), (4, 4), (7, 2)]:
        rng = random.Random(0)
        everything = pick_pairs(n_chosen, n_rejected, None, rng)
        assert len(set(everything)) == len(everything) == n_chosen * n_rejected
        first = pick_pairs(n_chosen, n_rejected, min(n_chosen, n_rejected), random.Random(1))
        assert len({c for c, _ in first}) == len({r for _, r in first}) == len(first)
        assert len(pick_pairs(n_chosen, n_rejected, 2, random.Random(1))) == min(2, len(everything))


# --- jsonl and parquet ----------------------------------------------------------------------------


def test_jsonl_has_every_sample_with_run_fields(runs: Runs) -> None:
    records, report = export(runs, runs.gsm8k, "jsonl")
    assert len(records) == 3 * N and report.unverified == 0 and report.prompt_source is None
    for r in records:
        assert r["run_id"] == runs.gsm8k and r["task"] == "gsm8k" and r["verifier"] == "math"
        assert r["model"] == "scripted:scripted"
        assert r["verdict"]["status"] in {"correct", "incorrect", "unparsed"}
        assert {"text", "question", "reference", "index", "completion_tokens"} <= set(r)
    assert Counter(r["verdict"]["status"] for r in records) == Counter(
        s for s, _ in statuses(runs, runs.gsm8k).values()
    )


def test_parquet_is_typed_and_complete(runs: Runs, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "deep" / "samples.parquet"
    with Store(runs.db) as store:
        report = export_run(store, runs.gsm8k, "parquet", out)
        with pytest.raises(ConfigError, match="output file"):
            export_run(store, runs.gsm8k, "parquet", io.StringIO())
    table = pq.read_table(out)
    assert table.num_rows == report.records == 3 * N
    types = {f.name: f.type for f in table.schema}
    assert types["index"] == pa.int64() and types["completion_tokens"] == pa.int64()
    assert types["latency_s"] == pa.float64() and types["verdict_score"] == pa.float64()
    assert types["text"] == pa.string() and types["verdict_status"] == pa.string()
    assert {"verdict_extracted", "verdict_detail", "model", "task", "run_id"} <= set(types)
    assert types["node"] == pa.string()  # where each sample was drawn (--executor ray)
    rows = table.to_pylist()
    jsonl, _ = export(runs, runs.gsm8k, "jsonl")
    assert [r["node"] for r in rows] == [r["node"] for r in jsonl]
    assert [r["verdict_status"] for r in rows] == [r["verdict"]["status"] for r in jsonl]
    assert [r["text"] for r in rows] == [r["text"] for r in jsonl]
    assert not list(tmp_path.glob("deep/.*.tmp"))


# --- errors and the CLI ---------------------------------------------------------------------------


def test_run_without_verdicts_is_a_user_error(runs: Runs) -> None:
    with Store(runs.db) as store:
        for fmt in ("sft", "jsonl"):
            with pytest.raises(UserError, match="has no verdicts yet") as info:
                export_run(store, runs.unverified, fmt, io.StringIO())  # type: ignore[arg-type]
            assert info.value.hint == f"ponder verify {runs.unverified}"
        with pytest.raises(UserError, match="no verdicts from verifier 'other'"):
            export_run(store, runs.gsm8k, "sft", io.StringIO(), verifier="other")
        with pytest.raises(ConfigError, match="unknown export format"):
            export_run(store, runs.gsm8k, "csv", io.StringIO())  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="max_pairs_per_problem"):
            export_run(store, runs.gsm8k, "dpo", io.StringIO(), max_pairs_per_problem=0)


def test_cli_export(runs: Runs, tmp_path: Path) -> None:
    cli = CliRunner()
    out = tmp_path / "pairs.jsonl"
    db = str(runs.db)
    result = cli.invoke(
        app,
        ["export", runs.gsm8k[:6], "--format", "dpo", "-o", str(out), "--db", db, "--seed", "1"],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert lines == export(runs, runs.gsm8k, "dpo", seed=1)[0]
    assert "wrote 4 dpo records" in result.stderr and "no incorrect sample" in result.stderr

    result = cli.invoke(app, ["export", runs.gsm8k, "-f", "sft", "--no-dedupe", "--db", db])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 10

    result = cli.invoke(app, ["export", runs.unverified, "--format", "sft", "--db", db])
    assert result.exit_code == 2
    assert (
        "has no verdicts yet" in result.stderr
        and f"ponder verify {runs.unverified}" in result.stderr
    )

    result = cli.invoke(app, ["export", runs.gsm8k, "--format", "parquet", "--db", db])
    assert result.exit_code == 2 and "needs an output file" in result.stderr
    result = cli.invoke(app, ["export", runs.gsm8k, "--format", "csv", "--db", db])
    assert result.exit_code == 2 and "unknown format" in result.stderr
