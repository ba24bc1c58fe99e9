"""The ``adaptive_vote`` component: in a system config (scripted backend) and through `ponder serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from ponder.backends import ScriptedBackend
from ponder.errors import UserError
from ponder.records import Prompt, SamplingParams
from ponder.systems import System, SystemResult
from tests._serve import serve


def _run(layer: dict[str, Any], backend: ScriptedBackend) -> SystemResult:
    with System.from_dict({"layers": [layer]}, default_backend=backend) as system:
        return system.run("What is 6*7?")


def _stream(*answers: str) -> ScriptedBackend:
    """Sample i of the whole run (across rounds) answers answers[i] (cycling)."""
    count = {"i": 0}

    def fn(_prompt: Prompt, _i: int, _params: SamplingParams) -> str:
        value = answers[count["i"] % len(answers)]
        count["i"] += 1
        return value if value.startswith("no") else f"So #### {value}"

    return ScriptedBackend(fn=fn)


def test_a_decided_query_stops_after_the_first_round() -> None:
    backend = _stream("42")
    result = _run({"type": "adaptive_vote", "max_samples": 16}, backend)
    assert [n for _, n, _ in backend.calls] == [4]  # one request of one round
    assert result.extracted == "42" and len(result.candidates) == 4
    assert result.candidates[0].scores == {"adaptive_vote": 1.0}
    notes = [n for e in result.trace.events for n in e.notes]
    assert any("stopped after 4 samples in 1 rounds (rule)" in n for n in notes)


def test_a_split_query_runs_to_the_maximum_and_keeps_the_leader() -> None:
    backend = _stream("1", "2", "1", "2", "1", "no answer")
    result = _run(
        {"type": "adaptive_vote", "rule": "margin", "params": {"votes": 3}, "max_samples": 10},
        backend,
    )
    # Rounds of 4, 4, then the last 2 up to the maximum; each round one request.
    assert [n for _, n, _ in backend.calls] == [4, 4, 2]
    assert result.extracted == "1"
    # Samples 0..9 answer 1,2,1,2,1,-,1,2,1,2: five 1s, four 2s, one without an answer.
    assert len(result.candidates) == 5
    assert result.candidates[0].scores["adaptive_vote"] == pytest.approx(5 / 9)
    # Every sample drawn is in the trace, also those the vote dropped.
    outputs = [o for e in result.trace.events for c in e.calls for o in c.outputs]
    assert len(outputs) == 10


def test_keep_all_groups_by_size_and_unanswered_last() -> None:
    backend = _stream("2", "no answer", "1", "1")
    result = _run(
        {"type": "adaptive_vote", "rule": "fixed", "max_samples": 4, "keep": "all"}, backend
    )
    assert [c.answer for c in result.candidates] == ["1", "1", "2", None]


def test_seeds_differ_per_round_and_are_reproducible() -> None:
    def seeds() -> list[int | None]:
        backend = _stream("1", "2")
        _run({"type": "adaptive_vote", "rule": "fixed", "max_samples": 8}, backend)
        return [p.seed for _, _, p in backend.calls]

    first = seeds()
    assert len(set(first)) == 2 and seeds() == first


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        ({"rule": "bta"}, "did you mean 'beta'"),
        ({"params": {"confidence": 2}}, "confidence"),
        ({"rule": "margin", "params": {"min_samples": 8}, "max_samples": 6}, "below the minimum"),
        ({"round_size": 0}, "round_size"),
    ],
)
def test_bad_configs_name_the_field(layer: dict[str, Any], match: str) -> None:
    with pytest.raises(UserError, match=match):
        System.from_dict({"layers": [{"type": "adaptive_vote", **layer}]})


ADAPTIVE = """
name: adaptive
description: sample in rounds of 4 until the Beta rule is sure, at most 8
layers:
  - type: adaptive_vote
    rule: beta
    max_samples: 8
    max_tokens: 20
"""


def test_adaptive_vote_through_ponder_serve(tmp_path: Path) -> None:
    (tmp_path / "adaptive.yaml").write_text(ADAPTIVE)
    sure = json.dumps({"backend": "scripted", "name": "sure", "outputs": ["#### 4"]})
    split = json.dumps({"backend": "scripted", "name": "split", "outputs": ["#### 4", "#### 5"]})
    args = ["--model", sure, "--model", split, "--system", str(tmp_path / "adaptive.yaml"),
            "--db", str(tmp_path / "served.db")]  # fmt: skip
    with serve(args) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        ask: list[Any] = [{"role": "user", "content": "What is 2 + 2?"}]
        decided = client.chat.completions.create(model="adaptive:sure", messages=ask)
        assert decided.choices[0].message.content == "#### 4"
        assert decided.ponder["calls"] == 1  # type: ignore[attr-defined]
        assert decided.usage is not None and decided.usage.completion_tokens == 4 * 2
        undecided = client.chat.completions.create(model="adaptive:split", messages=ask)
        assert undecided.ponder["calls"] == 2  # type: ignore[attr-defined]
        assert undecided.usage is not None and undecided.usage.completion_tokens == 8 * 2
