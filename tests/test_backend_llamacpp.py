"""The embedded llama.cpp backend on the real SmolLM2-135M model (short generations)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from contextlib import aclosing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ponder.backends import BackendEvent, LlamaCppBackend, LlamaCppConfig, create_backend
from ponder.errors import (
    BackendRequestError,
    ConfigError,
    ModelNotInstalledError,
    NotFoundError,
    RunError,
)
from ponder.models import MODELS, ModelEntry, get_model, resolve_model
from ponder.records import (
    Generation,
    GenerationRequest,
    Message,
    SamplingParams,
    StreamDelta,
    ToolCall,
    ToolSpec,
)

pytestmark = pytest.mark.embedded

Q = [Message(role="user", content="Name a colour.")]


def gen(backend: LlamaCppBackend, prompt, n: int, **kw):
    params = SamplingParams(**{"temperature": 0.9, "max_tokens": 12, "seed": 1, **kw})
    return asyncio.run(backend.generate(prompt, n, params))


def test_n_completions_with_own_token_counts(embedded: LlamaCppBackend) -> None:
    g = gen(embedded, Q, 4, max_tokens=10)
    assert len(g.completions) == 4
    for c in g.completions:
        assert 1 <= c.completion_tokens <= 10
        assert c.finish_reason in ("stop", "length")
        assert c.mean_logprob is None  # token probabilities are opt-in
        assert c.latency_s > 0
    # a "length" finish means exactly max_tokens tokens were decoded
    assert all(c.completion_tokens == 10 for c in g.completions if c.finish_reason == "length")
    assert g.prompt_tokens > 5


def test_prompt_is_evaluated_once_per_n_request(embedded: LlamaCppBackend) -> None:
    before = embedded.metrics()
    prompt = [Message(role="user", content="Count the legs of 3 spiders and 2 ants, please.")]
    g = gen(embedded, prompt, 8, max_tokens=6)
    after = embedded.metrics()
    evaluated = after["prompt_tokens_total"] - before["prompt_tokens_total"]
    assert 0 < evaluated <= g.prompt_tokens  # cached prefix tokens are not re-evaluated
    assert evaluated < 2 * g.prompt_tokens  # not once per sequence
    decoded = after["tokens_predicted_total"] - before["tokens_predicted_total"]
    assert decoded == sum(c.completion_tokens for c in g.completions)  # per-sample counts add up
    # the 8 sequences decode together: far fewer decode calls than tokens
    assert after["n_decode_total"] - before["n_decode_total"] < decoded


def test_raw_text_prompt_and_stop(embedded: LlamaCppBackend) -> None:
    g = gen(embedded, "1, 2, 3, 4,", 2, temperature=0.0, max_tokens=16, stop=(",",))
    for c in g.completions:
        assert "," not in c.text
        assert c.finish_reason == "stop"


@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seeds=st.lists(st.integers(min_value=0, max_value=2**31 - 1), min_size=2, max_size=3))
def test_same_seeds_reproduce_on_a_fresh_engine(seeds: list[int]) -> None:
    """Rerunning the same requests from scratch gives the same samples.

    (Within one long-lived engine, llama.cpp's batched attention is not batch-invariant: a different KV-cache
    layout left by earlier requests can change low-order bits and so a sampled token. Reproducibility is
    therefore promised for the same sequence of requests on a fresh engine.)
    """

    def draw() -> list[list[str]]:
        backend = LlamaCppBackend(LlamaCppConfig(model="smollm2-135m", n_parallel=4))
        try:
            return [
                [c.text for c in gen(backend, Q, 2, seed=s, temperature=1.0).completions]
                for s in seeds
            ]
        finally:
            backend.close()

    assert draw() == draw()


def test_different_seeds_give_diverse_outputs(embedded: LlamaCppBackend) -> None:
    texts = {gen(embedded, Q, 1, seed=s, temperature=1.2).completions[0].text for s in range(6)}
    assert len(texts) >= 3
    # and the sequences of one n-request differ from each other
    g = gen(embedded, Q, 6, seed=5, temperature=1.2)
    assert len({c.text for c in g.completions}) >= 3


def test_more_than_slots_is_split(embedded: LlamaCppBackend) -> None:
    g = gen(embedded, Q, 10, max_tokens=3)
    assert len(g.completions) == 10


def test_engine_rejection_is_a_request_error(embedded: LlamaCppBackend) -> None:
    too_long = "apple " * 12000  # more tokens than the fixture's whole 8,192-cell KV cache
    with pytest.raises(BackendRequestError, match="context"):
        asyncio.run(embedded.generate(too_long, 1, SamplingParams(max_tokens=2)))


def test_create_backend_from_config_and_identity() -> None:
    backend = create_backend(LlamaCppConfig(model="smollm2-135m"))
    assert isinstance(backend, LlamaCppBackend)
    assert backend.identity.startswith("llamacpp:smollm2-135m@b179c9523d0e")


def test_missing_model_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = get_model("qwen2.5-coder-1.5b")
    if entry.installed():
        monkeypatch.setitem(
            MODELS,
            "qwen2.5-coder-1.5b",
            ModelEntry(**{**entry.__dict__, "packages": ("ponder-no-such-pkg==1.0",)}),
        )
        entry = get_model("qwen2.5-coder-1.5b")
    with pytest.raises(ModelNotInstalledError) as info:
        resolve_model("qwen2.5-coder-1.5b")
    assert entry.install_command() in str(info.value)
    assert "pip install" in str(info.value)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(NotFoundError) as info:
        resolve_model("gpt-17")
    for name in MODELS:
        assert name in str(info.value)
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_model("/nope/model.gguf")


def test_checksum_mismatch_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PONDER_CACHE_DIR", str(tmp_path))
    entry = get_model("smollm2-135m")
    monkeypatch.setitem(
        MODELS, "smollm2-135m", ModelEntry(**{**entry.__dict__, "sha256": "0" * 64})
    )
    with pytest.raises(RunError, match="refusing"):
        resolve_model("smollm2-135m")


def test_default_model_parts_join_to_pinned_checksum() -> None:
    entry = get_model("qwen2.5-coder-0.5b")
    path = resolve_model(entry.name)
    assert path.stat().st_size == entry.size == 491_400_064


def test_token_counts_match_the_engine_per_sample() -> None:
    """Counts without probabilities (max_tokens / usage / tokenizer) equal the engine's own per-sample counts."""
    exact = LlamaCppBackend(LlamaCppConfig(model="smollm2-135m", n_parallel=6, logprobs="model"))
    try:
        reference = gen(exact, Q, 6, temperature=1.0, max_tokens=40, seed=11)
    finally:
        exact.close()
    counted = LlamaCppBackend(LlamaCppConfig(model="smollm2-135m", n_parallel=6))
    try:
        g = gen(counted, Q, 6, temperature=1.0, max_tokens=40, seed=11)
    finally:
        counted.close()
    assert [c.text for c in g.completions] == [c.text for c in reference.completions]
    assert {c.finish_reason for c in g.completions} >= {"stop"}, "want some samples that stop early"
    assert [c.completion_tokens for c in g.completions] == [
        c.completion_tokens for c in reference.completions
    ]


def test_context_size_and_token_counts_are_the_engines() -> None:
    backend = LlamaCppBackend(
        LlamaCppConfig(model="smollm2-135m", n_parallel=1, ctx_per_sequence=512, threads=1)
    )
    try:
        assert backend.context_size() == 512  # what one request may hold
        text = "The quick brown fox jumps over the lazy dog."
        used = gen(backend, text, 1, max_tokens=1, temperature=0.0).prompt_tokens
        assert backend.count_tokens(text) == used > 0 and backend.count_tokens("") == 0
        # A prompt beyond the context is the engine's to refuse: the size is the real limit.
        with pytest.raises(BackendRequestError):
            gen(backend, "apple " * 600, 1, max_tokens=1)
    finally:
        backend.close()


def test_truncation_params_reach_the_engine() -> None:
    backend = LlamaCppBackend(
        LlamaCppConfig(model="smollm2-135m", n_parallel=4, logprobs="sampling")
    )
    try:
        # top_k=1 leaves one candidate: every sequence is the greedy one, each token sampled with p=1
        g = gen(backend, Q, 4, temperature=1.5, top_k=1)
        assert len({c.text for c in g.completions}) == 1
        assert all(c.mean_logprob == 0.0 for c in g.completions)
        # without truncation (Ponder's default, unlike llama.cpp's top_k=40/min_p=0.05) it is diverse
        g = gen(backend, Q, 4, temperature=1.5)
        assert len({c.text for c in g.completions}) >= 3
        assert all(c.mean_logprob is not None and c.mean_logprob < 0 for c in g.completions)
    finally:
        backend.close()


def test_model_logprobs_option_reports_untempered_probabilities() -> None:
    backend = LlamaCppBackend(LlamaCppConfig(model="smollm2-135m", n_parallel=2, logprobs="model"))
    try:
        g = gen(backend, Q, 2, temperature=1.0, top_k=1, max_tokens=6)
    finally:
        backend.close()
    # greedy under truncation, yet the model's own probability of those tokens is below 1
    assert all(c.mean_logprob is not None and c.mean_logprob < 0 for c in g.completions)
    assert all(c.completion_tokens >= 1 for c in g.completions)


# ----- the policy of the Backend base on the real engine ------------------------------------------


def stream_all(backend: LlamaCppBackend, request: GenerationRequest) -> list[StreamDelta]:
    async def go() -> list[StreamDelta]:
        return [d async for d in backend.stream(request)]

    return asyncio.run(go())


def wait_until_idle(backend: LlamaCppBackend) -> None:
    """Until the engine processes no request (so its counters are final)."""
    for _ in range(600):
        if backend.metrics()["requests_processing"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the engine is still busy")


def test_concurrent_requests_never_hold_more_than_the_slots() -> None:
    backend = LlamaCppBackend(
        LlamaCppConfig(model="smollm2-135m", n_parallel=2, ctx_per_sequence=512)
    )
    in_use = peak = 0

    def watch(event: BackendEvent) -> None:
        nonlocal in_use, peak
        in_use += (
            event.slots if event.kind == "send" else -event.slots if event.kind == "done" else 0
        )
        peak = max(peak, in_use)

    backend.add_listener(watch)

    async def go() -> list[Generation]:
        params = SamplingParams(temperature=0.8, max_tokens=3, seed=4)
        return await asyncio.gather(*(backend.generate(Q, n, params) for n in (1, 2, 1, 1, 2, 1)))

    try:
        gens = asyncio.run(go())
        workers = {t.name for t in threading.enumerate() if t.name.startswith("ponder-llamacpp")}
    finally:
        backend.close()
    assert [len(g.completions) for g in gens] == [1, 2, 1, 1, 2, 1]
    assert peak == 2 and in_use == 0  # the engine's 2 slots were used, never more
    assert 1 <= len(workers) <= 2  # its own executor, one thread per slot
    usage = backend.usage
    assert usage.requests == 6 and usage.completions == 8
    assert usage.completion_tokens == sum(c.completion_tokens for g in gens for c in g.completions)
    assert usage.prompt_tokens == sum(g.prompt_tokens for g in gens) > 0


def test_stream_gives_the_same_text_as_generate(embedded: LlamaCppBackend) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=8, seed=2)
    whole = gen(embedded, Q, 1, temperature=0.0, max_tokens=8, seed=2).completions[0]
    before = embedded.usage
    deltas = stream_all(embedded, GenerationRequest(prompt=Q, params=params))
    assert "".join(d.text for d in deltas) == whole.text
    assert [d.finish_reason for d in deltas if d.finish_reason] == [whole.finish_reason]
    after = embedded.usage
    assert after.requests == before.requests + 1
    assert after.completion_tokens - before.completion_tokens == whole.completion_tokens


def _decoded_after(embedded: LlamaCppBackend, stop: str) -> tuple[int, int]:
    """Stream a long greedy count, stop it after 3 deltas by ``stop``; (deltas seen, tokens decoded)."""
    request = GenerationRequest(
        prompt="1, 2, 3, 4, 5, 6,", params=SamplingParams(temperature=0.0, max_tokens=400)
    )
    wait_until_idle(embedded)
    before = embedded.metrics()["tokens_predicted_total"]
    seen: list[StreamDelta] = []

    async def consume() -> None:
        async for delta in embedded.stream(request):
            seen.append(delta)
            if len(seen) == 3:
                await asyncio.sleep(3600)  # cancelled from outside

    async def go() -> None:
        if stop == "close":
            stream = embedded.stream(request)
            async with aclosing(stream):
                async for delta in stream:
                    seen.append(delta)
                    if len(seen) == 3:
                        break
            return
        task = asyncio.create_task(consume())
        while len(seen) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    wait_until_idle(embedded)
    return len(seen), int(embedded.metrics()["tokens_predicted_total"] - before)


@pytest.mark.parametrize("stop", ["close", "cancel"])
def test_stopping_a_stream_stops_decoding(embedded: LlamaCppBackend, stop: str) -> None:
    seen, decoded = _decoded_after(embedded, stop)
    assert seen == 3
    assert 3 <= decoded < 40  # of up to 400: llama.cpp stopped at the next token


def test_continuing_an_assistant_turn_returns_only_the_new_text(embedded: LlamaCppBackend) -> None:
    prefix = "The capital of France is"
    prompt = [
        Message(role="user", content="What is the capital of France?"),
        Message(role="assistant", content=prefix),
    ]
    params = SamplingParams(temperature=0.0, max_tokens=8)
    request = GenerationRequest(prompt=prompt, n=2, params=params, continue_final_message=True)
    g = asyncio.run(embedded.complete(request))
    # the engine itself echoes the prefix, then continues it
    raw = embedded.engine.handle_chat_completions(
        {"messages": [m.model_dump() for m in prompt], "temperature": 0.0, "max_tokens": 8}
    )
    echoed = raw["choices"][0]["message"]["content"]
    assert echoed.startswith(prefix)
    for c in g.completions:
        assert c.text == echoed[len(prefix) :] and c.text.strip()
    streamed = stream_all(embedded, request.model_copy(update={"n": 1}))
    assert "".join(d.text for d in streamed) == g.completions[0].text


def test_top_logprobs_list_alternatives_per_token(embedded: LlamaCppBackend) -> None:
    request = GenerationRequest(
        prompt=Q, params=SamplingParams(temperature=0.0, max_tokens=5), top_logprobs=3
    )
    c = asyncio.run(embedded.complete(request)).completions[0]
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
    assert "".join(t.token for t in c.logprobs) == c.text
    for t in c.logprobs:
        assert len(t.top) == 3
        assert [a.logprob for a in t.top] == sorted((a.logprob for a in t.top), reverse=True)
        assert t.top[0].token == t.token  # greedy: the chosen token is the most likely
    assert c.mean_logprob is not None and c.mean_logprob <= 0
    # without asking, completions carry none (and serialise as before)
    plain = gen(embedded, Q, 1, temperature=0.0, max_tokens=3).completions[0]
    assert plain.logprobs is None and "logprobs" not in plain.model_dump()


def test_tool_messages_and_tools_reach_the_engine(embedded: LlamaCppBackend) -> None:
    call = ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')
    prompt = [
        Message(role="user", content="Weather in Paris?"),
        Message(role="assistant", content=None, tool_calls=(call,)),  # type: ignore[arg-type]
        Message(role="tool", tool_call_id="c1", content="sunny, 21C"),
    ]
    tool = ToolSpec(
        name="get_weather",
        description="Current weather of a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    request = GenerationRequest(
        prompt=prompt,
        params=SamplingParams(temperature=0.0, max_tokens=6),
        tools=(tool,),
        tool_choice="auto",
    )
    g = asyncio.run(embedded.complete(request))
    c = g.completions[0]
    assert c.finish_reason in ("stop", "length", "tool_calls")
    assert c.text or c.tool_calls
    # the call and its result were part of the prompt the engine evaluated
    plain = GenerationRequest(prompt=prompt[:1], params=request.params, tools=(tool,))
    assert g.prompt_tokens > asyncio.run(embedded.complete(plain)).prompt_tokens


def test_engine_threads_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ponder.backends import default_threads

    monkeypatch.delenv("PONDER_THREADS", raising=False)
    assert default_threads() == (os.cpu_count() or 1)
    monkeypatch.setenv("PONDER_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.setenv("PONDER_THREADS", "two")
    with pytest.raises(ConfigError, match="PONDER_THREADS='two'"):
        default_threads()
