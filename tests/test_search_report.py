"""A search's output (issue 15, item 5): the trials and test tables, the HTML page, the JSON, and
the systems of the front written as config files that `ponder run` and `ponder serve` load."""

from __future__ import annotations

import html
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from typer.testing import CliRunner

import ponder.search as search
from ponder.cli import app
from ponder.search import SearchResult, SearchSpace, TrialResult
from ponder.systems import System, SystemConfig, load_config

SPACE = {
    "name": "tiny",
    "generate": {
        "models": [
            {"backend": "scripted", "name": "a", "outputs": ["#### 2"]},
            {"backend": "scripted", "name": "b", "outputs": ["#### 3", "#### 2"]},
        ],
        "n": [1, 3],
        "temperature": 0.7,
        "max_tokens": 20,
    },
    "layers": [{"type": "vote"}],
}
EVIL = "<script>alert('x')</script> & more"
# number -> (state, accuracy, tokens per query, note)
OUTCOMES: dict[int, tuple[Any, float | None, float | None, str]] = {
    0: ("complete", 0.5, 10.0, ""),
    1: ("complete", 0.75, 30.0, ""),
    2: ("pruned", 0.25, 12.0, "bound dominated by the front after 2 problems"),
    3: ("infeasible", 1.0, 400.0, EVIL),
    4: ("complete", 0.75, 30.0, ""),
    5: ("failed", None, None, "engine died"),
    6: ("complete", 0.5, 35.0, ""),
}


def result() -> SearchResult:
    space = SearchSpace.from_data(SPACE)
    proposals = list(search.grid(space))
    trials = []
    for number, (state, acc, tokens, note) in OUTCOMES.items():
        p = proposals[number]
        trials.append(
            TrialResult(
                number=number,
                state=state,
                params=p.params,
                config=p.config,
                run_id=f"run{number:09d}abc" if acc is not None else None,
                problems=4 if state != "pruned" else 2,
                correct=round((acc or 0) * (4 if state != "pruned" else 2)),
                accuracy=acc,
                tokens_per_query=tokens,
                calls_per_query=None if acc is None else 1.0,
                calls=8,
                reused_calls=3,
                note=note,
            )
        )
    tests = [
        search.TestResult(
            "trial 1", "system", 1, "aaaa1111bbbb2222", 10, 7, 0.7, (0.4, 0.9), 31, 1
        ),
        search.TestResult("greedy", "greedy", None, "cccc", 10, 3, 0.3, (0.1, 0.6), 13, 1),
        search.TestResult("vote@2", "vote", None, "dddd", 10, 6, 0.6, (0.3, 0.9), 11, 1),
    ]
    return SearchResult(
        study="search-tiny-0123456789ab",
        storage="/tmp/x.search.sqlite",
        algorithm="tpe",
        space=space.model_dump(mode="json"),
        task={"name": "jsonl", "path": "q<1>.jsonl"},
        dev_ids=["p1", "p2", "p3", "p4"],
        test_ids=[f"t{i}" for i in range(10)],
        trials=trials,
        front=search.front(trials),
        tests=tests,
    )


def text_of(renderable: Any) -> str:
    console = Console(record=True, width=250, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_decisions_in_short_form() -> None:
    params = {
        "generate.model": "qwen2.5-coder-0.5b",
        "generate.n": 8,
        "generate.temperature": 0.7,
        "layers[0].critique.use": False,
        "layers[1].rank.use": True,
        "layers[1].rank.top_k": 2,
        "layers[2].fuse.use": True,
        "layers[3].vote.tie_break": "random",
    }
    assert search.decisions(params) == (
        "qwen2.5-coder-0.5b n=8 T=0.7 + rank(top_k=2) + fuse + vote(tie_break=random)"
    )
    assert search.decisions({}) == "–"
    spec = json.dumps({"backend": "openai", "model": "gpt-x", "base_url": "http://h"})
    assert search.decisions({"generate.model": spec, "generate.n": 2}) == "openai:gpt-x n=2"


def test_trials_table_marks_the_front_and_rows_are_reusable_live() -> None:
    r = result()
    assert r.front == [1, 4, 0]
    shown = text_of(search.trials_table(r))
    lines = {line.split("│")[1].strip(): line for line in shown.splitlines() if "│" in line}
    assert set(lines) >= {"0 *", "1 *", "4 *", "2", "3", "5", "6"}
    assert "pruned" in lines["2"] and "0.250" in lines["2"] and "3/8" in lines["2"]
    assert "engine died" in lines["5"]
    assert "scripted:a n=1 T=0.7 + vote" in lines["0 *"]
    assert "scripted:b n=3 T=0.7 + vote" in lines["6"]
    # The CLI's live table: the same columns, a row added as each trial ends.
    live = search.new_trials_table("live")
    for t in r.trials[:3]:
        live.add_row(*search.trial_row(t))
    assert live.row_count == 3
    assert [c.header for c in live.columns] == list(search.TRIAL_COLUMNS)
    assert len(search.trial_row(r.trials[0])) == len(search.TRIAL_COLUMNS)
    assert search.trial_row(r.trials[1], on_front=True)[0] == "1 *"


def test_test_table_shows_intervals() -> None:
    shown = text_of(search.test_table(result()))
    assert "[0.400, 0.900]" in shown and "vote@2" in shown and "3/10" in shown
    assert "aaaa1111bbbb" in shown and "aaaa1111bbbb2" not in shown


def test_html_page_has_the_scatter_the_configs_and_the_tests_escaped() -> None:
    r = result()
    page = search.render_search_html(r)
    assert page.startswith("<!doctype html>") and page.count("<svg") == 1
    assert "Pareto front" in page and "pruned / infeasible" in page
    assert ">1, 4<" in page  # trials 1 and 4 share a point, and a label
    for t in r.trials:  # each trial's config, as YAML, escaped
        assert html.escape(search.config_yaml(t.config)) in page
    assert "[0.400, 0.900]" in page and "vote@2" in page
    assert html.escape(EVIL) in page and "<script" not in page
    assert "q&lt;1&gt;.jsonl" in page
    assert "56 model calls, 21 of them" in page
    # No complete trial at all: still a page (no front, nothing tested).
    empty = replace(r, trials=[r.trial(5)], front=[], tests=[])
    assert "No test evaluation" in search.render_search_html(empty)


def test_json_is_plain_data() -> None:
    r = result()
    data = json.loads(json.dumps(search.result_json(r), allow_nan=False))
    assert data["front"] == [1, 4, 0]
    assert data["tests"][0]["ci"] == [0.4, 0.9]
    assert data["calls"] == 7 * 8 and data["reused_calls"] == 7 * 3
    assert data["trials"][5]["accuracy"] is None
    assert data["trials"][3]["note"] == EVIL


def test_written_configs_load_as_they_are_and_run(tmp_path: Path) -> None:
    r = result()
    paths = search.write_configs(r, tmp_path / "best")
    assert sorted(paths) == [0, 1, 4]
    for number, path in paths.items():
        assert path.name == f"search-tiny-0123456789ab-trial{number}.yaml"
        config = r.trial(number).config
        expected = SystemConfig.from_data(config)
        assert System.load(path).config == expected  # `ponder run`
        assert load_config(path) == expected  # `ponder serve`
        assert yaml.safe_load(path.read_text()) == config
        assert path.read_text().startswith("# Found by `ponder search`")
    only = search.write_configs(r, tmp_path / "one", trials=[6])
    assert list(only) == [6] and only[6].exists()
    # `ponder run` uses a written file as it is (trial 0: scripted model a, which says 2).
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "What is 1+1?", "answer": "2"}) + "\n")
    args = ["run", "--system", str(paths[0]), "--task", "jsonl", "--data", str(data)]
    out = CliRunner().invoke(app, [*args, "--db", str(tmp_path / "r.db"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["system"]["accuracy"] == 1.0
