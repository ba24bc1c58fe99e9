"""Prompts that outgrow the model's context: candidates fitted (shortened with a marker, recorded in
the trace), max_tokens limited to what the context leaves, and prompts that cannot fit refused.

Logic runs on a scripted backend whose "model" has a context of a few hundred tokens and one token
per word; one test fuses many long candidates on the real embedded model.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from ponder.backends import ScriptedBackend
from ponder.errors import RunError, UserError
from ponder.records import Generation, Message, Prompt, SamplingParams
from ponder.systems import (
    BackendPool,
    ComponentEvent,
    PromptTooLongError,
    Resources,
    RunContext,
    System,
    SystemResult,
    get_extractor,
)

TEST_MODEL = "smollm2-135m"
MARKER = re.compile(r"\[\.\.\. (\d+) tokens cut \.\.\.\]")
# What the fitting counts around the messages' words (see ponder.systems._budget).
OVERHEAD_PER_MESSAGE, OVERHEAD_PER_PROMPT = 8, 48


class WordModel:
    """A scripted backend whose model holds ``context`` tokens, a token being a word.

    It refuses, as a real server does, a request whose prompt and max_tokens exceed the context.
    """

    def __init__(self, context: int, inner: ScriptedBackend) -> None:
        self.context = context
        self.inner = inner
        self.prompts: list[Prompt] = []

    @property
    def identity(self) -> str:
        return "words:test"

    @property
    def max_batch(self) -> int:
        return 16

    def context_size(self) -> int | None:
        return self.context

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def used(self, prompt: Prompt) -> int:
        if isinstance(prompt, str):
            return self.count_tokens(prompt)
        return sum(self.count_tokens(m.content or "") for m in prompt)

    async def generate(self, prompt: Prompt, n: int, params: SamplingParams) -> Generation:
        self.prompts.append(prompt)
        if self.used(prompt) + params.max_tokens > self.context:
            raise AssertionError(f"request exceeds the context of {self.context} tokens")
        return await self.inner.generate(prompt, n, params)

    async def aclose(self) -> None:
        await self.inner.aclose()


def long_answer(i: int, words: int = 300) -> str:
    return f"Start{i} " + " ".join(f"w{i}x{k}" for k in range(words)) + f" End{i} #### {i}"


def reply(prompt: Prompt, i: int, params: SamplingParams) -> str:
    text = prompt[-1].content if isinstance(prompt, list) else prompt
    if "Ranking:" in (text or ""):
        return "Ranking: [2] > [1] > [3] > [4] > [5] > [6]"
    if "Strengths:" in (text or ""):
        blocks = [f"[{k}]\nStrengths: s\nWeaknesses: w" for k in range(1, 7)]
        return "\n".join(blocks)
    if "Score:" in (text or ""):
        return "Score: 7"
    if "Winner:" in (text or ""):
        return "Winner: A"
    return "fused #### 3"


def system_of(
    *layers: list[dict[str, Any]], context: int, words: list[int]
) -> tuple[System, WordModel]:
    answers = [long_answer(i, n) for i, n in enumerate(words)]
    generator = ScriptedBackend(outputs=answers)
    model = WordModel(context, ScriptedBackend(fn=reply))
    config = {
        "name": "fit",
        "layers": [[{"type": "generate", "n": len(words), "model": "gen"}], *layers],
        "repair_retries": 0,
    }
    return System.from_dict(config, backends={"gen": generator}, default_backend=model), model


def run(system: System, query: str = "What is the answer?") -> SystemResult:
    with system:
        return system.run(query)


@pytest.mark.parametrize(
    ("component", "purpose"),
    [
        ({"type": "fuse", "max_tokens": 100}, "fuse"),
        ({"type": "critique", "max_tokens": 100}, "critique"),
        ({"type": "rank", "max_tokens": 100}, "rank"),
    ],
)
def test_candidates_are_shortened_to_fit_with_a_marker(
    component: dict[str, Any], purpose: str
) -> None:
    system, model = system_of([component], context=700, words=[300] * 6)
    result = run(system)
    event = result.trace.events[1]
    (call,) = event.calls
    assert call.purpose == purpose and call.error is None
    assert isinstance(call.prompt, list)
    # What the component sent fits with room for the reply.
    counted = model.used(call.prompt) + OVERHEAD_PER_MESSAGE * len(call.prompt)
    assert counted + OVERHEAD_PER_PROMPT + 100 <= 700
    text = call.prompt[-1].content or ""
    cuts = [int(n) for n in MARKER.findall(text)]
    assert len(cuts) == 6 and all(n > 200 for n in cuts)
    # Each shortened candidate keeps its start and its end (where the answer is).
    for i in range(6):
        assert f"Start{i}" in text and f"End{i} #### {i}" in text
    (fallback,) = event.fallbacks
    assert "do not fit in the model's context of 700 tokens" in fallback.reason
    assert fallback.candidate_ids == [c.id for c in result.trace.candidates[:6]]
    # Only the prompt is shortened: the candidates keep their text.
    assert all(MARKER.search(c.text) is None for c in result.trace.candidates)


def test_short_candidates_keep_their_text_and_lend_their_room() -> None:
    system, _ = system_of([{"type": "fuse", "max_tokens": 100}], context=700, words=[5, 300, 300])
    result = run(system)
    text = result.trace.events[1].calls[0].prompt[-1].content
    blocks = re.split(r"\n\[\d\]\n", text)
    assert MARKER.search(blocks[1]) is None and long_answer(0, 5) in blocks[1]
    assert all(MARKER.search(b) for b in blocks[2:4])
    (fallback,) = result.trace.events[1].fallbacks
    assert fallback.candidate_ids == ["L0.0.2", "L0.0.3"]


def test_pairwise_and_judge_fit_each_call() -> None:
    layers = [
        {"type": "rank", "mode": "pairwise", "max_tokens": 50},
        {"type": "judge", "max_tokens": 50},
    ]
    system, model = system_of(*[[c] for c in layers], context=300, words=[400, 400])
    result = run(system)
    for event in result.trace.events[1:]:
        assert event.fallbacks and all(c.error is None for c in event.calls)
        for call in event.calls:
            assert MARKER.search(call.prompt[-1].content)
    assert len(model.prompts) == 3  # one comparison, two judgements


def test_candidates_that_cannot_fit_are_refused_as_a_user_error() -> None:
    system, _ = system_of([{"type": "fuse", "max_tokens": 100}], context=400, words=[50] * 20)
    with pytest.raises(PromptTooLongError) as info:
        run(system)
    assert isinstance(info.value, UserError) and not isinstance(info.value, RunError)
    assert "20 candidate(s) do not fit in the model's context of 400 tokens" in info.value.message
    assert info.value.hint is not None and "top_k" in info.value.hint


def test_max_tokens_is_limited_to_what_the_context_leaves() -> None:
    model = WordModel(300, ScriptedBackend(outputs=["#### 1"]))
    config = {"layers": [{"type": "generate", "max_tokens": 1000}]}
    query = " ".join(["word"] * 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with System.from_dict(config, default_backend=model) as system:
            results = [system.run(query), system.run(query)]
    for result in results:
        (call,) = result.trace.events[0].calls
        used = model.used(call.prompt) + OVERHEAD_PER_MESSAGE * len(call.prompt)
        assert call.params.max_tokens == 300 - used - OVERHEAD_PER_PROMPT
        (note,) = result.trace.events[0].notes
        assert f"max_tokens 1000 lowered to {call.params.max_tokens}" in note
    # One message per component, so Python's default filter shows it once.
    messages = {str(w.message) for w in caught if "limited to the context" in str(w.message)}
    assert len(messages) == 1 and "layers[0][0] (generate)" in messages.pop()


def test_a_prompt_longer_than_the_context_is_refused() -> None:
    model = WordModel(100, ScriptedBackend(outputs=["#### 1"]))
    system = System.from_dict({"layers": [{"type": "generate"}]}, default_backend=model)
    with system, pytest.raises(PromptTooLongError, match="more than the model's context of 100"):
        system.run(" ".join(["word"] * 200))
    assert model.prompts == []  # nothing was sent


def test_a_backend_knows_no_context_or_tokenizer_unless_it_says() -> None:
    # The Backend base's defaults: an unknown context, no tokenizer (callers then estimate).
    assert ScriptedBackend().context_size() is None
    assert ScriptedBackend().count_tokens("one two") is None


def test_without_a_known_context_nothing_is_cut() -> None:
    generator = ScriptedBackend(outputs=[long_answer(i, 3000) for i in range(3)])
    config = {
        "layers": [[{"type": "generate", "n": 3, "model": "gen"}], [{"type": "fuse"}]],
    }
    with System.from_dict(
        config, backends={"gen": generator}, default_backend=ScriptedBackend(outputs=["x"])
    ) as system:
        result = system.run("q")
    assert not result.trace.events[1].fallbacks
    assert MARKER.search(result.trace.events[1].calls[0].prompt[-1].content) is None


# ----- the real embedded model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_context() -> Iterator[Any]:
    """The small real model with a context of 512 tokens (short prefills on a busy machine)."""
    from ponder.backends import LlamaCppBackend, LlamaCppConfig

    backend = LlamaCppBackend(
        LlamaCppConfig(model=TEST_MODEL, n_parallel=1, ctx_per_sequence=512, threads=1)
    )
    try:
        yield backend
    finally:
        backend.close()


@pytest.mark.embedded
def test_fuse_over_many_long_candidates_on_the_embedded_model(small_context: Any) -> None:
    sentence = "The train leaves at nine and arrives at noon, so the trip takes three hours. "
    answers = [f"Answer {i}: " + sentence * 12 + f"#### {i}" for i in range(6)]
    config = {
        "name": "many-then-fuse",
        "layers": [
            [{"type": "generate", "n": 6, "model": "gen"}],
            [{"type": "fuse", "max_tokens": 32}],
        ],
    }
    backends = {"gen": ScriptedBackend(outputs=answers)}
    with System.from_dict(config, backends=backends, default_backend=small_context) as system:
        result = system.run("How long is the trip?")
    # Unfitted, the candidates alone would not fit: ~170 tokens each in a 512-token context.
    assert sum(len(a) for a in answers) / 4 > 512
    event = result.trace.events[1]
    (call,) = event.calls
    assert call.error is None and result.answer.strip()
    assert call.prompt_tokens + call.params.max_tokens <= 512
    text = call.prompt[-1].content
    assert len(MARKER.findall(text)) == 6 and "#### 5" in text
    (fallback,) = event.fallbacks
    assert "context of 512 tokens" in fallback.reason and len(fallback.candidate_ids) == 6
    assert isinstance(call.prompt[0], Message)


def test_components_can_ask_the_run_context_about_the_model() -> None:
    model = WordModel(321, ScriptedBackend())
    plain = ScriptedBackend()
    resources = Resources(
        pool=BackendPool(default=model),
        extractor=get_extractor("math"),
        checker=lambda name: lambda reference, texts: [False] * len(texts),
        repair_retries=0,
    )
    event = ComponentEvent(layer=0, index=0, component="x", label="x", input_ids=[])
    ctx = RunContext(event=event, resources=resources, seed=0, query_key="k")
    prompt = [Message(role="user", content="one two three")]

    async def ask() -> tuple[Any, ...]:
        return (
            await ctx.context_size(model),
            await ctx.count_tokens(model, prompt),
            await ctx.context_size(plain),
            await ctx.count_tokens(plain, "x" * 30),
        )

    sizes = asyncio.run(ask())
    assert sizes == (
        321,
        3 + OVERHEAD_PER_MESSAGE + OVERHEAD_PER_PROMPT,
        None,
        10 + OVERHEAD_PER_PROMPT,
    )
