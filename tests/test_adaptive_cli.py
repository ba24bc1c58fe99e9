"""`ponder sample --adaptive`, `ponder show` and `ponder report` on adaptive runs.

Logic runs in-process on a scripted backend registered as a plugin kind (answer streams per
problem and sample index, as in test_adaptive_online.py); one end-to-end test runs the real
`ponder` entry point on the real embedded model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from ponder.backends import ScriptedBackend, register_backend
from ponder.cli import app
from ponder.records import SamplingParams
from tests.test_adaptive_online import DECIDED, SPLIT, streams_backend

STREAMS = {"demo": {"q0": DECIDED, "q1": SPLIT}}


class StreamsConfig(BaseModel):
    kind: Literal["test-streams"] = "test-streams"
    model: str
    max_batch: int = 16


@register_backend("test-streams", StreamsConfig)
def _streams(config: StreamsConfig) -> ScriptedBackend:
    # `ponder sample` uses base seed 0 unless told otherwise.
    return streams_backend(STREAMS[config.model], SamplingParams(seed=0), 64)


def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "qs.jsonl"
    rows = [
        {"id": "q0", "question": "What is 0 + 0?", "answer": "0"},
        {"id": "q1", "question": "What is 1 + 1?", "answer": "2"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ponder(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture
def common(tmp_path: Path) -> list[str]:
    return [
        "--task", "jsonl", "--data", str(data_file(tmp_path)), "--id-field", "id",
        "--backend", "test-streams", "--model", "demo", "--db", str(tmp_path / "c.db"),
    ]  # fmt: skip


def test_sample_adaptive_json_stops_and_summary(common: list[str]) -> None:
    code, out = ponder("sample", *common, "--adaptive", "beta", "--n", "16", "--json")
    assert code == 0, out
    data = json.loads(out)
    adaptive = data["adaptive"]
    assert adaptive["rule"] == "beta(min_samples=4, confidence=0.95) round=4 max=16"
    assert adaptive["reasons"] == {"rule": 1, "max": 1}
    stops = {s["problem_id"]: s for s in adaptive["stops"]}
    assert (stops["q0"]["samples"], stops["q0"]["reason"], stops["q0"]["rounds"]) == (4, "rule", 1)
    assert (stops["q1"]["samples"], stops["q1"]["reason"], stops["q1"]["rounds"]) == (16, "max", 4)
    assert stops["q0"]["vote_correct"] is True and stops["q1"]["vote_correct"] is True
    assert adaptive["mean_samples"] == 10 and adaptive["vote_accuracy"] == 1.0
    assert adaptive["completion_tokens"] == 2 * 20  # two words per sample
    assert data["sampling"]["drawn"] == 20
    assert data["verification"]["checked"] == 0  # verified as they came
    assert data["summary"]["verified"] == 20

    # The same command again draws nothing and reports the same stops.
    code, again = ponder("sample", *common, "--adaptive", "beta", "--n", "16", "--json")
    assert code == 0, again
    assert json.loads(again)["sampling"]["drawn"] == 0
    assert json.loads(again)["adaptive"]["stops"] == adaptive["stops"]

    # Text output: the usual summary, then the adaptive line.
    code, text = ponder("sample", *common, "--adaptive", "beta", "--n", "16")
    assert code == 0, text
    assert "coverage@k" in text
    said = " ".join(text.split())
    assert "problems stopped by rule 1, max 1, budget 0, hopeless 0" in said
    assert "10.00 samples per problem on average, 40 completion tokens" in said
    assert "vote accuracy 1.000" in said


def test_adaptive_params_round_size_and_budget(common: list[str]) -> None:
    code, out = ponder(
        "sample", *common, "--adaptive", "beta", "--adaptive-param", "confidence=0.999",
        "--adaptive-param", "min_samples=6", "--round-size", "3", "--n", "12", "--json",
    )  # fmt: skip
    assert code == 0, out
    adaptive = json.loads(out)["adaptive"]
    assert adaptive["rule"] == "beta(min_samples=6, confidence=0.999) round=3 max=12"
    # 1 - 0.5^(k+1) >= 0.999 first at k = 9 (a checkpoint: 3, 6, 9, 12)
    assert [s["samples"] for s in adaptive["stops"]] == [9, 12]

    code, out = ponder(
        "sample", *common, "--adaptive", "margin", "--n", "32", "--budget", "20samples", "--json"
    )
    assert code == 0, out
    adaptive = json.loads(out)["adaptive"]
    assert adaptive["budget"] == "20samples"
    # q0 stops at 4 by its rule (4 votes ahead); q1 gets the rest: 16 samples, then budget.
    assert [(s["samples"], s["reason"]) for s in adaptive["stops"]] == [(4, "rule"), (16, "budget")]


def test_adaptive_errors_are_reported_before_sampling(common: list[str], tmp_path: Path) -> None:
    db = tmp_path / "c.db"

    def fails(*args: str) -> str:
        code, out = ponder("sample", *common, *args)
        assert code == 2, out
        return " ".join(out.split())

    said = fails("--adaptive", "beta", "--n", "2")
    assert "below the minimum of stop rule 'beta' (4)" in said and "raise --n" in said
    said = fails("--adaptive", "nope")
    assert "nope" in said and "beta" in said and "dirichlet" in said  # the valid names
    said = fails("--adaptive", "beta", "--adaptive-param", "confidence=2")
    assert "confidence" in said and "less than 1" in said
    said = fails("--adaptive", "beta", "--adaptive-param", "bogus=1")
    assert "bogus" in said
    said = fails("--adaptive", "beta", "--adaptive-param", "confidence")
    assert "expects K=V" in said
    said = fails("--adaptive", "beta", "--budget", "lots")
    assert "invalid --budget 'lots'" in said and "2000samples or 300000tokens" in said
    said = fails("--adaptive", "beta", "--budget", "7samples")
    assert "needs at least 8 samples" in said
    said = fails("--budget", "100samples")
    assert "--budget only apply to adaptive sampling" in said
    said = fails("--adaptive", "beta", "--no-verify")
    assert "--adaptive needs --verify" in said
    assert json.loads(ponder("runs", "--db", str(db), "--json")[1]) == []  # no run was made


def test_show_and_report_list_the_stops_beside_all_samples(
    common: list[str], tmp_path: Path
) -> None:
    db = str(tmp_path / "c.db")
    code, out = ponder("sample", *common, "--adaptive", "beta", "--n", "16", "--json")
    assert code == 0, out
    run_id = json.loads(out)["sampling"]["run_id"]

    code, out = ponder("show", run_id, "--db", db, "--json")
    assert code == 0, out
    stops = json.loads(out)["stops"]
    assert [(s["problem_id"], s["samples"], s["rounds"], s["reason"]) for s in stops] == [
        ("q0", 4, 1, "rule"),
        ("q1", 16, 4, "max"),
    ]
    code, text = ponder("show", run_id, "--db", db)
    assert "adaptive stops: beta(min_samples=4, confidence=0.95) round=4 max=16" in text

    code, out = ponder("report", run_id, "--db", db, "--json", "--bootstrap", "0")
    assert code == 0, out
    (report,) = json.loads(out)["runs"]
    (section,) = report["adaptive_stops"]
    assert section["reasons"] == {"rule": 1, "max": 1}
    assert section["adaptive"] == {
        "problems": 2, "mean_samples": 10.0, "min_samples": 4, "max_samples": 16,
        "completion_tokens": 40, "vote_accuracy": 1.0,
    }  # fmt: skip
    # Problems with different numbers of samples: the report says so, pass@k stops at the least.
    assert report["k"][-1] == 4
    assert any("curves stop at k=4" in n for n in report["notes"])

    # Filled up to a fixed N with the same spec: the comparison is in one run.
    code, out = ponder("sample", *common, "--n", "16", "--json")
    assert code == 0, out
    assert json.loads(out)["sampling"]["drawn"] == 12 and "adaptive" not in json.loads(out)
    code, out = ponder("report", run_id, "--db", db, "--json", "--bootstrap", "0")
    (report,) = json.loads(out)["runs"]
    (section,) = report["adaptive_stops"]
    assert section["adaptive"]["mean_samples"] == 10.0
    assert section["all_samples"] == {
        "problems": 2, "mean_samples": 16.0, "min_samples": 16, "max_samples": 16,
        "completion_tokens": 64, "vote_accuracy": 1.0,
    }  # fmt: skip
    assert report["k"][-1] == 16

    html = tmp_path / "r.html"
    code, text = ponder("report", run_id, "--db", db, "--html", str(html), "--bootstrap", "0")
    assert code == 0, text
    said = " ".join(text.split())
    assert "adaptive stops: beta(min_samples=4, confidence=0.95) round=4 max=16" in said
    assert "all stored samples" in said
    page = html.read_text()
    assert "<h2>Adaptive stops</h2>" in page and "all stored samples" in page


@pytest.mark.embedded
def test_sample_adaptive_end_to_end_on_the_embedded_model(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    ponder_bin = str(Path(sys.executable).parent / "ponder")
    args = [
        ponder_bin, "sample", "--task", "gsm8k", "--limit", "2", "--n", "8", "--adaptive",
        "beta", "--model", "smollm2-135m", "--max-tokens", "32", "--temperature", "0.8",
        "--db", str(db), "--json",
    ]  # fmt: skip
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"}
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    stops = data["adaptive"]["stops"]
    assert len(stops) == 2
    for s in stops:
        assert 4 <= s["samples"] <= 8 and s["reason"] in ("rule", "max")
    assert data["sampling"]["drawn"] == sum(s["samples"] for s in stops)
    assert data["summary"]["verified"] == data["sampling"]["drawn"]
    shown = subprocess.run(
        [ponder_bin, "show", data["sampling"]["run_id"], "--db", str(db), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert [s["samples"] for s in json.loads(shown.stdout)["stops"]] == [
        s["samples"] for s in stops
    ]
