"""The Backend base owns the policy: a backend that implements only ``_send`` and ``should_retry`` gets
retries with backoff and jitter, the concurrency bound, timeouts, n splitting and fanout, streaming, usage
accounting and tracing. Delays here are tiny and asserted through the waits the base chose (its trace
events), never through wall time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import pytest

from ponder.backends import Backend, BackendEvent, BackendPolicy
from ponder.errors import BackendError
from ponder.records import (
    Completion,
    Generation,
    GenerationRequest,
    Message,
    SamplingParams,
    StreamDelta,
    ToolCall,
    Usage,
)

PARAMS = SamplingParams(max_tokens=8, seed=100)


class Transient(Exception):
    """What the tiny backend's engine raises when it is briefly unavailable."""


class Broken(Exception):
    """What it raises for a request that can never succeed."""


class Tiny(Backend):
    """A whole backend: one request for n completions, and which errors may pass. Nothing else."""

    def __init__(self, policy: BackendPolicy, failures: list[BaseException] | None = None) -> None:
        super().__init__(policy)
        self.failures = list(failures or [])  # raised by the first attempts, in order
        self.requests: list[GenerationRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.hold_s = 0.0

    @property
    def identity(self) -> str:
        return "tiny"

    @property
    def max_batch(self) -> int:
        return 4

    def should_retry(self, exc: Exception) -> bool:
        return isinstance(exc, Transient)

    async def _send(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.hold_s)
            if self.failures:
                raise self.failures.pop(0)
        finally:
            self.in_flight -= 1
        seed = request.params.seed
        return Generation(
            completions=[
                Completion(text=f"s{seed + i}", finish_reason="stop", completion_tokens=2)
                for i in range(request.n)
            ],
            prompt_tokens=5,
        )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def events_of(backend: Backend) -> list[BackendEvent]:
    seen: list[BackendEvent] = []
    backend.add_listener(seen.append)
    return seen


# ----- retries -------------------------------------------------------------------------------------


def test_transient_errors_are_retried_with_growing_jittered_waits() -> None:
    policy = BackendPolicy(max_retries=5, backoff_base_s=0.004, backoff_max_s=1.0)
    backend = Tiny(policy, failures=[Transient("busy")] * 4)
    seen = events_of(backend)
    random.seed(3)
    g = run(backend.generate("q", 2, PARAMS))
    assert [c.text for c in g.completions] == ["s100", "s101"]
    assert len(backend.requests) == 5  # 4 failures, then the answer
    waits = [e.wait_s for e in seen if e.kind == "retry"]
    assert len(waits) == 4
    # full jitter: retry k waits somewhere in [0, base * 2**(k-1)]
    for k, wait in enumerate(waits, start=1):
        assert 0 <= wait <= 0.004 * 2 ** (k - 1)
    assert [e.error for e in seen if e.kind == "retry"] == ["busy"] * 4
    assert backend.usage.retries == 4 and backend.usage.requests == 1


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = BackendPolicy(backoff_base_s=0.5, backoff_max_s=3.0)
    rng_draws = {k: [policy.backoff_s(k) for _ in range(400)] for k in range(1, 7)}
    for k, draws in rng_draws.items():
        cap = min(3.0, 0.5 * 2 ** (k - 1))
        assert all(0 <= d <= cap for d in draws)
        assert max(draws) > 0.8 * cap  # the whole range is used...
        assert len(set(draws)) > 300  # ...at random (jitter), not a fixed wait
    # a server's own wait is honoured, but never past the cap
    assert policy.backoff_s(1, server_wait=2.0) == 2.0
    assert policy.backoff_s(1, server_wait=3600) == 3.0


def test_what_cannot_succeed_is_raised_at_once() -> None:
    backend = Tiny(BackendPolicy(max_retries=5), failures=[Broken("bad prompt")])
    seen = events_of(backend)
    with pytest.raises(Broken, match="bad prompt"):
        run(backend.generate("q", 1, PARAMS))
    assert len(backend.requests) == 1
    assert [e.kind for e in seen] == ["send", "fail"]
    assert backend.usage == Usage(failures=1)


def test_retries_run_out_into_a_backend_error_with_the_cause() -> None:
    backend = Tiny(
        BackendPolicy(max_retries=2, backoff_base_s=0.001), failures=[Transient("503")] * 9
    )
    with pytest.raises(
        BackendError, match=r"tiny failed after 3 attempts; last error: 503"
    ) as info:
        run(backend.generate("q", 1, PARAMS))
    assert isinstance(info.value.__cause__, Transient)
    assert len(backend.requests) == 3
    assert backend.usage.retries == 2 and backend.usage.failures == 1


class ServerSaysWait(Tiny):
    def retry_after(self, exc: Exception) -> float | None:
        return 0.02 if isinstance(exc, Transient) else None


def test_the_servers_wait_is_used_instead_of_backoff() -> None:
    backend = ServerSaysWait(
        BackendPolicy(max_retries=1, backoff_base_s=100.0), failures=[Transient("429")]
    )
    seen = events_of(backend)
    run(backend.generate("q", 1, PARAMS))
    assert [e.wait_s for e in seen if e.kind == "retry"] == [0.02]


# ----- timeouts ------------------------------------------------------------------------------------


class SlowFirst(Tiny):
    async def _send(self, request: GenerationRequest) -> Generation:
        if not self.requests:
            self.requests.append(request)
            await asyncio.sleep(60)  # cancelled by the timeout long before
        return await super()._send(request)


def test_an_attempt_that_runs_out_of_time_is_retried() -> None:
    backend = SlowFirst(BackendPolicy(max_retries=1, timeout_s=0.05, backoff_base_s=0.001))
    seen = events_of(backend)
    g = run(backend.generate("q", 1, PARAMS))
    assert g.completions[0].text == "s100"
    assert [e.error for e in seen if e.kind == "retry"] == ["timed out after 0.05s"]
    with pytest.raises(BackendError, match="failed after 1 attempts; last error: timed out"):
        run(SlowFirst(BackendPolicy(timeout_s=0.05)).generate("q", 1, PARAMS))


# ----- concurrency ---------------------------------------------------------------------------------


def test_concurrency_is_bounded_across_calls_and_not_held_while_backing_off() -> None:
    backend = Tiny(BackendPolicy(max_concurrency=2, max_retries=1, backoff_base_s=0.001))
    backend.hold_s = 0.005

    async def go() -> list[Generation]:
        return await asyncio.gather(*(backend.generate("q", 1, PARAMS) for _ in range(7)))

    assert len(run(go())) == 7
    assert backend.max_in_flight == 2  # reached, never passed
    # unbounded by default
    free = Tiny(BackendPolicy())
    free.hold_s = 0.005

    async def go_free() -> None:
        await asyncio.gather(*(free.generate("q", 1, PARAMS) for _ in range(7)))

    run(go_free())
    assert free.max_in_flight == 7


class Sequences(Tiny):
    """An engine whose requests hold one slot per sequence (like llama.cpp's)."""

    def _slots_for(self, request: GenerationRequest) -> int:
        return request.n


def test_slots_are_weighted_by_the_request() -> None:
    backend = Sequences(BackendPolicy(max_concurrency=4))
    backend.hold_s = 0.005
    in_use = 0
    peak = 0

    def watch(event: BackendEvent) -> None:
        nonlocal in_use, peak
        if event.kind == "send":
            in_use += event.slots
        elif event.kind == "done":
            in_use -= event.slots
        peak = max(peak, in_use)

    backend.add_listener(watch)

    async def go() -> None:
        await asyncio.gather(*(backend.generate("q", n, PARAMS) for n in (3, 2, 2, 1, 4, 1)))

    run(go())
    assert peak == 4 and in_use == 0
    assert backend.max_in_flight <= 3  # e.g. 2 + 2 or 3 + 1, never 3 + 2


# ----- n -------------------------------------------------------------------------------------------


class ThreePerRequest(Tiny):
    @property
    def max_n_per_request(self) -> int:
        return 3


def test_large_n_is_split_with_distinct_seeds() -> None:
    backend = ThreePerRequest(BackendPolicy())
    g = run(backend.generate("q", 7, PARAMS))
    assert sorted((r.n, r.params.seed) for r in backend.requests) == [(1, 106), (3, 100), (3, 103)]
    assert [c.text for c in g.completions] == [f"s{100 + i}" for i in range(7)]
    assert g.prompt_tokens == 3 * 5  # each request evaluates the prompt


class OnePerRequest(Tiny):
    @property
    def draws_n_natively(self) -> bool:
        return False


def test_a_backend_without_n_gets_one_request_per_completion() -> None:
    backend = OnePerRequest(BackendPolicy())
    g = run(backend.generate("q", 3, PARAMS))
    assert sorted((r.n, r.params.seed) for r in backend.requests) == [(1, 100), (1, 101), (1, 102)]
    assert [c.text for c in g.completions] == ["s100", "s101", "s102"]


class IgnoresN(Tiny):
    async def _send(self, request: GenerationRequest) -> Generation:
        g = await super()._send(request)
        return Generation(completions=g.completions[:1], prompt_tokens=g.prompt_tokens)


def test_completions_the_engine_left_out_are_drawn_one_by_one() -> None:
    backend = IgnoresN(BackendPolicy())
    g = run(backend.generate("q", 3, PARAMS))
    first = backend.requests[0]
    assert (first.n, first.params.seed) == (3, 100)
    assert sorted(r.params.seed for r in backend.requests[1:]) == [101, 102]
    assert [c.text for c in g.completions] == ["s100", "s101", "s102"]


# ----- usage and tracing ---------------------------------------------------------------------------


def test_usage_sums_every_request() -> None:
    backend = Tiny(BackendPolicy(max_retries=1, backoff_base_s=0.001), failures=[Transient("x")])
    run(backend.generate("q", 2, PARAMS))
    run(backend.generate([Message(role="user", content="q")], 3, PARAMS))
    usage = backend.usage
    assert usage.requests == 2 and usage.completions == 5
    assert usage.prompt_tokens == 10 and usage.completion_tokens == 10 and usage.total_tokens == 20
    assert usage.retries == 1 and usage.failures == 0
    # a snapshot: later work does not change it
    run(backend.generate("q", 1, PARAMS))
    assert usage.requests == 2 and backend.usage.requests == 3


def test_trace_events_follow_each_attempt() -> None:
    backend = Tiny(BackendPolicy(max_retries=1, backoff_base_s=0.001), failures=[Transient("x")])
    seen = events_of(backend)
    run(backend.generate("q", 2, PARAMS))
    assert [(e.kind, e.attempt) for e in seen] == [
        ("send", 1),
        ("retry", 1),
        ("send", 2),
        ("done", 2),
    ]
    assert all(e.backend == "tiny" and e.n == 2 for e in seen)
    backend.remove_listener(seen.append)


# ----- streaming -----------------------------------------------------------------------------------


def test_a_backend_without_streaming_streams_whole_completions() -> None:
    backend = Tiny(BackendPolicy(max_retries=1, backoff_base_s=0.001), failures=[Transient("x")])

    async def go() -> list[StreamDelta]:
        request = GenerationRequest(prompt="q", n=2, params=PARAMS)
        return [d async for d in backend.stream(request)]

    deltas = run(go())
    assert [(d.index, d.text, d.finish_reason) for d in deltas] == [
        (0, "s100", "stop"),
        (1, "s101", "stop"),
    ]
    assert backend.usage.requests == 1 and backend.usage.retries == 1
    assert backend.usage.completions == 2 and backend.usage.completion_tokens == 4


class Endless(Tiny):
    """Streams forever until stopped; records that it was stopped."""

    stopped = 0

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        self.in_flight += 1
        try:
            while True:
                await asyncio.sleep(0)
                yield StreamDelta(text="x")
        finally:
            self.in_flight -= 1
            self.stopped += 1


def test_closing_or_cancelling_a_stream_stops_it_and_frees_its_slot() -> None:
    backend = Endless(BackendPolicy(max_concurrency=1))
    request = GenerationRequest(prompt="q", params=PARAMS)

    async def close_early() -> int:
        got = 0
        async with aclosing(backend.stream(request)) as deltas:
            async for _ in deltas:
                got += 1
                if got == 3:
                    break
        return got

    async def cancel_consumer() -> None:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in backend.stream(request):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def go() -> None:
        assert await close_early() == 3
        await cancel_consumer()
        # the single slot is free again: a third stream starts at once
        assert await asyncio.wait_for(close_early(), timeout=30) == 3

    run(go())
    assert backend.stopped == 3 and backend.in_flight == 0
    assert backend.usage.requests == 3


def test_generation_request_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="continue_final_message"):
        GenerationRequest(prompt=[Message(role="user", content="q")], continue_final_message=True)
    with pytest.raises(ValueError, match="tool_choice needs tools"):
        GenerationRequest(prompt="q", tool_choice="required")
    prompt = [Message(role="user", content="q"), Message(role="assistant", content="The")]
    assert GenerationRequest(prompt=prompt, continue_final_message=True).prefix == "The"
    assert GenerationRequest(prompt=prompt).prefix == ""


class Stalls(Tiny):
    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        yield StreamDelta(text="a")
        await asyncio.sleep(60)  # the engine stops sending
        yield StreamDelta(text="never")


def test_a_stream_that_stalls_after_its_first_delta_fails_without_a_retry() -> None:
    backend = Stalls(BackendPolicy(max_retries=3, timeout_s=0.05))

    async def go() -> list[str]:
        got: list[str] = []
        with pytest.raises(BackendError, match=r"stopped streaming: timed out after 0\.05s"):
            async for delta in backend.stream(GenerationRequest(prompt="q", params=PARAMS)):
                got.append(delta.text)
        return got

    assert run(go()) == ["a"]
    assert backend.usage.retries == 0 and backend.usage.requests == 1


def test_records_serialise_as_before_and_accept_openai_shapes() -> None:
    assert Message(role="user", content="hi").model_dump() == {"role": "user", "content": "hi"}
    plain = Completion(text="x", finish_reason="stop", completion_tokens=1)
    assert set(plain.model_dump()) == {
        "text",
        "finish_reason",
        "completion_tokens",
        "latency_s",
        "mean_logprob",
    }
    call = ToolCall(id="c", name="f", arguments='{"x": 1}')
    calling = Message.model_validate({"role": "assistant", "content": None, "tool_calls": [call]})
    assert calling.content == "" and calling.wire_content is None  # str in Python, null on the wire
    assert Message.model_validate(calling.model_dump()) == calling
    assert Message(role="assistant", content="ok").wire_content == "ok"
    with pytest.raises(ValueError, match="only assistant messages carry tool_calls"):
        Message(role="user", content="q", tool_calls=(call,))
    with pytest.raises(ValueError, match="tool_call_id"):
        Message(role="tool", content="42")
    with pytest.raises(ValueError, match="tool_call_id"):
        Message(role="user", content="q", tool_call_id="c")
