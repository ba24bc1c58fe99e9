"""The ``openai`` backend over several replicas of one model (issue 16, item 1).

Routing and failure handling run against real HTTP servers on 127.0.0.1 (the stdlib stubs of
test_backend_openai.py, through the official ``openai`` client); the rotation rules themselves against a
:class:`~ponder.backends.ReplicaSet` on a manual clock; one ``ponder sample`` run against two real
llama.cpp servers, one of them killed mid-run.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from ponder.backends import OpenAIBackend, OpenAIConfig, ReplicaSet, create_backend
from ponder.errors import BackendError, BackendRequestError
from ponder.records import Generation, GenerationRequest, Message, SamplingParams, StreamDelta
from ponder.runs import system_spec
from ponder.systems import System
from tests._fakes import arithmetic
from tests.test_backend_openai import Reply, Stub, chat_ok, error

Q = [Message(role="user", content="Name a colour.")]
PONDER = str(Path(sys.executable).parent / "ponder")


def replicas(*urls: str, **kw: Any) -> OpenAIBackend:
    values: dict[str, Any] = {
        "base_url": list(urls),
        "model": "m",
        "backoff_base_s": 0.01,
        "backoff_max_s": 5.0,
        **kw,
    }
    return OpenAIBackend(OpenAIConfig(**values))


def draw(b: OpenAIBackend, count: int) -> list[Generation]:
    """``count`` n=1 requests at once (the backend's concurrency bound applies), then close."""

    async def go() -> list[Generation]:
        try:
            params = SamplingParams(temperature=0.9, max_tokens=4, seed=7)
            return list(await asyncio.gather(*(b.generate(Q, 1, params) for _ in range(count))))
        finally:
            await b.aclose()

    return asyncio.run(go())


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    return f"http://127.0.0.1:{port}/v1"


def ok(*_: Any) -> Reply:
    return chat_ok()


# --------------------------------------------------------------------------------------------------------
# Config and identity
# --------------------------------------------------------------------------------------------------------


def test_a_list_of_urls_is_one_model_whatever_the_count() -> None:
    one = create_backend(OpenAIConfig(base_url="http://a:1", model="m"))
    three = create_backend(
        OpenAIConfig(base_url=["http://a:1", "http://b:2/v1/", "https://c/api"], model="m")
    )
    assert isinstance(three, OpenAIBackend)
    assert three.config.base_urls == ["http://a:1/v1", "http://b:2/v1", "https://c/api"]
    assert one.identity == three.identity == "openai:replicas:m"
    assert "http://b:2/v1" in three.name
    named = OpenAIConfig(base_url=["http://a:1"], model="m", replica_set="lab-a")
    assert create_backend(named).identity == "openai:replicas/lab-a:m"
    # identity "url" keeps the rule of stores made before replica sets; it needs exactly one URL.
    old = OpenAIConfig(base_url="http://a:1", model="m", identity="url")
    assert create_backend(old).identity == "openai:http://a:1/v1:m"
    with pytest.raises(ValidationError, match="identity 'url'"):
        OpenAIConfig(base_url=["http://a:1", "http://b:1"], model="m", identity="url")
    with pytest.raises(ValidationError, match="same URL twice"):
        OpenAIConfig(base_url=["http://a:1", "http://a:1/v1"], model="m")
    with pytest.raises(ValidationError, match="at least one"):
        OpenAIConfig(base_url=[], model="m")


# --------------------------------------------------------------------------------------------------------
# The rotation rules, on a manual clock
# --------------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_least_outstanding_with_round_robin_ties() -> None:
    rs = ReplicaSet(["a", "b", "c"], clock=Clock())
    first = [rs.acquire().url for _ in range(3)]
    assert first == ["a", "b", "c"]  # all idle: round robin
    b = rs.replicas[1]
    rs.release(b)  # b answered: it is the least busy now
    assert rs.acquire() is b
    assert [r.outstanding for r in rs.replicas] == [1, 1, 1]
    for r in rs.replicas:
        rs.release(r)
    assert [rs.acquire().url for _ in range(3)] == ["c", "a", "b"]  # the turn continues after b


def test_failing_replica_backs_off_exponentially_capped_and_is_probed_one_at_a_time() -> None:
    clock = Clock()
    rs = ReplicaSet(["a", "b"], backoff_base_s=1.0, backoff_max_s=3.0, clock=clock)
    a, b = rs.replicas
    periods = []
    for _ in range(4):
        got = rs.acquire()
        assert got is a  # a's turn (round robin after b), or its probe: b is idle too
        rs.release(a, error="HTTP 503: busy", down=True)
        periods.append(a.down_until - clock.now)
        assert rs.acquire() is b and rs.acquire() is b  # a is out: everything goes to b
        rs.release(b)
        rs.release(b)
        clock.now = a.down_until  # the back-off is over: a may be probed
    assert periods == [1.0, 2.0, 3.0, 3.0]  # doubling, capped
    probe = rs.acquire()
    assert probe is a and a.failures == 4
    assert rs.acquire() is b and rs.acquire() is b  # one probe at a time, though a is less busy
    rs.release(a)  # the probe answered: back in rotation, count reset
    assert a.failures == 0 and a.down_until == 0.0
    assert rs.acquire() is a


def test_a_server_asking_to_wait_stays_out_that_long_capped() -> None:
    clock = Clock()
    rs = ReplicaSet(["a", "b"], backoff_base_s=1.0, backoff_max_s=10.0, clock=clock)
    a = rs.acquire()
    rs.release(a, error="HTTP 429: slow down", down=True, at_least_s=5.0)
    assert a.down_until - clock.now == 5.0
    clock.now = a.down_until
    assert rs.acquire() is not a and rs.acquire() is a  # b's turn, then a's probe
    rs.release(a, error="HTTP 429: slow down", down=True, at_least_s=600.0)
    assert a.down_until - clock.now == 10.0


def test_every_replica_out_raises_with_the_wait_and_each_last_error() -> None:
    clock = Clock()
    rs = ReplicaSet(["a", "b"], backoff_base_s=2.0, clock=clock)
    rs.release(rs.acquire(), error="HTTP 503: loading", down=True)
    clock.now += 0.5
    rs.release(rs.acquire(), error="connection failed: refused", down=True)
    with pytest.raises(Exception, match="every replica") as info:
        rs.acquire()
    assert info.value.wait_s == pytest.approx(1.5)  # type: ignore[attr-defined]  # a is back first
    assert "a: out 1.5s, last error: HTTP 503: loading" in str(info.value)
    assert "b: out 2.0s, last error: connection failed: refused" in str(info.value)
    # A request that is not retryable elsewhere (a 400) leaves the replica in rotation.
    clock.now += 5
    rs.release(rs.acquire(), error="HTTP 400: bad", down=False)
    assert all(r.down_until <= clock.now for r in rs.replicas)


# --------------------------------------------------------------------------------------------------------
# Over HTTP
# --------------------------------------------------------------------------------------------------------


def test_requests_spread_by_least_outstanding() -> None:
    stubs = [Stub(ok, delay_s=0.3) for _ in range(3)]
    with stubs[0], stubs[1], stubs[2]:
        gens = draw(replicas(*(s.url for s in stubs), max_concurrency=6), 18)
    assert len(gens) == 18 and all(g.completions[0].text == "Blue." for g in gens)
    counts = [s.count for s in stubs]
    assert sum(counts) == 18
    # Six in flight over three replicas: least outstanding never gives one a third while another
    # has fewer than two (the servers count a request as done before the client does).
    assert max(s.max_in_flight for s in stubs) == 2
    assert min(counts) >= 3


def test_a_slow_replica_gets_less_work() -> None:
    fast, slow = Stub(ok, delay_s=0.02), Stub(ok, delay_s=0.6)
    with fast, slow:
        draw(replicas(fast.url, slow.url, max_concurrency=2), 16)
    assert fast.count + slow.count == 16
    assert slow.max_in_flight == 1
    assert fast.count >= 3 * slow.count


def test_a_503_replica_is_taken_out_and_probed_again_after_its_back_off() -> None:
    down = {"now": True}

    def flaky(*_: Any) -> Reply:
        return error(503, "overloaded") if down["now"] else chat_ok()

    bad, good = Stub(flaky), Stub(ok)
    with bad, good:
        b = replicas(bad.url, good.url, replica_backoff_base_s=3.0, max_retries=2)

        async def sequential(count: int) -> list[Generation]:
            params = SamplingParams(max_tokens=4, seed=1)
            return [await b.generate(Q, 1, params) for _ in range(count)]

        async def scenario() -> None:
            try:
                await sequential(5)  # the first goes to bad (its turn), fails, is retried on good
                assert (bad.count, good.count) == (1, 5)
                assert b.usage.retries == 1 and b.usage.failures == 0
                down["now"] = False
                await asyncio.sleep(3.1)  # bad's back-off ends
                await sequential(4)  # a probe goes to bad, answers, and bad is back in rotation
                assert bad.count >= 3
                assert b.replicas.replicas[0].failures == 0
            finally:
                await b.aclose()

        asyncio.run(scenario())


def test_a_429_goes_elsewhere_at_once_and_its_replica_waits_what_it_asked() -> None:
    def slow_down(number: int, *_: Any) -> Reply:
        return error(429, "slow down", headers={"Retry-After": "30"}) if number == 1 else chat_ok()

    limited, good = Stub(slow_down), Stub(ok)
    with limited, good:
        b = replicas(limited.url, good.url, replica_backoff_base_s=0.01)
        events: list[Any] = []
        b.add_listener(events.append)
        for _ in range(4):
            draw(b, 1)
    assert (limited.count, good.count) == (1, 4)
    retries = [e for e in events if e.kind == "retry"]
    assert len(retries) == 1 and retries[0].wait_s == 0.0  # not the 30 s the one server asked
    assert b.replicas.replicas[0].down_until - time.monotonic() > 20


@pytest.mark.parametrize(
    "reply", [error(401, "bad key"), error(400, "bad request")], ids=["401", "400"]
)
def test_auth_and_bad_request_errors_are_not_retried_on_another_replica(reply: Reply) -> None:
    refusing, good = Stub(lambda *_: reply), Stub(ok)
    with refusing, good, pytest.raises(BackendRequestError) as info:
        draw(replicas(refusing.url, good.url, max_retries=5), 1)
    assert (refusing.count, good.count) == (1, 0)
    assert f"HTTP {reply[0]}" in str(info.value)


def test_all_replicas_down_fails_naming_each_and_its_last_error() -> None:
    busy, gone = Stub(lambda *_: error(503, "overloaded")), dead_url()
    with busy, pytest.raises(BackendError) as info:
        draw(replicas(busy.url, gone, max_retries=4, replica_backoff_base_s=0.05), 1)
    message = str(info.value)
    assert "failed after 5 attempts" in message
    assert f"{busy.url}: " in message and "HTTP 503: overloaded" in message
    assert f"{gone}: " in message and "connection failed" in message
    assert busy.count >= 2  # waited for it to come back, then tried it again


def test_when_every_replica_is_out_the_request_waits_for_the_first_back() -> None:
    def fails_first(number: int, *_: Any) -> Reply:
        return error(503, "warming up") if number == 1 else chat_ok()

    a, b = Stub(fails_first), Stub(fails_first)
    with a, b:
        start = time.perf_counter()
        backend = replicas(a.url, b.url, max_retries=3, replica_backoff_base_s=0.4)
        gens = draw(backend, 1)
        waited = time.perf_counter() - start
    assert gens[0].completions[0].text == "Blue."
    assert a.count + b.count == 3 and backend.usage.retries == 2
    assert waited >= 0.35  # the third attempt waited for a replica's back-off to end


# --------------------------------------------------------------------------------------------------------
# A real run on two real llama.cpp servers, one killed mid-run
# --------------------------------------------------------------------------------------------------------

_SERVER = """
import sys, time, xllamacpp
p = xllamacpp.CommonParams()
p.model.path = sys.argv[1]
p.n_parallel = 4
p.n_ctx = 4096
p.kv_unified = True
p.cpuparams.n_threads = 1
p.cpuparams_batch.n_threads = 1
p.verbosity = -1
p.warmup = False
s = xllamacpp.Server(p)
print(str(s.listening_address).rstrip("/"), flush=True)
while True:
    time.sleep(60)
"""


@pytest.fixture
def second_server(smollm2_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A second real llama.cpp server, in its own process so that the test can kill it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(smollm2_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _decoding(url: str) -> bool:
    """Whether llama.cpp's server at ``url`` is decoding a request now (its ``/slots`` say so)."""
    slots = httpx.get(url + "/slots", timeout=10).json()
    return any(slot.get("is_processing") for slot in slots)


@pytest.mark.embedded
def test_sample_over_two_real_servers_survives_one_killed_mid_run(
    llama_server: str, second_server: subprocess.Popen[str], tmp_path: Path
) -> None:
    assert second_server.stdout is not None
    other = second_server.stdout.readline().strip()
    assert other.startswith("http://127.0.0.1:")
    db, data = tmp_path / "r.db", tmp_path / "q.jsonl"
    data.write_text(
        "".join(
            json.dumps({"question": f"What is {i}+{i}?", "answer": str(2 * i)}) + "\n"
            for i in range(8)
        )
    )
    common = ["sample", "--backend", "openai", "--model", "smollm2", "--task", "jsonl"]
    common += ["--data", str(data), "--n", "4", "--max-tokens", "8", "--no-verify"]
    common += ["--n-mode", "fanout", "--concurrency", "4", "--db", str(db), "--json"]
    env = {**os.environ, "PONDER_THREADS": "1", "COLUMNS": "200"}
    run = subprocess.Popen(
        [PONDER, *common, "--base-url", llama_server, "--base-url", other],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 240
    while not _decoding(other) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.poll() is None, "the run ended before the second server got a request"
    # SIGKILL while it decodes a request of the run: that connection drops, new ones are refused.
    second_server.kill()
    second_server.wait(timeout=30)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    report = json.loads(out)["sampling"]
    assert report["drawn"] == 32
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT problem_id || ':' || idx) FROM samples"
        )
        assert rows.fetchone() == (32, 32)  # every sample once
    # One server serves the same model: by the identity rule, the same run, already complete.
    again = subprocess.run(
        [PONDER, *common, "--base-url", llama_server],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)["sampling"]
    assert second["run_id"] == report["run_id"] and second["drawn"] == 0


# --------------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------------


def _answers(_: int, __: str, body: dict[str, Any]) -> Reply:
    return chat_ok(int(body.get("n", 1)), text="4")


def ponder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PONDER, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_repeated_base_url_makes_the_same_run_as_one(tmp_path: Path) -> None:
    db, data = tmp_path / "c.db", tmp_path / "q.jsonl"
    data.write_text('{"question": "What is 2+2?", "answer": "4"}\n')
    common = ["sample", "--backend", "openai", "--model", "m", "--task", "jsonl"]
    common += ["--data", str(data), "--no-verify", "--db", str(db), "--json"]
    a, b = Stub(_answers), Stub(_answers)
    with a, b:
        both = ponder(
            *common, "--n", "4", "--n-mode", "fanout", "--base-url", a.url, "--base-url", b.url
        )
        assert both.returncode == 0, both.stderr
        assert a.count >= 1 and b.count >= 1 and a.count + b.count == 4
        one = ponder(*common, "--n", "6", "--base-url", b.url)  # extends the same run
        assert one.returncode == 0, one.stderr
        first, second = (json.loads(r.stdout)["sampling"] for r in (both, one))
        assert first["run_id"] == second["run_id"]
        assert (second["already_present"], second["drawn"]) == (4, 2)
        # --model-identity url: the rule of stores made before replicas (another run).
        old = ponder(*common, "--n", "1", "--base-url", a.url, "--model-identity", "url")
        assert old.returncode == 0, old.stderr
        assert json.loads(old.stdout)["sampling"]["run_id"] != first["run_id"]
        bad = ponder(*common, "--base-url", a.url, "--base-url", b.url, "--model-identity", "url")
        assert bad.returncode == 2 and "--model-identity" in bad.stderr
    runs = json.loads(ponder("runs", "--db", str(db), "--json").stdout)
    assert sorted(r["model"] for r in runs) == sorted(["openai:replicas:m", f"openai:{a.url}:m"])
    local = ponder("sample", "--task", "gsm8k", "--limit", "1", "--model-identity", "url")
    assert local.returncode == 2 and "--model-identity does not apply" in local.stderr


def test_a_system_run_over_replicas_is_the_same_run_as_over_one() -> None:
    config = Path(__file__).resolve().parent.parent / "configs" / "sample-8-vote.yaml"

    def run_model(**spec: Any) -> str:
        system = System.load(config, model={"backend": "openai", "model": "m", **spec})
        return system_spec(system, arithmetic(1)).model

    one = run_model(base_url="http://a:1/v1")
    assert run_model(base_url=["http://b:2/v1", "http://c:3/v1"]) == one
    assert run_model(base_url="http://a:1/v1", model="other") != one
    assert run_model(base_url="http://a:1/v1", replica_set="lab-b") != one
    # identity "url": the URL names the run again.
    url_a = run_model(base_url="http://a:1/v1", identity="url")
    assert url_a != one and run_model(base_url="http://b:2/v1", identity="url") != url_a


def test_ponder_run_takes_model_identity_for_openai_only(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parent.parent / "configs" / "sample-8-vote.yaml"
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "What is 2+2?", "answer": "4"}\n')
    common = ["run", "--system", str(config), "--task", "jsonl", "--data", str(data)]
    common += ["--db", str(tmp_path / "r.db"), "--json", "--no-baseline"]
    runs = []
    with Stub(_answers) as stub:
        for extra in ([], ["--model-identity", "url"]):
            done = ponder(
                *common, "--backend", "openai", "--model", "m", "--base-url", stub.url, *extra
            )
            assert done.returncode == 0, done.stderr
            runs.append(json.loads(done.stdout)["system"]["run"])
    assert runs[0] != runs[1]  # the URL names the second run, as before replicas
    bad = ponder(*common, "--model-identity", "url")
    assert bad.returncode == 2 and "--model-identity is for --backend openai" in bad.stderr


def test_serve_passes_replicas_to_the_openai_backend() -> None:
    from ponder.serve import load_service

    urls = ["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"]
    service = load_service(["m"], backend="openai", base_url=urls)
    backend = service.models["m"].backend
    assert isinstance(backend, OpenAIBackend)
    assert backend.config.base_urls == urls and backend.identity == "openai:replicas:m"
    single = load_service(["m"], backend="openai", base_url=urls[0]).models["m"].backend
    assert single.identity == backend.identity


def _sse(text: str) -> Reply:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        return f"data: {json.dumps({**body, 'choices': [choice]})}\n\n"

    sse = chunk({"role": "assistant", "content": text}) + chunk({}, "stop") + "data: [DONE]\n\n"
    return 200, sse, {"Content-Type": "text/event-stream"}


def test_a_stream_goes_to_another_replica_when_its_first_fails() -> None:
    busy, good = Stub(lambda *_: error(503, "overloaded")), Stub(lambda *_: _sse("Green."))
    with busy, good:
        b = replicas(busy.url, good.url, max_retries=2)
        request = GenerationRequest(prompt=Q, params=SamplingParams(max_tokens=4, seed=3))

        async def go() -> list[StreamDelta]:
            try:
                streams = [[d async for d in b.stream(request)] for _ in range(3)]
                async with aclosing(b.stream(request)) as early:
                    async for _ in early:
                        break  # the consumer leaves after one delta: the replica is released
                return [d for s in streams for d in s]
            finally:
                await b.aclose()

        deltas = asyncio.run(go())
    assert "".join(d.text for d in deltas) == "Green." * 3
    assert (busy.count, good.count) == (1, 4)  # out of rotation after its one failure
    assert [r.outstanding for r in b.replicas.replicas] == [
        0,
        0,
    ]  # every stream released its replica
