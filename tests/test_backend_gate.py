"""The gate that makes embedded engines in one process take turns on the CPU instead of oversubscribing it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from ponder.backends import LlamaCppBackend, LlamaCppConfig
from ponder.backends._gate import CPU_GATE, EngineGate
from ponder.records import Message, SamplingParams
from tests.conftest import TEST_MODEL


def _enter_in_thread(
    gate: EngineGate, owner: str, log: list[str], release: threading.Event
) -> threading.Thread:
    def body() -> None:
        with gate.hold(owner):
            log.append(f"in {owner}")
            release.wait(5)
        log.append(f"out {owner}")

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_requests_of_one_owner_run_together() -> None:
    gate = EngineGate()
    inside = threading.Barrier(3, timeout=5)

    def body() -> None:
        with gate.hold("a"):
            inside.wait()  # only passes if all three are inside at once

    threads = [threading.Thread(target=body) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not inside.broken


def test_other_owner_waits_until_the_first_is_done() -> None:
    gate, log = EngineGate(), []
    release_a, release_b = threading.Event(), threading.Event()
    a = _enter_in_thread(gate, "a", log, release_a)
    _wait_for(lambda: "in a" in log)
    b = _enter_in_thread(gate, "b", log, release_b)
    time.sleep(0.1)
    assert "in b" not in log  # b waits while a runs
    release_a.set()
    a.join(5)
    _wait_for(lambda: "in b" in log)
    release_b.set()
    b.join(5)
    assert log == ["in a", "out a", "in b", "out b"]


def test_turns_alternate_so_no_owner_starves() -> None:
    """A new request of the running owner queues behind an owner that is already waiting."""
    gate, log = EngineGate(), []
    release_a1, release_b, release_a2 = threading.Event(), threading.Event(), threading.Event()
    a1 = _enter_in_thread(gate, "a", log, release_a1)
    _wait_for(lambda: "in a" in log)
    b = _enter_in_thread(gate, "b", log, release_b)
    time.sleep(0.05)
    a2 = _enter_in_thread(gate, "a", log, release_a2)
    time.sleep(0.1)
    assert log == ["in a"]  # a's second request does not overtake b
    release_a1.set()
    _wait_for(lambda: "in b" in log)
    assert log.count("in a") == 1
    release_b.set()
    _wait_for(lambda: log.count("in a") == 2)
    release_a2.set()
    for t in (a1, b, a2):
        t.join(5)
    assert log == ["in a", "out a", "in b", "out b", "in a", "out a"]
    # the gate is free again, for anyone
    with gate.hold("c"):
        pass


def test_an_exception_inside_releases_the_gate() -> None:
    gate = EngineGate()
    with pytest.raises(RuntimeError), gate.hold("a"):
        raise RuntimeError("boom")
    done = threading.Event()
    thread = threading.Thread(target=lambda: (gate.hold("b").__enter__(), done.set()), daemon=True)
    thread.start()
    assert done.wait(5)


class _Recorder:
    """Delegates to a real engine and records when each request ran."""

    def __init__(self, engine: Any, spans: list[tuple[str, float, float]], name: str) -> None:
        self._engine, self._spans, self._name = engine, spans, name

    def handle_chat_completions(self, body: dict[str, Any]) -> Any:
        start = time.perf_counter()
        try:
            return self._engine.handle_chat_completions(body)
        finally:
            self._spans.append((self._name, start, time.perf_counter()))


@pytest.mark.embedded
def test_two_real_engines_take_turns(embedded: LlamaCppBackend) -> None:
    other = LlamaCppBackend(LlamaCppConfig(model=TEST_MODEL, n_parallel=4, ctx_per_sequence=512))
    spans: list[tuple[str, float, float]] = []
    engines = {
        id(embedded): _Recorder(embedded.engine, spans, "first"),
        id(other): _Recorder(other.engine, spans, "second"),
    }
    prompt = [Message(role="user", content="Name a colour.")]
    params = SamplingParams(temperature=0.8, max_tokens=24, seed=3)

    async def both() -> list[Any]:
        return await asyncio.gather(
            *(b.generate(prompt, 2, params) for b in (embedded, other, embedded, other))
        )

    try:
        embedded._engine = lambda: engines[id(embedded)]  # type: ignore[method-assign]
        other._engine = lambda: engines[id(other)]  # type: ignore[method-assign]
        results = asyncio.run(both())
    finally:
        del embedded._engine
        other.close()
    assert all(len(g.completions) == 2 and g.completions[0].text for g in results)
    assert len(spans) == 4
    for name, start, end in spans:
        for other_name, other_start, other_end in spans:
            if name != other_name:
                assert end <= other_start or other_end <= start, "two engines decoded at once"


@pytest.mark.embedded
def test_engines_with_explicit_threads_do_not_wait_for_the_gate() -> None:
    backend = LlamaCppBackend(
        LlamaCppConfig(model=TEST_MODEL, n_parallel=2, ctx_per_sequence=512, threads=1)
    )
    params = SamplingParams(temperature=0.0, max_tokens=4, seed=1)
    try:
        with CPU_GATE.hold("someone else"):  # a default-threads engine busy for the whole call
            g = asyncio.run(backend.generate([Message(role="user", content="Hi")], 1, params))
    finally:
        backend.close()
    assert g.completions[0].completion_tokens >= 1
