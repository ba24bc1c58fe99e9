"""`ponder search` from the command line: a scripted space (fast, every output checked) and an
end-to-end search on the real embedded model over a tiny space and 3 dev problems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ponder.cli import app
from ponder.search import SearchSpace
from ponder.systems import System

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "search"

QUESTIONS = [(f"What is {i}+{i}?", str(2 * i)) for i in range(10)]


def cli(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    return path


def scripted_space(tmp_path: Path) -> Path:
    # Two scripted "models": one always says 4 (right on one problem), one cycles through answers.
    space = {
        "name": "cli",
        "generate": {
            "models": [
                {"backend": "scripted", "name": "four", "outputs": ["#### 4"]},
                {"backend": "scripted", "name": "many", "outputs": ["#### 0", "#### 2", "#### 4"]},
            ],
            "n": [1, 3],
            "temperature": 0.5,
            "max_tokens": 8,
        },
        "layers": [{"type": "vote"}],
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def test_search_command_writes_table_page_and_configs(tmp_path: Path, data: Path) -> None:
    space = scripted_space(tmp_path)
    db, out = tmp_path / "r.db", tmp_path / "out"
    args = ["search", str(space), "--task", "jsonl", "--data", str(data), "--db", str(db)]
    args += ["--dev", "4", "--test", "3", "--trials", "5", "--algorithm", "grid", "--out", str(out)]
    result = cli(*args)
    assert "trial   0" in result.output  # the live lines, with each trial's decisions
    assert "n=" in result.output and "test  trial" in result.output
    assert "calls were served from stored generations" in result.output
    assert db.with_name("r.db.search.sqlite").exists()
    page = (out / "search.html").read_text()
    assert "<svg" in page and "Pareto" in page
    configs = sorted(out.glob("*.yaml"))
    assert configs
    for path in configs:
        # Each written system is an ordinary config: it loads and runs as it is.
        System.load(path).close()
        cli(
            "run",
            "--system",
            str(path),
            "--task",
            "jsonl",
            "--data",
            str(data),
            "--limit",
            "2",
            "--db",
            str(tmp_path / "again.db"),
            "--no-baseline",
        )
    # Rerunning resumes: no new trial (the budget is spent) and the same front, as JSON.
    again = json.loads(cli(*args, "--json").output)
    assert len(again["trials"]) == 5  # the budget, spent in the first call
    assert again["front"] and again["tests"]
    assert {r["kind"] for r in again["tests"]} == {"system", "greedy", "vote"}


def test_search_command_names_a_bad_flag_and_a_bad_space(tmp_path: Path, data: Path) -> None:
    space = scripted_space(tmp_path)
    base = [
        "search",
        str(space),
        "--task",
        "jsonl",
        "--data",
        str(data),
        "--db",
        str(tmp_path / "r.db"),
    ]
    result = cli(*base, "--trials", "0", code=2)
    assert "--trials" in result.output
    result = cli(*base, "--algorithm", "annealing", code=2)
    assert "--algorithm" in result.output
    result = cli(*base, "--dev", "8", "--test", "8", code=2)
    assert "--dev 8 + --test 8" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("generate: {models: [m], n: {low: 3, high: 1}}\n")
    result = cli("search", str(bad), "--task", "jsonl", "--data", str(data), code=2)
    assert "generate.n" in result.output


def test_the_shipped_spaces_load() -> None:
    for path in CONFIGS.glob("*.yaml"):
        SearchSpace.load(path)


@pytest.mark.embedded
def test_a_search_on_the_embedded_model(tmp_path: Path, data: Path) -> None:
    space = {
        "name": "tiny",
        "generate": {"models": ["smollm2-135m"], "n": [1, 2], "temperature": 0.7, "max_tokens": 12},
        "layers": [{"type": "vote"}],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(space))
    out = tmp_path / "out"
    args = [
        "search",
        str(path),
        "--task",
        "jsonl",
        "--data",
        str(data),
        "--db",
        str(tmp_path / "r.db"),
    ]
    args += ["--dev", "3", "--test", "2", "--trials", "3", "--algorithm", "grid", "--top", "1"]
    report = json.loads(cli(*args, "--out", str(out), "--json").output)
    trials = report["trials"]
    assert len(trials) == 3 and all(t["state"] == "complete" for t in trials)
    assert all(t["problems"] == 3 and t["tokens_per_query"] > 0 for t in trials)
    # n=2 with and without a vote ask the engine the same thing: the second is served stored.
    assert report["reused_calls"] >= 3
    assert [r["kind"] for r in report["tests"]] == ["system", "greedy", "vote"]
    assert all(r["problems"] == 2 for r in report["tests"])
    assert list(out.glob("*.yaml")) and (out / "search.html").exists()
