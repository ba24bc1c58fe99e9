"""`ponder serve` end to end on the real embedded engine (short generations).

The engine's own counters (llama.cpp's metrics) are the oracle for usage and for cancelled
decoding, so those tests run the app in a thread of this process, next to the engine; the tool
calls of Qwen2.5-Coder 0.5B go through a real `ponder serve` process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ponder.backends import LlamaCppBackend, LlamaCppConfig
from ponder.serve import ServedModel, Service, create_app, default_threads
from ponder.store import Store
from ponder.systems import SystemConfig
from tests._serve import ServeProcess, serve, serve_in_thread

pytestmark = pytest.mark.embedded

MODEL = "smollm2-135m"
ONE = {"name": "one", "layers": [{"type": "generate", "n": 1, "temperature": 0.0}]}
VOTE2 = {
    "name": "vote2",
    "layers": [{"type": "generate", "n": 2, "max_tokens": 8}, {"type": "vote"}],
}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LlamaCppBackend, Path]]:
    # The threads `ponder serve` gives an engine (with all cores, a busy machine stalls it for
    # seconds per token; see ponder.serve.default_threads).
    config = LlamaCppConfig(
        model=MODEL, n_parallel=4, ctx_per_sequence=1024, threads=default_threads()
    )
    backend = LlamaCppBackend(config)
    backend.start()
    db = tmp_path_factory.mktemp("serve-embedded") / "served.db"
    service = Service(
        [ServedModel(MODEL, backend, "llamacpp", MODEL)],
        [SystemConfig.from_data(ONE), SystemConfig.from_data(VOTE2)],
        db=db,
    )
    with serve_in_thread(create_app(service)) as url:
        yield url, backend, db


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)


def _counters(backend: LlamaCppBackend) -> tuple[float, float]:
    m = backend.metrics()
    return m["prompt_tokens_total"], m["tokens_predicted_total"]


def _ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_usage_equals_what_the_engine_counted(local: tuple[str, LlamaCppBackend, Path]) -> None:
    url, backend, db = local
    client = _client(url)
    cases: list[Any] = [
        lambda: (
            client.chat.completions.create(
                model=MODEL, messages=_ask("Name a colour."), max_tokens=8, temperature=0
            ).usage
        ),
        lambda: (
            list(
                client.chat.completions.create(
                    model=MODEL,
                    messages=_ask("Name a fruit."),
                    max_tokens=8,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )[-1].usage
        ),
        lambda: (
            client.chat.completions.create(model="vote2", messages=_ask("What is 2 + 3?")).usage
        ),
        lambda: client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=6).usage,
    ]
    for case in cases:
        before = _counters(backend)
        usage = case()
        after = _counters(backend)
        assert usage is not None
        assert usage.prompt_tokens == after[0] - before[0] > 0
        assert usage.completion_tokens == after[1] - before[1] > 0
    # What is stored is what was answered.
    with Store(db) as store:
        last = store.server_requests(limit=1)[0]
    assert (last.prompt_tokens, last.completion_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


def test_logprobs(local: tuple[str, LlamaCppBackend, Path]) -> None:
    url, _, _ = local
    reply = _client(url).chat.completions.create(
        model=MODEL, messages=_ask("Say hi."), max_tokens=4, logprobs=True, top_logprobs=2
    )
    tokens = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert tokens is not None and len(tokens) == reply.usage.completion_tokens  # type: ignore[union-attr]
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
    plain = _client(url).chat.completions.create(
        model=MODEL, messages=_ask("Say hi."), max_tokens=4, logprobs=True
    )
    assert all(t.top_logprobs == [] for t in plain.choices[0].logprobs.content)  # type: ignore[union-attr]


def test_streaming_is_real(local: tuple[str, LlamaCppBackend, Path]) -> None:
    url, _, _ = local
    client = _client(url)
    for model in (MODEL, "one"):
        start = time.perf_counter()
        first: float | None = None
        pieces = []
        stream = client.chat.completions.create(
            model=model,
            messages=_ask("Write a long story about a dragon who learns to bake bread."),
            max_tokens=200,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first if first is not None else time.perf_counter() - start
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        total = time.perf_counter() - start
        assert usage is not None and usage.completion_tokens >= 64
        assert len(pieces) >= 32  # token by token, not the answer at the end
        assert first is not None and first < 0.3 * total, (model, first, total)


def test_a_client_that_disconnects_stops_decoding(local: tuple[str, LlamaCppBackend, Path]) -> None:
    url, backend, db = local
    before = _counters(backend)[1]
    body = {
        "model": MODEL,
        "messages": _ask("Count from 1 to 500, one number per line."),
        "max_tokens": 400,
        "temperature": 0,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}) as r:
        seen = 0
        for line in r.iter_lines():
            seen += '"content":"' in line and '"content":""' not in line
            if seen >= 3:
                break
    closed = time.perf_counter()
    _stopped_within(backend, closed, 1.0)
    streamed = _counters(backend)[1] - before
    assert streamed < 400
    assert _last_status(db) == 499  # stored as "client closed request"
    # A plain (non-streamed) request is cancelled the same way when its client gives up.
    before = _counters(backend)[1]
    try:
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    except httpx.ReadTimeout:
        pass
    else:
        pytest.fail(f"answered before the client gave up: {r.status_code} {r.text[:500]}")
    _stopped_within(backend, time.perf_counter(), 1.0)
    assert _counters(backend)[1] - before < 400
    assert _last_status(db) == 499


def _last_status(db: Path) -> int:
    """The status of the request stored last (its record is written once its work has stopped)."""
    deadline = time.monotonic() + 10
    while True:
        with Store(db) as store:
            last = store.server_requests(limit=1)[0]
        if last.status == 499 or time.monotonic() > deadline:
            return last.status
        time.sleep(0.1)


def _stopped_within(backend: LlamaCppBackend, since: float, limit_s: float) -> None:
    """The engine has no request in progress within ``limit_s`` of ``since``.

    A poll's time is when it was sent: the engine answers it between two decoding steps, so on a
    busy machine its answer can come later than the state it reports.
    """
    while True:
        asked = time.perf_counter()
        if backend.metrics()["requests_processing"] == 0:
            break
        assert asked - since < limit_s, "the engine is still decoding"
        time.sleep(0.02)
    assert asked - since < limit_s, f"the engine stopped only {asked - since:.2f}s later"


# ----- tool calls on Qwen2.5-Coder 0.5B, through a real `ponder serve` process ------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
QUESTION = _ask("What is the weather in Paris? Use the tool.")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve-qwen")
    (tmp / "one.yaml").write_text(json.dumps(ONE))
    args = [
        "--model",
        "qwen2.5-coder-0.5b",
        "--system",
        str(tmp / "one.yaml"),
        "--db",
        str(tmp / "q.db"),
    ]
    with serve(args) as server:
        server.db = tmp / "q.db"  # type: ignore[attr-defined]
        yield server


def _check_call(calls: Any) -> Any:
    assert calls and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    return calls[0]


def test_tool_calls_round_trip_on_qwen(qwen: ServeProcess) -> None:
    client = _client(qwen.url)
    reply = client.chat.completions.create(
        model="qwen2.5-coder-0.5b",
        messages=QUESTION,
        tools=[WEATHER],
        temperature=0,
        max_tokens=40,  # type: ignore[list-item]
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    call = _check_call(reply.choices[0].message.tool_calls)
    # The result goes back through the model's own chat template (assistant call, tool turn).
    follow = client.chat.completions.create(
        model="qwen2.5-coder-0.5b",
        messages=[
            *QUESTION,
            reply.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees Celsius."},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        temperature=0,
        max_tokens=24,
    )
    assert follow.choices[0].message.content or follow.choices[0].message.tool_calls
    # Streamed, through the client's .stream() helper, and from a system whose last stage answers.
    with client.chat.completions.stream(
        model="one:qwen2.5-coder-0.5b",
        messages=QUESTION,
        tools=[WEATHER],
        temperature=0,
        max_tokens=40,  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_completion()
    _check_call(final.choices[0].message.tool_calls)
    trace_id = final.id.removeprefix("chatcmpl-")
    with Store(qwen.db) as store:  # type: ignore[attr-defined]
        record = store.server_request(trace_id)
    assert record.system == "one" and record.calls == 1 and record.trace is not None
