"""The embedded llama.cpp backend on the real SmolLM2-135M model (short generations)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ponder.backends import LlamaCppBackend, LlamaCppConfig, create_backend
from ponder.errors import BackendRequestError, ModelNotInstalledError, NotFoundError, RunError
from ponder.models import MODELS, ModelEntry, get_model, resolve_model
from ponder.records import Message, SamplingParams

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
