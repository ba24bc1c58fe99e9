"""The ``openai`` backend against real HTTP servers on 127.0.0.1.

The model server is llama.cpp's (the ``llama_server`` fixture). Server behaviours llama.cpp does not have
(rejecting n, 429/503, auth failures, slowness) come from small stdlib HTTP servers in this file that either
answer themselves or forward to llama.cpp; every request goes through the official ``openai`` client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import aclosing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from ponder.backends import (
    LlamaCppBackend,
    OpenAIBackend,
    OpenAIConfig,
    create_backend,
)
from ponder.backends._openai import _split_usage  # no public name: the heuristic itself is tested
from ponder.errors import BackendError, BackendRequestError
from ponder.records import (
    Generation,
    GenerationRequest,
    Message,
    NamedToolChoice,
    Prompt,
    SamplingParams,
    StreamDelta,
    ToolCall,
    ToolSpec,
)

Q = [Message(role="user", content="Name a colour.")]

# --------------------------------------------------------------------------------------------------------
# Test servers
# --------------------------------------------------------------------------------------------------------

Reply = tuple[int, dict[str, Any] | str, dict[str, str]]
"""(status, JSON body or raw text, extra headers) that a stub sends back."""

Handle = Callable[[int, str, dict[str, Any]], Reply | None]
"""(1-based request number, path, JSON body) -> a reply, or None to forward the request upstream."""


class Stub:
    """A real HTTP server on 127.0.0.1 (an ephemeral port, served from a thread).

    ``handle`` answers each POST or, returning None, has it forwarded to ``upstream``. The stub records the
    bodies and Authorization headers it received, the upstream's answers, and the peak number of requests
    in flight.
    """

    def __init__(self, handle: Handle, upstream: str | None = None, delay_s: float = 0.0) -> None:
        self.handle = handle
        self.upstream = upstream
        self.delay_s = delay_s
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.upstream_replies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def count(self) -> int:
        return len(self.bodies)

    def _respond(self, path: str, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            self.bodies.append(body)
            number = len(self.bodies)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            reply = self.handle(number, path, body)
            if reply is not None:
                status, payload, headers = reply
                raw = (
                    payload if isinstance(payload, str) else json.dumps(payload)
                )  # str: sent as is
                return status, raw.encode(), headers
            assert self.upstream is not None, "stub has nothing to forward to"
            r = httpx.post(self.upstream + path, json=body, timeout=120)
            if r.status_code == 200:
                with self._lock:
                    self.upstream_replies.append(r.json())
            return r.status_code, r.content, {}
        finally:
            with self._lock:
                self.in_flight -= 1

    def __enter__(self) -> Stub:
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with stub._lock:
                    stub.auth.append(self.headers.get("Authorization", ""))
                status, payload, headers = stub._respond(self.path, json.loads(raw))
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def error(status: int, message: str, **extra: Any) -> Reply:
    """An OpenAI-shaped error reply."""
    headers = {str(k): str(v) for k, v in extra.pop("headers", {}).items()}
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, **extra}}
    return status, body, headers


def chat_ok(n: int = 1, text: str = "Blue.") -> Reply:
    """A canned successful chat completion (one token per choice, with logprobs)."""
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": {"content": [{"token": text, "logprob": -0.5, "top_logprobs": []}]},
        }
        for i in range(n)
    ]
    usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": choices}
    return 200, {**body, "usage": usage}, {}


def backend(url: str, **kw: Any) -> OpenAIBackend:
    values: dict[str, Any] = {"base_url": url, "model": "smollm2", "backoff_base_s": 0.01, **kw}
    return OpenAIBackend(OpenAIConfig(**values))


def params(**kw: Any) -> SamplingParams:
    return SamplingParams(**{"temperature": 0.9, "max_tokens": 4, "seed": 7, **kw})


def generate(b: OpenAIBackend, prompt: Prompt, n: int, **kw: Any) -> Generation:
    """One generate call in its own event loop, closing the backend's client afterwards."""

    async def go() -> Generation:
        try:
            return await b.generate(prompt, n, params(**kw))
        finally:
            await b.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def llama(llama_server: str) -> Iterator[str]:
    """The llama.cpp server, warmed up (its first request is slow)."""
    httpx.post(
        llama_server + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1}, timeout=120
    )
    yield llama_server


# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


def test_config_normalises_url_and_registers() -> None:
    bare = OpenAIConfig(base_url="http://127.0.0.1:8000", model="m")
    assert bare.base_url == "http://127.0.0.1:8000/v1"
    assert OpenAIConfig(base_url="http://h:1/v1/", model="m").base_url == "http://h:1/v1"
    assert OpenAIConfig(base_url="https://h/api/v2", model="m").base_url == "https://h/api/v2"
    b = create_backend(bare)
    assert isinstance(b, OpenAIBackend)
    # Issue 16: the URL is no part of the identity (replicas); identity "url" keeps the old rule.
    assert b.identity == "openai:replicas:m"
    old = create_backend(OpenAIConfig(base_url="http://127.0.0.1:8000", model="m", identity="url"))
    assert old.identity == "openai:http://127.0.0.1:8000/v1:m"
    assert b.max_batch == 16
    with pytest.raises(ValidationError):
        OpenAIConfig(base_url="127.0.0.1:8000", model="m")
    with pytest.raises(ValidationError):
        OpenAIConfig(base_url="http://h/v1", model="m", api_key="x")  # type: ignore[call-arg]
    # A key pasted where the variable's name belongs is rejected without being echoed.
    with pytest.raises(ValidationError) as info:
        OpenAIConfig(base_url="http://h/v1", model="m", api_key_env="sk-live-abc123")
    assert "sk-live-abc123" not in str(info.value)


def test_split_usage_heuristic() -> None:
    # usage as a sum over choices (OpenAI, vLLM): the length choice takes max_tokens, the rest is shared.
    texts = ["a" * 40, "b" * 20, "c" * 40]
    assert _split_usage(texts, ["stop", "stop", "length"], 10 + 5 + 16, 16) == [10, 5, 16]
    # usage as one choice's count (llama.cpp with n > 1): a per-character rate applied to each text.
    assert _split_usage(texts[:2], ["stop", "stop"], 10, 16) == [13, 7]
    assert _split_usage(["x" * 30], ["stop"], 9, 16) == [9]
    assert _split_usage(["x", "y"], ["length", "stop"], None, 16) == [16, 0]


# --------------------------------------------------------------------------------------------------------
# A real server: llama.cpp
# --------------------------------------------------------------------------------------------------------


@pytest.mark.embedded  # the real llama.cpp server
def test_native_n_chat_counts_tokens_per_completion(llama: str) -> None:
    with Stub(lambda *_: None, upstream=llama) as proxy:
        g = generate(backend(proxy.url, n_mode="native"), Q, 4, max_tokens=10)
        g1 = generate(backend(proxy.url, n_mode="native"), Q, 1, max_tokens=10, seed=3)
    assert [b.get("n") for b in proxy.bodies] == [4, None]  # one request for all 4; n=1 is not sent
    assert len(g.completions) == 4
    for c in g.completions:
        assert 1 <= c.completion_tokens <= 10
        assert c.finish_reason in ("stop", "length")
        assert c.mean_logprob is not None and c.mean_logprob <= 0
        assert c.latency_s > 0
    # "length" means exactly max_tokens decoded
    assert all(c.completion_tokens == 10 for c in g.completions if c.finish_reason == "length")
    # llama.cpp's usage counts the first choice only when n > 1, and the only one when n = 1
    native_reply, single_reply = proxy.upstream_replies
    assert g.completions[0].completion_tokens == native_reply["usage"]["completion_tokens"]
    assert g1.completions[0].completion_tokens == single_reply["usage"]["completion_tokens"]
    assert g.prompt_tokens == native_reply["usage"]["prompt_tokens"] > 0
    assert g.latency_s > 0


@pytest.mark.embedded  # the real llama.cpp server
def test_raw_prompt_uses_completions_and_respects_stop(llama: str) -> None:
    with Stub(lambda *_: None, upstream=llama) as proxy:
        g = generate(
            backend(proxy.url), "1, 2, 3, 4,", 2, temperature=0.2, max_tokens=12, stop=(",",)
        )
    assert all(path_body.get("prompt") == "1, 2, 3, 4," for path_body in proxy.bodies)
    assert proxy.bodies[0]["stop"] == [","]
    assert len(g.completions) == 2
    for c in g.completions:
        assert "," not in c.text
        assert c.finish_reason == "stop"
        assert 1 <= c.completion_tokens < 12
        assert c.mean_logprob is not None  # legacy /completions logprobs are read too
    assert g.prompt_tokens > 0


@pytest.mark.embedded  # the real llama.cpp server
def test_messages_to_completions_endpoint_and_without_logprobs(llama: str) -> None:
    b = backend(llama, endpoint="completions", logprobs=False)
    g = generate(b, [Message(role="user", content="Q: What is 2 + 2?\nA:")], 3, max_tokens=8)
    assert len(g.completions) == 3
    for c in g.completions:
        assert c.mean_logprob is None
        # estimated from usage (see _split_usage): exact for "length", plausible otherwise
        assert 0 < c.completion_tokens <= 8
        assert c.finish_reason != "length" or c.completion_tokens == 8


def test_backend_reused_across_event_loops() -> None:
    with Stub(lambda _, __, body: chat_ok(body.get("n", 1))) as stub:
        b = backend(stub.url)
        first = asyncio.run(b.generate(Q, 2, params()))
        second = asyncio.run(b.generate(Q, 2, params()))
        asyncio.run(b.aclose())
    assert len(first.completions) == len(second.completions) == 2
    assert stub.count == 2


# --------------------------------------------------------------------------------------------------------
# Servers without n
# --------------------------------------------------------------------------------------------------------


def rejects_n(_: int, __: str, body: dict[str, Any]) -> Reply | None:
    return error(400, "n must be 1") if body.get("n", 1) > 1 else None


@pytest.mark.embedded  # the real llama.cpp server
def test_auto_falls_back_to_fanout_once(llama: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ponder.backends.openai")
    with Stub(rejects_n, upstream=llama) as proxy:
        b = backend(proxy.url)

        async def go() -> tuple[Generation, Generation]:
            first = await b.generate(Q, 3, params(seed=10))
            assert proxy.count == 1 + 3  # the rejected request, then one per completion
            second = await b.generate(Q, 2, params(seed=20))
            await b.aclose()
            return first, second

        first, second = asyncio.run(go())
    assert b.n_mode == "fanout"
    assert proxy.count == 1 + 3 + 2  # later calls go straight to fanout
    assert [x.get("n") for x in proxy.bodies[1:]] == [None] * 5
    assert sorted(x["seed"] for x in proxy.bodies[1:4]) == [10, 11, 12]
    assert sorted(x["seed"] for x in proxy.bodies[4:]) == [20, 21]
    assert [len(g.completions) for g in (first, second)] == [3, 2]
    for g in (first, second):
        assert all(c.completion_tokens > 0 and c.latency_s > 0 for c in g.completions)
    # each of the 3 requests evaluated the prompt
    assert first.prompt_tokens == sum(
        r["usage"]["prompt_tokens"] for r in proxy.upstream_replies[:3]
    )
    switches = [r for r in caplog.records if "one request per completion" in r.getMessage()]
    assert len(switches) == 1 and switches[0].levelno == logging.INFO


@pytest.mark.embedded  # the real llama.cpp server
def test_native_surfaces_n_rejection(llama: str) -> None:
    with Stub(rejects_n, upstream=llama) as proxy, pytest.raises(BackendRequestError) as info:
        generate(backend(proxy.url, n_mode="native"), Q, 3)
    assert proxy.count == 1
    assert info.value.status_code == 400
    assert "n must be 1" in str(info.value)
    assert info.value.hint is not None and "fanout" in info.value.hint


@pytest.mark.embedded  # the real llama.cpp server
def test_auto_fills_up_when_server_ignores_n(llama: str) -> None:
    def ignore_n(_: int, __: str, body: dict[str, Any]) -> Reply | None:
        body.pop("n", None)  # forwarded without n: one choice comes back
        return None

    with Stub(ignore_n, upstream=llama) as proxy:
        b = backend(proxy.url)
        g = generate(b, Q, 3, seed=5)
        with pytest.raises(BackendError, match="returned 1 completions for n=3"):
            generate(backend(proxy.url, n_mode="native"), Q, 3)
    assert len(g.completions) == 3
    assert b.n_mode == "fanout"
    assert proxy.bodies[0]["seed"] == 5
    assert sorted(x["seed"] for x in proxy.bodies[1:3]) == [6, 7]  # the missing completions 1 and 2


@pytest.mark.embedded  # the real llama.cpp server
def test_logprobs_rejection_disables_them(llama: str) -> None:
    def no_logprobs(_: int, __: str, body: dict[str, Any]) -> Reply | None:
        return error(400, "logprobs is not supported") if "logprobs" in body else None

    with Stub(no_logprobs, upstream=llama) as proxy:
        b = backend(proxy.url)

        async def go() -> Generation:
            g = await b.generate(Q, 2, params())
            await b.generate(Q, 2, params())
            await b.aclose()
            return g

        g = asyncio.run(go())
    assert not b.logprobs
    assert proxy.count == 3  # rejected once, then never asked again
    assert "logprobs" not in proxy.bodies[1] and "top_logprobs" not in proxy.bodies[1]
    assert all(0 < c.completion_tokens <= 4 and c.mean_logprob is None for c in g.completions)


# --------------------------------------------------------------------------------------------------------
# Retries and errors
# --------------------------------------------------------------------------------------------------------


@pytest.mark.embedded  # the real llama.cpp server
def test_retries_503_then_succeeds(llama: str) -> None:
    def flaky(number: int, _: str, __: dict[str, Any]) -> Reply | None:
        return error(503, "loading model") if number <= 2 else None

    with Stub(flaky, upstream=llama) as proxy:
        g = generate(backend(proxy.url), Q, 2)
    assert proxy.count == 3
    assert len(g.completions) == 2


def test_429_forever_exhausts_retries() -> None:
    reply = error(429, "slow down", headers={"Retry-After": "0"})
    with Stub(lambda *_: reply) as stub, pytest.raises(BackendError) as info:
        generate(backend(stub.url, max_retries=3), Q, 2)
    assert stub.count == 4
    assert not isinstance(info.value, BackendRequestError)
    assert "429" in str(info.value) and "4 attempts" in str(info.value)
    assert "slow down" in str(info.value)
    assert info.value.status_code == 429
    assert info.value.__cause__ is not None


def test_retry_after_is_honoured_and_capped() -> None:
    def once(number: int, _: str, __: dict[str, Any]) -> Reply:
        if number == 1:
            return error(429, "busy", headers={"Retry-After": "0.4"})
        if number == 2:
            return error(429, "busy", headers={"Retry-After": "3600"})
        return chat_ok()

    with Stub(once) as stub:
        b = backend(stub.url, backoff_base_s=0.0, backoff_max_s=0.5)
        waits: list[float] = []
        b.add_listener(lambda e: waits.append(e.wait_s) if e.kind == "retry" else None)
        generate(b, Q, 1)
    assert stub.count == 3
    assert waits == [0.4, 0.5]  # waited as asked, but never past backoff_max_s
    assert b.usage.retries == 2 and b.usage.requests == 1


@pytest.mark.parametrize("key_set", [True, False])
def test_401_is_not_retried_and_never_shows_the_key(
    key_set: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-5ecret-value-123"
    if key_set:
        monkeypatch.setenv("PONDER_TEST_KEY", secret)
    else:
        monkeypatch.delenv("PONDER_TEST_KEY", raising=False)
    # the server echoes the key it got, as some do
    echoed = secret if key_set else "EMPTY"
    reply = error(401, f"Incorrect API key provided: {echoed}")
    with Stub(lambda *_: reply) as stub, pytest.raises(BackendRequestError) as info:
        generate(backend(stub.url, api_key_env="PONDER_TEST_KEY"), Q, 2)
    assert stub.count == 1
    assert stub.auth == [f"Bearer {secret}" if key_set else "Bearer EMPTY"]
    text = f"{info.value}\n{info.value.hint}"
    assert info.value.status_code == 401
    assert "PONDER_TEST_KEY" in (info.value.hint or "")
    assert secret not in text and "5ecret" not in text
    assert ("not set" in text) is not key_set


def test_other_400_raised_at_once() -> None:
    msg = "This model's maximum context length is 2048 tokens"
    with Stub(lambda *_: error(400, msg)) as stub:
        b = backend(stub.url)
        with pytest.raises(BackendRequestError, match="maximum context length") as info:
            generate(b, Q, 2)
    assert stub.count == 1
    assert info.value.status_code == 400
    assert b.n_mode == "auto"  # not mistaken for a rejection of n


def test_404_and_422_are_not_retried() -> None:
    for status in (404, 422):
        reply = error(status, "nope")
        with Stub(lambda *_, r=reply: r) as stub, pytest.raises(BackendRequestError) as info:
            generate(backend(stub.url), Q, 1)
        assert stub.count == 1 and info.value.status_code == status


def test_timeout_is_retried() -> None:
    def slow_first(number: int, _: str, __: dict[str, Any]) -> Reply:
        if number == 1:
            time.sleep(1.0)
        return chat_ok()

    with Stub(slow_first) as stub:
        g = generate(backend(stub.url, timeout_s=0.3), Q, 1)
    assert stub.count == 2
    assert g.completions[0].text == "Blue."


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    with pytest.raises(BackendError, match=r"after 3 attempts; last error: connection failed"):
        generate(backend(f"http://127.0.0.1:{port}/v1", max_retries=2), Q, 1)


# --------------------------------------------------------------------------------------------------------
# Bounded concurrency
# --------------------------------------------------------------------------------------------------------


def test_concurrency_is_bounded_across_calls() -> None:
    with Stub(lambda *_: chat_ok(), delay_s=0.1) as stub:
        b = backend(stub.url, n_mode="fanout", max_concurrency=2)

        async def go() -> list[Generation]:
            single = await b.generate(Q, 6, params())
            assert stub.max_in_flight == 2
            both = await asyncio.gather(b.generate(Q, 3, params()), b.generate(Q, 3, params()))
            await b.aclose()
            return [single, *both]

        gens = asyncio.run(go())
    assert stub.count == 12
    assert stub.max_in_flight == 2
    assert [len(g.completions) for g in gens] == [6, 3, 3]
    assert gens[0].prompt_tokens == 6 * 7  # one prompt evaluation per request


# --------------------------------------------------------------------------------------------------------
# Tools, top logprobs, continuing a turn, streaming
# --------------------------------------------------------------------------------------------------------


def complete(b: OpenAIBackend, request: GenerationRequest) -> Generation:
    async def go() -> Generation:
        try:
            return await b.complete(request)
        finally:
            await b.aclose()

    return asyncio.run(go())


def test_tool_calls_go_out_and_come_back() -> None:
    call = {
        "id": "call_7",
        "type": "function",
        "function": {"name": "add", "arguments": '{"a": 2}'},
    }
    reply = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
    }
    earlier = ToolCall(id="call_1", name="add", arguments='{"a": 1}')
    prompt = [
        Message(role="user", content="Add."),
        Message(role="assistant", tool_calls=(earlier,)),
        Message(role="tool", tool_call_id="call_1", content="1"),
    ]
    tool = ToolSpec(
        name="add", parameters={"type": "object", "properties": {"a": {"type": "integer"}}}
    )
    request = GenerationRequest(
        prompt=prompt, params=params(), tools=(tool,), tool_choice=NamedToolChoice(name="add")
    )
    with Stub(lambda *_: (200, reply, {})) as stub:
        g = complete(backend(stub.url, logprobs=False), request)
    sent = stub.bodies[0]
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a": 1}'},
            }
        ],
    }
    assert sent["messages"][2] == {"role": "tool", "content": "1", "tool_call_id": "call_1"}
    assert sent["tools"][0]["function"]["name"] == "add"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    c = g.completions[0]
    assert c.finish_reason == "tool_calls" and c.text == ""
    assert c.tool_calls == (ToolCall(id="call_7", name="add", arguments='{"a": 2}'),)
    assert c.tool_calls[0].parsed_arguments() == {"a": 2}


@pytest.mark.embedded  # the real llama.cpp server
def test_continuing_a_turn_and_top_logprobs_over_http(llama: str) -> None:
    prefix = "The capital of France is"
    prompt = [
        Message(role="user", content="What is the capital of France?"),
        Message(role="assistant", content=prefix),
    ]
    request = GenerationRequest(
        prompt=prompt,
        params=params(temperature=0.0, max_tokens=6),
        continue_final_message=True,
        top_logprobs=2,
    )
    with Stub(lambda *_: None, upstream=llama) as proxy:
        c = complete(backend(proxy.url), request).completions[0]
    sent, answered = proxy.bodies[0], proxy.upstream_replies[0]
    assert sent["continue_final_message"] is True and sent["top_logprobs"] == 2
    echoed = answered["choices"][0]["message"]["content"]
    assert echoed.startswith(prefix)  # llama.cpp repeats the prefix...
    assert c.text == echoed[len(prefix) :] and c.text.strip()  # ...the completion does not
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
    assert "".join(t.token for t in c.logprobs) == c.text
    assert all(len(t.top) == 2 and t.top[0].token == t.token for t in c.logprobs)


def _idle(engine: LlamaCppBackend) -> float:
    """Tokens the engine has decoded so far, once it is processing nothing."""
    for _ in range(600):
        metrics = engine.metrics()
        if metrics["requests_processing"] == 0:
            return metrics["tokens_predicted_total"]
        time.sleep(0.05)
    raise AssertionError("the engine is still busy")


@pytest.mark.embedded  # the embedded engine's own llama.cpp HTTP server, whose counters we can read
def test_stream_over_http_matches_and_closing_it_stops_the_server(
    embedded: LlamaCppBackend,
) -> None:
    b = backend(embedded.base_url)
    short = GenerationRequest(prompt=Q, params=params(temperature=0.0, max_tokens=8))
    long = GenerationRequest(
        prompt="1, 2, 3, 4, 5, 6,", params=params(temperature=0.0, max_tokens=400)
    )

    async def go() -> tuple[Generation, list[StreamDelta], int, float]:
        whole = await b.complete(short)
        deltas = [d async for d in b.stream(short)]
        before = _idle(embedded)
        got = 0
        async with aclosing(b.stream(long)) as stream:
            async for _ in stream:
                got += 1
                if got == 3:
                    break
        await b.aclose()
        return whole, deltas, got, before

    whole, deltas, got, before = asyncio.run(go())
    assert "".join(d.text for d in deltas) == whole.completions[0].text
    assert [d.finish_reason for d in deltas if d.finish_reason] == [
        whole.completions[0].finish_reason
    ]
    # the final delta carries the server's usage, which the backend's usage sums
    assert sum(d.completion_tokens or 0 for d in deltas) == whole.completions[0].completion_tokens
    assert got == 3
    decoded = _idle(embedded) - before
    assert 3 <= decoded < 60  # of up to 400: the server stopped when the connection closed
    assert b.usage.requests == 3


def test_streamed_tool_call_fragments_are_joined() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    def fragment(**function: str) -> dict[str, Any]:
        return {"tool_calls": [{"index": 0, "function": function}]}

    first = {
        "tool_calls": [
            {"index": 0, "id": "call_3", "type": "function", "function": {"name": "add"}}
        ]
    }
    sse = "".join(
        [
            chunk({"role": "assistant", "content": None}),
            chunk(first),
            chunk(fragment(arguments='{"a"')),
            chunk(fragment(arguments=": 5}")),
            chunk({}, finish="tool_calls"),
            "data: [DONE]\n\n",
        ]
    )
    tool = ToolSpec(name="add")
    request = GenerationRequest(prompt=Q, params=params(), tools=(tool,), tool_choice="required")

    async def go(url: str) -> list[StreamDelta]:
        b = backend(url)
        try:
            return [d async for d in b.stream(request)]
        finally:
            await b.aclose()

    with Stub(lambda *_: (200, sse, {"Content-Type": "text/event-stream"})) as stub:
        deltas = asyncio.run(go(stub.url))
    assert stub.bodies[0]["stream"] is True and stub.bodies[0]["tool_choice"] == "required"
    last = deltas[-1]
    assert last.finish_reason == "tool_calls"
    assert last.tool_calls == (ToolCall(id="call_3", name="add", arguments='{"a": 5}'),)
    assert all(not d.tool_calls for d in deltas[:-1])


@pytest.mark.embedded  # the embedded engine's own llama.cpp HTTP server, whose counters we can read
def test_cancelling_a_streams_consumer_stops_the_server(embedded: LlamaCppBackend) -> None:
    b = backend(embedded.base_url)
    long = GenerationRequest(
        prompt="1, 2, 3, 4, 5, 6,", params=params(temperature=0.0, max_tokens=400)
    )
    seen: list[StreamDelta] = []

    async def consume() -> None:
        async for delta in b.stream(long):
            seen.append(delta)
            if len(seen) == 3:
                await asyncio.sleep(3600)  # cancelled from outside

    async def go() -> None:
        task = asyncio.create_task(consume())
        while len(seen) < 3:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.aclose()

    before = _idle(embedded)
    asyncio.run(go())
    assert 3 <= _idle(embedded) - before < 60  # of up to 400
    assert not any(d.finish_reason for d in seen)
