"""Generation reuse across systems (a search's trials) and backends shared by several systems.

Logic on the scripted backend (its call log shows every request), persistence on a real SQLite
store, and one check on the real embedded engine: its decoded-token counter does not move when a
system is run again with a generation cache.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from rich.console import Console
from typer.testing import CliRunner

from ponder.backends import Backend, ScriptedBackend, ScriptedConfig
from ponder.cli import app
from ponder.records import Completion, Generation, Message, Prompt, SamplingParams
from ponder.runs import system_run, system_spec
from ponder.store import SCHEMA_VERSION, Store
from ponder.systems import (
    BackendPool,
    CallRecord,
    GenerationCache,
    ModelSpec,
    Reuse,
    StoreGenerationCache,
    System,
    SystemResult,
    aclose_backends,
    generation_key,
    trace_tree,
)
from ponder.tasks import get_task
from tests.test_systems_components import CRITIQUE, FUSE, RANK, last_text

QUERY = "What is 6*7?"
VOTE = {"name": "vote", "layers": [{"type": "generate", "n": 4}, {"type": "vote"}]}
PIPELINE = {
    "name": "pipeline",
    "layers": [
        {"type": "generate", "n": 4},
        {"type": "critique"},
        {"type": "rank", "top_k": 2},
        {"type": "fuse"},
    ],
}
REVIEWS = "\n".join(f"[{i}]\nStrengths: fine\nWeaknesses: none" for i in (1, 2, 3, 4))


def seeded(name: str = "scripted", **kwargs: Any) -> ScriptedBackend:
    """A backend whose completion i of a request with seed s says s + i (the backends' seed
    convention), so a completion is fixed by its seed; critique, rank and fuse prompts get
    well-formed replies."""

    def fn(prompt: Prompt, i: int, params: SamplingParams) -> str:
        text = last_text(prompt)
        if CRITIQUE in text:
            return REVIEWS
        if RANK in text:
            return "Ranking: [2] > [1] > [3] > [4]"
        if FUSE in text:
            return f"fused from seed {params.seed + i} #### 42"
        return f"drawn with seed {params.seed + i} #### {(params.seed + i) % 3}"

    return ScriptedBackend(fn=fn, name=name, **kwargs)


def run(
    config: dict[str, Any],
    backend: ScriptedBackend,
    store: Store | None,
    query: str = QUERY,
    **kwargs: Any,
) -> SystemResult:
    cache = StoreGenerationCache(store) if store is not None else None
    with System.from_dict(
        config, default_backend=backend, generation_cache=cache, **kwargs
    ) as system:
        return system.run(query)


def calls(result: SystemResult) -> list[CallRecord]:
    return [c for e in result.trace.events for c in e.calls]


# ----- reuse on the scripted backend -------------------------------------------------------------


def test_a_second_identical_run_asks_the_backend_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "g.db") as store:
        first_backend, second_backend = seeded(), seeded()
        first = run(VOTE, first_backend, store)
        second = run(VOTE, second_backend, store)
    assert [n for _, n, _ in first_backend.calls] == [4]
    assert second_backend.calls == []
    assert second.answer == first.answer and second.candidates == first.candidates
    (drawn,), (reused,) = calls(first), calls(second)
    assert (drawn.reused, reused.reused) == (0, 4)
    assert reused.outputs == drawn.outputs and reused.finish_reasons == drawn.finish_reasons
    # The cost is the system's cost without a cache: reused completions count as drawn.
    assert (reused.prompt_tokens, reused.completion_tokens) == (
        drawn.prompt_tokens,
        drawn.completion_tokens,
    )
    assert reused.prompt_tokens > 0 and reused.completion_tokens > 0
    assert second.usage.model_dump(exclude={"wall_s"}) == first.usage.model_dump(exclude={"wall_s"})


def test_more_samples_draw_only_the_missing_ones_in_one_request(tmp_path: Path) -> None:
    more = {**VOTE, "layers": [{"type": "generate", "n": 8}, {"type": "vote"}]}
    uncached = run(more, seeded(), None)  # what n=8 gives without any cache
    with Store(tmp_path / "g.db") as store:
        four = seeded()
        run(VOTE, four, store)
        eight = seeded()
        result = run(more, eight, store)
    ((_, n4, p4),) = four.calls
    ((_, n8, p8),) = eight.calls
    assert (n4, n8) == (4, 4)
    assert p8.seed == p4.seed + 4  # completions 4..7 of the seed-s request
    assert p8.model_copy(update={"seed": p4.seed}) == p4
    (call,) = calls(result)
    assert (call.n, call.reused) == (8, 4)
    assert result.trace.reuse == Reuse(calls=0, completions=4)
    # The same completions, in the same order, as one request for 8.
    assert call.outputs == calls(uncached)[0].outputs
    assert call.completion_tokens == calls(uncached)[0].completion_tokens
    assert result.answer == uncached.answer


def test_fewer_samples_are_served_from_the_stored_ones(tmp_path: Path) -> None:
    two = {**VOTE, "layers": [{"type": "generate", "n": 2}, {"type": "vote"}]}
    with Store(tmp_path / "g.db") as store:
        first = run(VOTE, seeded(), store)
        backend = seeded()
        result = run(two, backend, store)
    assert backend.calls == []
    (call,) = calls(result)
    assert (call.n, call.reused) == (2, 2) and call.outputs == calls(first)[0].outputs[:2]


@pytest.mark.parametrize(
    ("change", "kwargs"),
    [
        ("temperature", {"config": {"layers": [{"type": "generate", "n": 4, "temperature": 0.3}]}}),
        ("max_tokens", {"config": {"layers": [{"type": "generate", "n": 4, "max_tokens": 99}]}}),
        ("system seed", {"config": {"seed": 7, "layers": [{"type": "generate", "n": 4}]}}),
        ("messages", {"query": "What is 6*8?"}),
        ("model identity", {"backend": "other"}),
        (
            "layer",
            {"config": {"layers": [{"type": "generate", "n": 1}, {"type": "generate", "n": 4}]}},
        ),
    ],
)
def test_a_different_request_is_a_miss(tmp_path: Path, change: str, kwargs: dict[str, Any]) -> None:
    base: dict[str, Any] = {"layers": [{"type": "generate", "n": 4}]}
    with Store(tmp_path / "g.db") as store:
        run(base, seeded(), store)
        backend = seeded(name=kwargs.get("backend", "scripted"))
        result = run(kwargs.get("config", base), backend, store, query=kwargs.get("query", QUERY))
        # ... and the same again is a hit.
        again = seeded(name=kwargs.get("backend", "scripted"))
        run(kwargs.get("config", base), again, store, query=kwargs.get("query", QUERY))
    # (In the "layer" case the layer-0 call for 1 is the first call of the base system: reused.)
    assert [n for _, n, _ in backend.calls] == [4], change
    assert [c.reused for c in calls(result) if c.n == 4] == [0]
    assert again.calls == []


def test_stored_generations_survive_reopening_the_store(tmp_path: Path) -> None:
    with Store(tmp_path / "g.db") as store:
        first = run(VOTE, seeded(), store)
    path = tmp_path / "vote.yaml"
    path.write_text("name: vote\nlayers:\n  - {type: generate, n: 4}\n  - {type: vote}\n")
    with Store(tmp_path / "g.db") as store:
        backend = seeded()
        cache = StoreGenerationCache(store)
        with System.load(path, default_backend=backend, generation_cache=cache) as system:
            second = system.run(QUERY)
    assert backend.calls == [] and second.answer == first.answer
    assert calls(second)[0].outputs == calls(first)[0].outputs


def test_every_model_call_is_reused_not_only_generate(tmp_path: Path) -> None:
    with Store(tmp_path / "g.db") as store:
        vote = seeded()
        run(VOTE, vote, store)
        # Same generate layer, then critique, rank, fuse: only those three are drawn.
        composed = seeded()
        first = run(PIPELINE, composed, store)
        # The same composed system again: nothing is drawn, every call is marked reused.
        again = seeded()
        second = run(PIPELINE, again, store)
    assert [n for _, n, _ in vote.calls] == [4]
    assert [(c.purpose, c.reused) for c in calls(first)] == [
        ("generate", 4),
        ("critique", 0),
        ("rank", 0),
        ("fuse", 0),
    ]
    assert len(composed.calls) == 3
    assert again.calls == []
    assert [c.reused for c in calls(second)] == [c.n for c in calls(second)] == [4, 1, 1, 1]
    assert second.trace.reuse == Reuse(calls=4, completions=7)
    assert first.trace.reuse == Reuse(calls=1, completions=4)
    assert second.answer == first.answer and second.answer.startswith("fused from seed")
    assert second.usage.model_dump(exclude={"wall_s"}) == first.usage.model_dump(exclude={"wall_s"})


def test_the_trace_tree_marks_reused_calls(tmp_path: Path) -> None:
    more = {**VOTE, "layers": [{"type": "generate", "n": 8}, {"type": "vote"}]}
    with Store(tmp_path / "g.db") as store:
        first = run(VOTE, seeded(), store)
        partly = run(more, seeded(), store)
        fully = run(VOTE, seeded(), store)

    def shown(result: SystemResult) -> str:
        console = Console(width=200, record=True)
        console.print(trace_tree(result.trace))
        return console.export_text()

    assert "reused" not in shown(first)
    assert "reused 4/8" in shown(partly)
    assert "reused 4/4" in shown(fully)


def test_traces_stored_before_reuse_still_load() -> None:
    data = {
        "purpose": "generate",
        "model": "scripted:x",
        "prompt": "q",
        "n": 2,
        "params": SamplingParams().model_dump(mode="json"),
        "outputs": ["a", "b"],
    }
    assert CallRecord.model_validate(data).reused == 0


def test_concurrent_identical_calls_in_one_process_draw_once(tmp_path: Path) -> None:
    """Two queries with the same messages ask the same thing at the same time: the key's lock
    makes the second wait and read what the first stored."""
    backend = seeded(delay_s=0.05)
    with Store(tmp_path / "g.db") as store:
        cache = StoreGenerationCache(store)
        with System.from_dict(VOTE, default_backend=backend, generation_cache=cache) as system:
            a, b = system.run_many([QUERY, QUERY], concurrency=2)
    assert [n for _, n, _ in backend.calls] == [4]
    assert sorted(calls(r)[0].reused for r in (a, b)) == [0, 4]
    assert calls(a)[0].outputs == calls(b)[0].outputs


def test_no_cache_draws_every_time() -> None:
    backend = seeded()
    run(VOTE, backend, None)
    run(VOTE, backend, None)
    assert [n for _, n, _ in backend.calls] == [4, 4]


def test_system_runs_of_a_search_reuse_generations_and_ponder_trace_shows_it(
    tmp_path: Path,
) -> None:
    """As a search runs trials: two stored system runs on one task, the same store holding the
    runs and the generations, one backend shared by both systems."""
    data = tmp_path / "q.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"What is {i}+{i}?", "answer": str(2 * i)}) + "\n"
            for i in range(3)
        )
    )
    task = get_task("jsonl", path=data)
    problems = task.problems()
    model = {"backend": "scripted", "choices": ["#### 2", "#### 4", "#### 0"], "name": "m"}
    shared: dict[str, Backend] = {}
    db = tmp_path / "runs.db"
    reports = []
    with Store(db) as store:
        cache = StoreGenerationCache(store)
        for name in ("trial-a", "trial-b"):
            config = {**VOTE, "name": name, "model": model}
            with System.from_dict(config, generation_cache=cache, shared_backends=shared) as system:
                reports.append(asyncio.run(system_run(store, system, task, problems)))
        (backend,) = shared.values()
        assert isinstance(backend, ScriptedBackend)
        # Trial a drew 4 samples per problem; trial b drew nothing.
        assert [n for _, n, _ in backend.calls] == [4, 4, 4]
        a, b = reports
        assert a.run_id != b.run_id and b.answered == 3
        assert (b.calls, b.prompt_tokens, b.completion_tokens) == (
            a.calls,
            a.prompt_tokens,
            a.completion_tokens,
        )
        assert [s.text for s in store.samples(b.run_id)] == [
            s.text for s in store.samples(a.run_id)
        ]
    out = CliRunner().invoke(
        app, ["trace", b.run_id, problems[0].id, "--db", str(db)], env={"COLUMNS": "200"}
    )
    assert out.exit_code == 0, out.output
    assert "reused 4/4" in out.output
    out = CliRunner().invoke(
        app, ["trace", a.run_id, problems[0].id, "--db", str(db)], env={"COLUMNS": "200"}
    )
    assert out.exit_code == 0 and "reused" not in out.output


# ----- the cache and the store ------------------------------------------------------------------


def test_generation_key_covers_model_prompt_and_params() -> None:
    params = SamplingParams(temperature=0.7, seed=3)
    key = generation_key("m", "q", params)
    assert len(key) == 64 and key == generation_key(
        "m", "q", SamplingParams(temperature=0.7, seed=3)
    )
    others = {
        generation_key("m2", "q", params),
        generation_key("m", "q2", params),
        generation_key("m", [Message(role="user", content="q")], params),
        generation_key(
            "m", [Message(role="system", content="s"), Message(role="user", content="q")], params
        ),
        generation_key("m", "q", params.model_copy(update={"seed": 4})),
        generation_key("m", "q", params.model_copy(update={"top_p": 0.9})),
        generation_key("m", "q", params.model_copy(update={"stop": ("\n",)})),
    }
    assert key not in others and len(others) == 7


def test_the_first_process_to_store_an_index_wins(tmp_path: Path) -> None:
    """Two processes that both missed draw the same key; the second's INSERT keeps the first's
    rows, and both serve what is stored."""
    mine = [Completion(text=f"mine {i}", completion_tokens=2) for i in range(3)]
    theirs = [Completion(text=f"theirs {i}", completion_tokens=5) for i in range(2)]
    with Store(tmp_path / "g.db") as store, Store(tmp_path / "g.db") as other:
        assert store.generations("k", 4) == []
        other.add_generations("k", 0, theirs, prompt_tokens=11)
        after = store.add_generations("k", 0, mine, prompt_tokens=7)
        assert [(g.idx, g.text, g.prompt_tokens) for g in after] == [
            (0, "theirs 0", 11),
            (1, "theirs 1", 11),
            (2, "mine 2", 7),
        ]
        assert [g.text for g in store.generations("k", 2)] == ["theirs 0", "theirs 1"]
        cache = StoreGenerationCache(store)
        assert isinstance(cache, GenerationCache)
        got = asyncio.run(cache.get("k", 9))
        assert [c.text for c in got.completions] == ["theirs 0", "theirs 1", "mine 2"]
        assert got.prompt_tokens == 11
        put = asyncio.run(cache.put("k", 3, Generation(completions=mine[:1], prompt_tokens=7)))
        assert [c.text for c in put.completions][-1] == "mine 0" and len(put.completions) == 4
        # A gap (index 5 stored, 4 not) ends what a get serves.
        store.add_generations("k", 5, mine[:1], prompt_tokens=7)
        assert len(asyncio.run(cache.get("k", 9)).completions) == 4
        assert asyncio.run(cache.get("missing", 3)) == Generation(completions=[], prompt_tokens=0)


def test_a_version_3_database_upgrades_to_keep_generations(tmp_path: Path) -> None:
    db = tmp_path / "v3.db"
    with Store(db) as store:
        store.add_generations("old", 0, [Completion(text="x")], prompt_tokens=1)
    # What version 3 wrote: everything but the table migration 4 adds.
    con = sqlite3.connect(db)
    con.execute("DROP TABLE generations")
    con.execute("ALTER TABLE samples DROP COLUMN node")
    con.execute("PRAGMA user_version = 3")
    con.commit()
    con.close()
    assert SCHEMA_VERSION >= 4
    with Store(db) as store:
        assert store.generations("old", 1) == []
        first = run(VOTE, seeded(), store)
        backend = seeded()
        assert run(VOTE, backend, store).answer == first.answer and backend.calls == []
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 4
    con.close()


# ----- backends shared by several systems --------------------------------------------------------


class Counting(ScriptedBackend):
    closed: int = 0

    async def aclose(self) -> None:
        self.closed += 1


def test_pools_with_one_shared_mapping_create_each_backend_once() -> None:
    made: list[Counting] = []

    def factory(config: BaseModel) -> Backend:
        assert isinstance(config, ScriptedConfig)
        backend = Counting(outputs=config.outputs, name=config.name)
        made.append(backend)
        return backend

    spec = ModelSpec.model_validate({"backend": "scripted", "outputs": ["#### 1"]})
    shared: dict[str, Backend] = {}
    a = BackendPool(default_ref=spec, factory=factory, shared=shared)
    b = BackendPool(default_ref=spec, factory=factory, shared=shared)
    assert a.get(None) is b.get(spec) is shared[spec.key]
    assert len(made) == 1 and a.created == [] and b.created == []
    asyncio.run(a.aclose())
    asyncio.run(b.aclose())
    assert made[0].closed == 0  # the mapping's owner closes it
    asyncio.run(aclose_backends(shared.values()))
    assert made[0].closed == 1


def test_systems_share_backends_and_leave_them_open(tmp_path: Path) -> None:
    spec = {"backend": "scripted", "outputs": ["#### 1", "#### 2"], "name": "shared"}
    shared: dict[str, Backend] = {}
    one = System.from_dict({"model": spec, **VOTE}, shared_backends=shared)
    two = System.from_dict({"model": spec, **PIPELINE, "name": "p"}, shared_backends=shared)
    backend = one.pool.get(None)
    assert two.pool.get(None) is backend and list(shared.values()) == [backend]
    closes: list[int] = []

    async def counted() -> None:
        closes.append(1)

    backend.aclose = counted  # type: ignore[method-assign]
    one.run(QUERY)
    one.close()
    two.close()
    assert closes == [] and one.pool.created == [] and two.pool.created == []
    # The run identity is the spec's, as without sharing (not a named backend).
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": QUERY, "answer": "42"}) + "\n")
    task = get_task("jsonl", path=data)
    alone = System.from_dict({"model": spec, **VOTE})
    assert system_spec(one, task).run_id == system_spec(alone, task).run_id
    alone.close()
    asyncio.run(aclose_backends(shared.values()))
    assert closes == [1]


# ----- the real engine ----------------------------------------------------------------------------


@pytest.mark.embedded
def test_reuse_on_the_embedded_engine_decodes_nothing_the_second_time(
    tmp_path: Path, embedded: Any
) -> None:
    config = {
        "name": "tiny",
        "layers": [{"type": "generate", "n": 2, "max_tokens": 12, "temperature": 0.8}],
    }
    with Store(tmp_path / "g.db") as store:
        cache = StoreGenerationCache(store)

        def once() -> SystemResult:
            with System.from_dict(
                config, default_backend=embedded, generation_cache=cache
            ) as system:
                return system.run("Name a colour.")

        before = embedded.metrics()["tokens_predicted_total"]
        first = once()
        middle = embedded.metrics()["tokens_predicted_total"]
        second = once()
        after = embedded.metrics()["tokens_predicted_total"]
    assert middle > before  # the first run decoded its samples
    assert after == middle  # the second decoded nothing
    assert second.answer == first.answer
    assert calls(second)[0].outputs == calls(first)[0].outputs
    assert calls(second)[0].reused == 2 and calls(first)[0].reused == 0
