"""Running systems: the API, concurrency, usage, traces, failures, backend sharing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from rich.console import Console

from ponder.backends import Backend, ScriptedBackend, ScriptedConfig, create_backend
from ponder.errors import BackendError, BackendRequestError, UserError
from ponder.records import Message
from ponder.systems import (
    BackendPool,
    ComponentError,
    ModelSpec,
    System,
    SystemConfig,
    SystemResult,
    Trace,
    trace_tree,
)
from tests.test_systems_components import (
    CRITIQUE,
    FUSE,
    RANK,
    REPAIR,
    answers,
    last_text,
    scripted,
)

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


def pipeline_backend(**kwargs: Any) -> ScriptedBackend:
    return scripted(
        (CRITIQUE, REVIEWS),
        (RANK, "Ranking: [2] > [1] > [3] > [4]"),
        (FUSE, "the fused answer #### 42"),
        default=answers("41", "42", "43", "44"),
        **kwargs,
    )


# ----- API --------------------------------------------------------------------------------------


def test_three_lines_sync() -> None:
    with System.from_dict(PIPELINE, default_backend=pipeline_backend()) as system:
        result = system.run("What is 6*7?")
    assert isinstance(result, SystemResult)
    assert result.answer == "the fused answer #### 42"
    assert result.extracted == "42"
    assert result.answer_id == result.trace.answer_id == "L3.0.1"
    assert result.usage.calls == 4


def test_async_api_matches_sync() -> None:
    async def main() -> SystemResult:
        async with System.from_dict(PIPELINE, default_backend=pipeline_backend()) as system:
            return await system.arun([Message(role="user", content="What is 6*7?")])

    result = asyncio.run(main())
    with System.from_dict(PIPELINE, default_backend=pipeline_backend()) as system:
        sync = system.run("What is 6*7?")
    assert result.answer == sync.answer
    assert [e.calls[0].params.seed for e in result.trace.events] == [
        e.calls[0].params.seed for e in sync.trace.events
    ]


def test_load_run_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "vote.yaml"
    path.write_text("name: v\nlayers:\n  - type: generate\n    n: 3\n  - type: vote\n")
    backend = scripted(default=answers("1", "2", "2"))
    with System.load(path, default_backend=backend) as system:
        assert system.run("q").extracted == "2"


def test_messages_and_dict_messages() -> None:
    backend = scripted()
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "2+2?"},
    ]
    with System.from_dict({"layers": [{"type": "generate"}]}, default_backend=backend) as s:
        s.run(conversation)
        with pytest.raises(UserError, match="last message is from 'assistant'"):
            s.run(conversation[:3])
        with pytest.raises(UserError, match="no messages"):
            s.run([])
    prompt = backend.calls[0][0]
    assert isinstance(prompt, list) and [m.role for m in prompt] == [
        "system",
        "user",
        "assistant",
        "user",
    ]


def test_sync_run_inside_an_event_loop_is_refused() -> None:
    async def main() -> None:
        system = System.from_dict({"layers": [{"type": "generate"}]}, default_backend=scripted())
        with pytest.raises(UserError, match=r"await system\.arun"):
            system.run("q")
        await system.aclose()

    asyncio.run(main())


def test_run_many_keeps_order_and_bounds_concurrency() -> None:
    backend = scripted(default=lambda text, _: f"#### {text.split()[-1]}", delay_s=0.05)
    config = {"layers": [{"type": "generate"}]}
    with System.from_dict(config, default_backend=backend) as system:
        results = system.run_many([f"echo {i}" for i in range(8)], concurrency=3)
        assert [r.extracted for r in results] == [str(i) for i in range(8)]
        assert backend.max_in_flight == 3
        with pytest.raises(UserError, match="2 queries but 1 references"):
            system.run_many(["a", "b"], references=["x"])
        with pytest.raises(UserError, match="concurrency"):
            system.run_many(["a"], concurrency=0)


def test_seeds_are_reproducible_and_per_query() -> None:
    backend = scripted()
    with System.from_dict({"layers": [{"type": "generate", "n": 2}]}, default_backend=backend) as s:
        s.run("a")
        s.run("a")
        s.run("b")
        s.run("a", seed=7)
    seeds = [p.seed for _, _, p in backend.calls]
    assert seeds[0] == seeds[1] and len(set(seeds)) == 3


# ----- concurrency and usage ----------------------------------------------------------------


def test_components_in_a_layer_run_concurrently() -> None:
    backend = scripted(default="#### 1", delay_s=0.2)
    config = {"layers": [[{"type": "generate", "label": f"g{i}"} for i in range(4)]]}
    with System.from_dict(config, default_backend=backend) as system:
        result = system.run("q")
    assert backend.max_in_flight == 4  # all four calls overlapped (no wall-clock bound)
    assert len(result.candidates) == 4
    assert [e.label for e in result.trace.events] == ["g0", "g1", "g2", "g3"]


def test_usage_sums_scripted_token_counts() -> None:
    backend = pipeline_backend()
    with System.from_dict(PIPELINE, default_backend=backend) as system:
        result = system.run("What is 6*7?")
    # The scripted backend counts whitespace-separated words.
    prompt_words = [
        len("\n".join(f"{m.role}: {m.content}" for m in prompt).split())
        for prompt, _, _ in backend.calls
        if not isinstance(prompt, str)
    ]
    events = result.trace.events
    assert [e.usage.calls for e in events] == [1, 1, 1, 1]
    assert [e.usage.prompt_tokens for e in events] == prompt_words
    assert events[0].usage.completion_tokens == 4 * 6  # "I worked it out. #### 41"
    assert events[1].usage.completion_tokens == len(REVIEWS.split())
    assert events[3].usage.completion_tokens == 5
    total = result.usage
    assert total.calls == 4
    assert total.prompt_tokens == sum(prompt_words)
    assert total.completion_tokens == sum(e.usage.completion_tokens for e in events)
    assert total.total_tokens == total.prompt_tokens + total.completion_tokens
    assert list(result.usage_by_component) == [
        "L0.0:generate",
        "L1.0:critique",
        "L2.0:rank",
        "L3.0:fuse",
    ]
    assert result.usage_by_component["L2.0:rank"] == events[2].usage
    assert total.wall_s > 0


def test_usage_counts_repair_calls() -> None:
    backend = scripted((RANK, "?"), (REPAIR, "??"), default=answers("1", "2"))
    config = {"layers": [{"type": "generate", "n": 2}, {"type": "rank"}]}
    with System.from_dict(config, default_backend=backend) as system:
        result = system.run("q")
    assert result.usage_by_component["L1.0:rank"].calls == 3
    assert result.usage_by_component["L1.0:rank"].completion_tokens == 1 + 1 + 1


# ----- traces ---------------------------------------------------------------------------------


def test_trace_records_what_each_component_did() -> None:
    with System.from_dict(PIPELINE, default_backend=pipeline_backend()) as system:
        trace = system.run("What is 6*7?").trace
    generate, critique, rank, fuse = trace.events
    assert generate.produced == ["L0.0.1", "L0.0.2", "L0.0.3", "L0.0.4"]
    assert generate.models == ["scripted:scripted"]
    assert critique.produced == critique.dropped == []
    assert rank.output_ids == ["L0.0.2", "L0.0.1"]
    assert rank.dropped == ["L0.0.3", "L0.0.4"]
    assert fuse.produced == ["L3.0.1"] and fuse.dropped == ["L0.0.2", "L0.0.1"]
    assert [layer.candidate_ids for layer in trace.layers] == [
        ["L0.0.1", "L0.0.2", "L0.0.3", "L0.0.4"],
        ["L0.0.1", "L0.0.2", "L0.0.3", "L0.0.4"],
        ["L0.0.2", "L0.0.1"],
        ["L3.0.1"],
    ]
    call = rank.calls[0]
    assert call.purpose == "rank" and call.params.temperature == 0.2
    assert isinstance(call.prompt, list) and "[4]" in call.prompt[-1].content
    assert call.outputs == ["Ranking: [2] > [1] > [3] > [4]"]
    # Every candidate ever made is kept, dropped ones too, with their latest scores.
    assert [c.id for c in trace.candidates] == [
        "L0.0.1",
        "L0.0.2",
        "L0.0.3",
        "L0.0.4",
        "L3.0.1",
    ]
    assert trace.candidate("L0.0.4") is not None
    assert trace.candidate("L0.0.4").scores == {"rank": 4.0}  # type: ignore[union-attr]
    assert trace.final_ids == ["L3.0.1"] and trace.answer_id == "L3.0.1"


def test_trace_json_round_trip() -> None:
    backend = scripted((RANK, "nope"), (REPAIR, "nope"), default=answers("1", "2"))
    config = {"layers": [{"type": "generate", "n": 2}, {"type": "rank"}]}
    with System.from_dict(config, default_backend=backend) as system:
        trace = system.run("q").trace
    text = trace.model_dump_json()
    again = Trace.model_validate_json(text)
    assert again == trace
    assert again.fallbacks[0].action == "kept the input order"
    assert again.events[1].calls[2].purpose == "rank (repair 2)"
    # The trace carries the config that made it.
    assert SystemConfig.from_data(again.config).describe() == "generate(n=2) -> rank(listwise)"


def test_trace_tree_renders() -> None:
    backend = scripted((RANK, "nope"), (REPAIR, "nope"), default=answers("1", "2"))
    config = {"name": "tree", "layers": [{"type": "generate", "n": 2}, {"type": "rank"}]}
    with System.from_dict(config, default_backend=backend) as system:
        trace = system.run("What is 1+1?").trace
    console = Console(record=True, width=200)
    console.print(trace_tree(trace, show_text=True))
    text = console.export_text()
    assert "tree" in text and "layer 0" in text and "layer 1" in text
    assert "rank (repair 2)" in text
    assert "fallback:" in text and "kept the input order" in text
    assert "answer L0.0.1" in text and "What is 1+1?" in text


# ----- failures -------------------------------------------------------------------------------


def test_backend_error_surfaces_with_context_and_cause() -> None:
    ok = scripted(default="#### 1", name="ok")
    finished: list[int] = []  # the slow model's answers that were made (not cancelled)
    slow = scripted(default=lambda _, i: finished.append(i) or "#### 2", name="slow", delay_s=5)
    bad = ScriptedBackend(fail_with=BackendError("server down after 3 attempts"), name="bad")
    config = {
        "layers": [
            {"type": "generate", "n": 2, "model": "ok"},
            [{"type": "generate", "model": "slow"}, {"type": "judge", "model": "bad"}],
        ]
    }
    with System.from_dict(config, backends={"ok": ok, "slow": slow, "bad": bad}) as system:
        with pytest.raises(ComponentError) as info:
            system.run("q")
        # The failure cancelled the slow component instead of waiting for it: its call never
        # answered, and it is no longer in flight.
        assert finished == [] and slow.in_flight == 0
    error = info.value
    assert (error.layer, error.index, error.component, error.model) == (
        1,
        1,
        "judge",
        "scripted:bad",
    )
    assert "layers[1][1] (judge, model scripted:bad)" in str(error)
    assert "server down after 3 attempts" in str(error)
    assert isinstance(error.__cause__, BackendError)
    trace = error.trace
    assert trace is not None and trace.error is not None
    assert trace.layers[0].candidate_ids == ["L0.0.1", "L0.0.2"]
    failed = trace.layers[1].events[1]
    assert failed.error is not None and failed.calls[0].error is not None


def test_a_rejected_request_stays_a_user_error() -> None:
    bad = ScriptedBackend(fail_with=BackendRequestError("HTTP 400: bad model", status_code=400))
    system = System.from_dict({"layers": [{"type": "generate"}]}, default_backend=bad)
    with system, pytest.raises(BackendRequestError) as info:
        system.run("q")
    assert any("layers[0][0] (generate)" in note for note in info.value.__notes__)


def test_a_failing_plugin_verifier_is_wrapped() -> None:
    def broken(reference: str | None, text: str) -> bool:
        raise ZeroDivisionError("oops")

    config = {"layers": [{"type": "generate"}, {"type": "verify", "verifier": "broken"}]}
    system = System.from_dict(config, default_backend=scripted(), verifiers={"broken": broken})
    with system, pytest.raises(ComponentError, match="verifier 'broken' failed: ZeroDivisionError"):
        system.run("q", reference="1")


# ----- backends: sharing and closing --------------------------------------------------------


class Closing(ScriptedBackend):
    closed: int = 0

    async def aclose(self) -> None:
        self.closed += 1


def test_identical_specs_share_one_backend_and_are_closed() -> None:
    made: list[Closing] = []

    def factory(config: BaseModel) -> Backend:
        assert isinstance(config, ScriptedConfig)
        backend = Closing(outputs=config.outputs, name=config.name)
        made.append(backend)
        return backend

    spec = {"backend": "scripted", "outputs": ["#### 1"]}
    pool = BackendPool(default_ref=ModelSpec.model_validate(spec), factory=factory)
    a = pool.get(None)
    b = pool.get(ModelSpec.model_validate(spec))
    c = pool.get(ModelSpec.model_validate({**spec, "name": "other"}))
    assert a is b and a is not c and len(made) == 2
    asyncio.run(pool.aclose())
    assert [m.closed for m in made] == [1, 1]


def test_a_system_shares_backends_across_components() -> None:
    spec = {"backend": "scripted", "outputs": ["#### 1", "#### 2"], "name": "shared"}
    config = {
        "model": spec,
        "layers": [
            [{"type": "generate", "n": 2}, {"type": "generate", "model": dict(spec)}],
            {"type": "vote"},
        ],
    }
    system = System.from_dict(config)
    result = system.run("q")
    assert len(system.pool.created) == 1
    assert result.trace.events[0].models == result.trace.events[1].models == ["scripted:shared"]
    system.close()
    assert system.pool.created == []


def test_caller_backends_are_not_closed() -> None:
    backend = Closing(outputs=["#### 1"])
    with System.from_dict({"layers": [{"type": "generate"}]}, default_backend=backend) as s:
        s.run("q")
    assert backend.closed == 0


def test_string_model_refs_name_caller_backends_or_embedded_models() -> None:
    named = scripted()
    pool = BackendPool(named={"judge": named})
    assert pool.get("judge") is named
    spec = pool.resolve("smollm2-135m")
    assert isinstance(spec, ModelSpec) and spec.backend == "llamacpp"
    assert spec.options == {"model": "smollm2-135m"}
    default = pool.resolve(None)
    assert isinstance(default, ModelSpec) and default.options == {"model": "qwen2.5-coder-0.5b"}


def test_create_backend_is_the_default_factory() -> None:
    backend = create_backend(ScriptedConfig(outputs=["x"]))
    assert backend.identity == "scripted:scripted"


# ----- the real embedded model -------------------------------------------------------------


@pytest.mark.embedded
def test_pipeline_on_the_embedded_model(embedded: Backend) -> None:
    """Generate -> rank -> fuse on SmolLM2-135M with very short replies (three requests).

    A tiny model often misses the ranking format, so the check is that the ranker either parsed
    its reply or recorded a fallback, never silently; and that n samples took one request.
    """
    config = {
        "repair_retries": 0,
        "layers": [
            {"type": "generate", "n": 3, "max_tokens": 12},
            {"type": "rank", "top_k": 2, "max_tokens": 16},
            {"type": "fuse", "max_tokens": 12},
        ],
    }
    with System.from_dict(config, default_backend=embedded) as system:
        result = system.run("What is 2 + 3? Answer with a number.")
    generate, rank, fuse = result.trace.events
    assert len(generate.calls) == 1 and generate.calls[0].n == 3
    assert len(generate.produced) == 3
    assert result.usage.calls == 3
    assert result.usage.completion_tokens > 0 and result.usage.prompt_tokens > 0
    assert len(rank.calls) == 1
    # Parsed (positions as scores) or fell back visibly (input order, no scores).
    assert bool(rank.scores) != bool(rank.fallbacks)
    if rank.fallbacks:
        assert rank.fallbacks[0].action == "kept the input order"
        assert rank.output_ids == generate.produced[:2]
    assert len(rank.output_ids or []) == 2
    assert fuse.produced == [result.answer_id]
    assert last_text(fuse.calls[0].prompt).count("[2]") >= 1
