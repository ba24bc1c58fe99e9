"""`ponder run` and `ponder trace`: system runs stored with traces, resumed, verified, compared.

Logic runs in-process on the scripted backend (a config can name it); one end-to-end test runs the
real CLI on the real embedded model.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ponder.backends import ScriptedBackend
from ponder.cli import app
from ponder.errors import StoreError
from ponder.records import Problem, Sample
from ponder.runs import system_run, system_spec
from ponder.store import Store
from ponder.systems import System
from ponder.tasks import get_task

PONDER = str(Path(sys.executable).parent / "ponder")
OUTPUTS = ["so #### 2", "maybe #### 3", "#### 2"]
CONFIG = f"""\
name: scripted-vote
description: 3 scripted samples, majority vote
model: {{backend: scripted, outputs: {json.dumps(OUTPUTS)}}}
layers:
  - type: generate
    n: 3
    max_tokens: 20
  - type: vote
"""
QUESTIONS = [("What is 1+1?", "2"), ("What is 1+2?", "3"), ("What is 2+0?", "2"), ("4-2?", "2")]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    system = tmp_path / "sys.yaml"
    system.write_text(CONFIG)
    return {"data": data, "system": system, "db": tmp_path / "r.db"}


def cli(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result


def run_json(files: dict[str, Path], *extra: str) -> dict[str, Any]:
    args = ["run", "--system", str(files["system"]), "--task", "jsonl", "--data"]
    args += [str(files["data"]), "--db", str(files["db"]), "--json", *extra]
    return json.loads(cli(*args).stdout)


def count(db: Path, table: str) -> int:
    con = sqlite3.connect(db, timeout=5)
    try:
        return int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_run_reports_system_and_baseline_and_resumes(files: dict[str, Path]) -> None:
    out = run_json(files, "--limit", "2")
    system, baseline = out["system"], out["baseline"]
    assert system["name"] == "scripted-vote"
    assert system["describe"] == "generate(n=3) -> vote"
    assert system["model"].startswith("system:scripted-vote@")
    assert system["problems"] == system["answered"] == system["verified"] == 2
    # the vote picks "#### 2" on every problem: right on q/1, wrong on q/2
    assert system["correct"] == 1 and system["accuracy"] == 0.5
    assert system["calls"] == 2 and system["calls_per_problem"] == 1.0
    assert set(system["components"]) == {"L0.0:generate", "L1.0:vote"}
    assert system["components"]["L0.0:generate"]["calls"] == 2
    assert system["components"]["L1.0:vote"]["calls"] == 0
    total = system["prompt_tokens"] + system["completion_tokens"]
    assert system["tokens_per_problem"] == pytest.approx(total / 2, abs=1e-5)
    assert system["latency_mean_s"] > 0 and system["latency_median_s"] > 0
    assert system["this_call"]["answered"] == 2 and system["this_call"]["already_present"] == 0
    # baseline: one greedy sample with the generate component's max_tokens, same problems
    assert baseline["params"]["temperature"] == 0.0 and baseline["params"]["max_tokens"] == 20
    assert baseline["model"] == "scripted:scripted"
    assert baseline["answered"] == 2 and baseline["calls_per_problem"] == 1.0
    assert baseline["correct"] == 2  # outputs cycle: the greedy samples are "2", "3"
    assert baseline["components"] == {}
    assert out["verification"]["system"]["checked"] == 2
    assert out["verification"]["baseline"]["checked"] == 2

    # more problems: only the new one is run; the stored answers and the baseline are reused
    more = run_json(files, "--limit", "3")
    assert more["system"]["run"] == system["run"] and more["baseline"]["run"] == baseline["run"]
    assert more["system"]["this_call"] == {
        **more["system"]["this_call"],
        "answered": 1,
        "already_present": 2,
    }
    assert more["baseline"]["this_call"]["drawn"] == 1
    assert more["system"]["answered"] == 3 and more["verification"]["system"]["checked"] == 1
    again = run_json(files, "--limit", "3")
    assert again["system"]["this_call"]["answered"] == 0
    assert again["baseline"]["this_call"]["drawn"] == 0
    assert count(files["db"], "samples") == 6 and count(files["db"], "traces") == 3

    # the system run is an ordinary run to runs/show/report/export
    db = ["--db", str(files["db"])]
    runs = json.loads(cli("runs", *db, "--json").stdout)
    assert {r["id"] for r in runs} == {system["run"], baseline["run"]}
    shown = cli("show", system["run"], *db).stdout
    assert f"ponder trace {system['run']} PROBLEM" in shown
    report = json.loads(cli("report", system["run"], baseline["run"], *db, "--json").stdout)
    assert [r["k"] for r in report["runs"]] == [[1], [1]]
    exported = [json.loads(x) for x in cli("export", system["run"], *db).stdout.splitlines()]
    assert len(exported) == 3 and all(x["verdict"] and x["index"] == 0 for x in exported)

    # --no-baseline: the system alone
    alone = run_json(files, "--limit", "3", "--no-baseline")
    assert alone["baseline"] is None and alone["system"]["run"] == system["run"]


def test_text_output_is_side_by_side(files: dict[str, Path]) -> None:
    args = ["run", "--system", str(files["system"]), "--task", "jsonl", "--data"]
    text = cli(*args, str(files["data"]), "--db", str(files["db"])).stdout
    for part in ("accuracy", "calls / problem", "latency / problem, median", "baseline"):
        assert part in text
    assert "L0.0:generate" in text and "ponder trace" in text


def test_answers_made_meanwhile_by_another_process_are_shown(files: dict[str, Path]) -> None:
    # Another process on the same run (here this test, with its own connection and claims, as a
    # second `ponder run` would) has claimed q/2 and q/3; it answers them while `ponder run`
    # answers q/1, which waits for them instead of answering them twice.
    slow = files["system"].with_name("slow.yaml")
    slow.write_text(CONFIG.replace("{backend: scripted,", "{backend: scripted, delay_s: 1.0,"))
    db, task = files["db"], get_task("jsonl", path=files["data"])
    problems = task.problems()[:3]
    with System.load(slow) as system:
        run_id = system_spec(system, task).run_id
    other = Store(db)
    other.ensure_run(system_spec(System.load(slow), task))
    other.add_problems(run_id, problems)
    owner = other.register_owner()
    for p in problems[1:]:
        assert other.claim(run_id, owner, p.id, [0]) == [0]
    failed: list[BaseException] = []

    def answer_them() -> None:
        with Store(db) as mine:  # a connection of this thread's own
            try:
                while count(db, "claims") < 3:  # `ponder run` has claimed q/1: it is running
                    time.sleep(0.02)
                for p in problems[1:]:
                    answer = Sample(
                        run_id=run_id,
                        problem_id=p.id,
                        index=0,
                        text="#### 2",
                        finish_reason="stop",
                        completion_tokens=2,
                        prompt_tokens=5,
                        latency_s=0.1,
                        seed=0,
                    )
                    mine.add_samples([answer], owner=owner)
            except Exception as exc:  # noqa: BLE001 - asserted in the test's thread
                failed.append(exc)
                mine.release_owner(owner)  # so that `ponder run` stops waiting for these

    thread = threading.Thread(target=answer_them)
    thread.start()
    try:
        args = ["run", "--system", str(slow), "--task", "jsonl", "--data", str(files["data"])]
        text = cli(*args, "--db", str(db), "--limit", "3", "--no-baseline").stdout
    finally:
        thread.join()
        other.release_owner(owner)
        other.close()
    assert not failed
    assert f"run {run_id}" in text
    assert "1 new answers (0 already stored, 2 answered meanwhile by another process)" in text


def test_trace_lists_shows_and_prints_json(files: dict[str, Path]) -> None:
    out = run_json(files, "--limit", "2")
    run_id, db = out["system"]["run"], ["--db", str(files["db"])]
    listing = json.loads(cli("trace", run_id, *db, "--json").stdout)["traces"]
    assert [t["problem_id"] for t in listing] == ["q/1", "q/2"]
    assert [t["verdict"] for t in listing] == ["correct", "incorrect"]
    tree = cli("trace", run_id[:6], "q/1", "--text", *db).stdout
    assert "layer 0" in tree and "vote" in tree and "output 1:" in tree
    assert "verdict (math): correct" in tree and "usage per component" in tree
    trace = json.loads(cli("trace", run_id, "q/2", *db, "--json").stdout)
    assert trace["system"] == "scripted-vote" and trace["config"]["name"] == "scripted-vote"
    assert trace["usage"]["calls"] == 1 and trace["answer_id"]

    missing = cli("trace", run_id, "q/9", *db, code=2)
    assert "q/1, q/2" in missing.stderr
    unanswered = cli("trace", run_id, "q/3", *db, code=2)  # not part of the run
    assert "no problem 'q/3'" in unanswered.stderr
    sampling = cli("trace", out["baseline"]["run"], *db, code=2)
    assert "sampling run" in sampling.stderr


def test_identity_follows_what_changes_the_answers(files: dict[str, Path]) -> None:
    task = get_task("jsonl", path=files["data"])

    def run_id(config: str, **kwargs: Any) -> str:
        files["system"].write_text(config)
        with System.load(files["system"]) as system:
            return system_spec(system, task, **kwargs).run_id

    base = run_id(CONFIG)
    assert run_id(CONFIG.replace("majority vote", "a vote")) == base  # description only
    assert run_id(CONFIG, seed=5) != base
    assert run_id(CONFIG.replace("max_tokens: 20", "max_tokens: 21")) != base
    # a caller's default backend is part of the identity (by its backend identity)
    files["system"].write_text(CONFIG.replace("model: {", "# model: {"))
    spec_a = system_spec(System.load(files["system"], default_backend=ScriptedBackend()), task)
    named = ScriptedBackend(name="other")
    spec_b = system_spec(System.load(files["system"], default_backend=named), task)
    assert spec_a.run_id != spec_b.run_id


def test_a_failed_run_keeps_its_answers_and_resumes(files: dict[str, Path]) -> None:
    task = get_task("jsonl", path=files["data"])
    problems = task.problems()
    files["system"].write_text(CONFIG.replace("model: {", "# model: {"))

    def fail_on_q3(prompt: Any, i: int, params: Any) -> str:
        if "2+0" in prompt[-1].content:
            raise RuntimeError("engine died")
        return "#### 2"

    async def go(backend: ScriptedBackend) -> Any:
        system = System.load(files["system"], default_backend=backend)
        with Store(files["db"]) as store:
            return await system_run(store, system, task, problems, concurrency=1)

    import asyncio

    with pytest.raises(Exception, match="engine died"):
        asyncio.run(go(ScriptedBackend(fn=fail_on_q3)))
    assert count(files["db"], "samples") == count(files["db"], "traces") == 2
    report = asyncio.run(go(ScriptedBackend(fn=lambda *_: "#### 2")))
    assert (report.already_present, report.answered) == (2, 2)
    assert count(files["db"], "samples") == count(files["db"], "traces") == 4


def test_killed_cli_run_loses_and_duplicates_nothing(files: dict[str, Path]) -> None:
    files["system"].write_text(CONFIG.replace("outputs:", "delay_s: 0.4, outputs:"))
    args = [PONDER, "run", "--system", str(files["system"]), "--task", "jsonl", "--data"]
    args += [str(files["data"]), "--db", str(files["db"]), "--concurrency", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while count(files["db"], "traces") < 1:  # a hang is caught by pytest-timeout
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = count(files["db"], "samples")
    assert 1 <= before < 4 and count(files["db"], "traces") == before
    out = run_json(files, "--no-baseline")
    assert out["system"]["this_call"]["already_present"] == before
    assert out["system"]["this_call"]["answered"] == 4 - before
    assert count(files["db"], "samples") == count(files["db"], "traces") == 4


def test_bad_config_names_the_field(files: dict[str, Path]) -> None:
    files["system"].write_text(CONFIG.replace("max_tokens: 20", "max_tokns: 20"))
    args = ["run", "--system", str(files["system"]), "--task", "jsonl", "--data"]
    result = cli(*args, str(files["data"]), "--db", str(files["db"]), code=2)
    assert "layers[0][0].max_tokns" in result.stderr and "max_tokens" in result.stderr
    result = cli("run", "--system", "nope.yaml", *args[3:], str(files["data"]), code=2)
    assert "system config nope.yaml does not exist" in result.stderr
    assert not files["db"].exists() or count(files["db"], "samples") == 0


ARCHON = {
    "name": "gen-fuse",
    "layers": [
        [
            {
                "type": "generator",
                "model": "Qwen/Qwen2-72B-Instruct",
                "model_type": "Together_API",
                "temperature": 0.7,
                "max_tokens": 20,
                "samples": 3,
                "checkpoint": "",
            }
        ],
        [
            {
                "type": "fuser",
                "model": "Qwen/Qwen2-72B-Instruct",
                "model_type": "Together_API",
                "temperature": 0.7,
                "max_tokens": 20,
                "samples": 1,
            }
        ],
    ],
}


def test_archon_file_with_model_map(files: dict[str, Path], tmp_path: Path) -> None:
    archon = tmp_path / "archon.json"
    archon.write_text(json.dumps(ARCHON))
    args = ["run", "--system", str(archon), "--task", "jsonl", "--data", str(files["data"])]
    args += ["--db", str(files["db"]), "--limit", "2"]
    result = cli(*args, code=2)
    assert "has no local equivalent" in result.stderr and "--model-map" in result.stderr
    target = json.dumps({"backend": "scripted", "outputs": OUTPUTS})
    result = cli(*args, "--model-map", f"Qwen/Qwen2-72B-Instruct={target}", "--json")
    out = json.loads(result.stdout)
    # What the import changed is said once, as a warning naming the key.
    assert result.stderr.count("warning: Archon config 'gen-fuse' imported with changes") == 1
    assert "checkpoint at layers[0][0]" in result.stderr
    assert out["system"]["name"] == "archon:gen-fuse"
    assert out["system"]["describe"].startswith("generate(") and "fuse" in out["system"]["describe"]
    assert out["system"]["calls"] == 4  # a generate and a fuse call per problem
    assert out["baseline"]["model"] == "scripted:scripted"
    bad = cli(*args, "--model-map", "Qwen/Qwen2-72B-Instruct", code=2)
    assert "ARCHON_MODEL=MODEL" in bad.stderr
    ponder_config = cli(
        "run", "--system", str(files["system"]), "--default-model", "x", *args[3:], code=2
    )
    assert "Archon configs only" in ponder_config.stderr


def test_store_answer_and_trace_are_one_transaction(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)  # a database made before system runs existed
    con.execute(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, spec TEXT NOT NULL, model TEXT NOT NULL, "
        "task TEXT NOT NULL, created_at REAL NOT NULL)"
    )
    con.close()
    with System.from_dict(
        {"layers": [{"type": "generate"}]}, default_backend=ScriptedBackend(outputs=["#### 1"])
    ) as system:
        trace = system.run("q").trace
    task = get_task("jsonl", path=_one_problem(tmp_path))
    with Store(db) as store:
        spec = system_spec(System.from_dict({"layers": [{"type": "generate"}]}), task)
        run = store.ensure_run(spec)
        store.add_problems(run.id, [Problem(id="p", question="q", reference="1")])
        sample = Sample(
            run_id=run.id,
            problem_id="p",
            index=0,
            text="#### 1",
            finish_reason="stop",
            completion_tokens=2,
            prompt_tokens=1,
            latency_s=0.1,
            seed=0,
        )
        (sid,) = store.add_samples([sample], [trace])
        assert store.trace(sid) == trace
        with pytest.raises(StoreError):
            store.add_samples([sample], [trace])  # a duplicate answer stores neither
        assert [r.sample_id for r in store.trace_rows(run.id)] == [sid]
        assert len(store.samples(run.id)) == 1


def _one_problem(tmp_path: Path) -> Path:
    path = tmp_path / "one.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n')
    return path


@pytest.mark.embedded
def test_run_and_trace_on_the_embedded_model(tmp_path: Path) -> None:
    system = tmp_path / "tiny.yaml"
    # One engine thread: on a busy 2-core machine llama.cpp's two threads wait on each other (6x
    # slower). --model keeps these engine options and replaces the model.
    system.write_text(
        "name: tiny\n"
        "model: {backend: llamacpp, model: qwen2.5-coder-0.5b, threads: 1, n_parallel: 4,"
        " ctx_per_sequence: 1024}\n"
        "layers:\n  - type: generate\n    n: 2\n    max_tokens: 48\n  - type: vote\n"
    )
    db = tmp_path / "e2e.db"
    env = {**os.environ, "COLUMNS": "200"}
    args = [PONDER, "run", "--system", str(system), "--task", "gsm8k", "--limit", "2"]
    args += ["--model", "smollm2-135m", "--db", str(db)]
    result = subprocess.run([*args, "--json"], capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    system_out, baseline = out["system"], out["baseline"]
    assert system_out["answered"] == system_out["verified"] == 2
    assert system_out["calls"] == 2 and system_out["completion_tokens"] > 0
    assert baseline["model"].startswith("llamacpp:smollm2-135m@")
    assert baseline["params"]["max_tokens"] == 48 and baseline["answered"] == 2
    assert set(system_out["components"]) == {"L0.0:generate", "L1.0:vote"}

    trace = subprocess.run(
        [PONDER, "trace", system_out["run"], "gsm8k/0", "--db", str(db)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert trace.returncode == 0, trace.stderr
    assert "generate" in trace.stdout and "llamacpp:smollm2-135m" in trace.stdout
    assert "usage per component" in trace.stdout


def test_the_resume_hint_only_where_a_rerun_can_help(files: dict[str, Path]) -> None:
    # A server that is down: the run may pass later, so the hint says how to resume.
    files["system"].write_text(
        "name: down\n"
        "model: {backend: openai, base_url: 'http://127.0.0.1:9/v1', model: m, max_retries: 0,"
        " api_key_env: PONDER_TEST_NO_KEY}\n"
        "layers:\n  - type: generate\n    max_tokens: 8\n"
    )
    args = ["run", "--system", str(files["system"]), "--task", "jsonl", "--data"]
    args += [str(files["data"]), "--db", str(files["db"]), "--limit", "1", "--no-baseline"]
    down = cli(*args, code=1)
    assert "rerun the same command to resume" in down.stderr


@pytest.mark.embedded
def test_a_prompt_longer_than_the_context_does_not_promise_a_rerun(
    files: dict[str, Path], llama_server: str
) -> None:
    files["data"].write_text(json.dumps({"question": "why " * 9000, "answer": "1"}) + "\n")
    args = ["run", "--system", str(files["system"]), "--task", "jsonl", "--data"]
    args += [str(files["data"]), "--db", str(files["db"]), "--no-baseline"]
    # Measured before sending (the embedded engine tells its context): refused by Ponder.
    files["system"].write_text(
        "name: tiny-context\n"
        "model: {backend: llamacpp, model: smollm2-135m, n_parallel: 1, ctx_per_sequence: 128,"
        " threads: 1}\n"
        "layers:\n  - type: generate\n    max_tokens: 8\n"
    )
    result = cli(*args, code=2)
    assert "more than the model's context" in result.stderr
    assert "rerun" not in result.stderr
    # A server whose context Ponder does not know: llama.cpp rejects the request (HTTP 400).
    files["system"].write_text(
        "name: served\n"
        f"model: {{backend: openai, base_url: '{llama_server}/v1', model: m,"
        " api_key_env: PONDER_TEST_NO_KEY}\n"
        "layers:\n  - type: generate\n    max_tokens: 8\n"
    )
    result = cli(*args, code=2)
    assert "exceeds the available context size" in result.stderr
    assert "rerun" not in result.stderr
