"""`ponder serve` through the official openai client against a real server process on 127.0.0.1.

Models here are scripted (deterministic logic: names, systems, usage, errors, limits, storing); the
embedded model's end-to-end path is in test_serve_embedded.py. One server process per configuration.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ponder.store import Store
from tests._serve import ServeProcess, serve

SECRET = "sk-upstreamsecret0123456789"
KEYS = ("k-alpha", "k-beta")
TOOL_JSON = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _model(name: str, **options: Any) -> str:
    return json.dumps({"backend": "scripted", "name": name, **options})


VOTE = """
name: vote3
description: three samples and a vote
layers:
  - type: generate
    n: 3
    max_tokens: 50
  - type: vote
"""
ONE = """
name: one
layers:
  - type: generate
    n: 1
    temperature: 0.5
"""


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "vote.yaml").write_text(VOTE)
    (tmp / "one.yaml").write_text(ONE)
    (tmp / "keys.txt").write_text(f"# keys\n{KEYS[0]}\n\n{KEYS[1]}\n")
    args = [
        "--model", _model("echo", choices=["The answer is 4", "The answer is 5"]),
        "--model", _model("slow", outputs=["slow answer"], delay_s=1.5),
        "--model", _model("tool", outputs=[TOOL_JSON]),
        "--model", _model("think", outputs=["<think>17 * 23 = 391</think>\n\nThe answer is 391"]),
        "--model", json.dumps(
            {"backend": "openai", "model": "dead", "base_url": "http://127.0.0.1:9/v1",
             "max_retries": 0, "api_key_env": "UPSTREAM_KEY"}
        ),
        "--system", str(tmp / "vote.yaml"),
        "--system", str(tmp / "one.yaml"),
        "--api-key-file", str(tmp / "keys.txt"),
        "--db", str(tmp / "served.db"),
        "--max-n", "4", "--max-tokens", "100", "--max-body-bytes", "20000", "--per-key", "1",
    ]  # fmt: skip
    with serve(args, env={"UPSTREAM_KEY": SECRET}) as server:
        server.db = tmp / "served.db"  # type: ignore[attr-defined]
        yield server


def _client(server: ServeProcess, key: str = KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def _ask(content: str = "What is 2 + 2?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def _stored(server: ServeProcess, trace_id: str) -> Any:
    with Store(server.db) as store:  # type: ignore[attr-defined]
        return store.server_request(trace_id)


# ----- names, systems, usage, traces ----------------------------------------------------------------


def test_models_lists_every_name_that_works(main: ServeProcess) -> None:
    ids = [m.id for m in _client(main).models.list()]
    assert ids[:2] == ["vote3", "one"]
    assert {"vote3:echo", "one:tool", "echo", "slow", "tool", "think", "dead"} <= set(ids)
    client = _client(main)
    for name in ("vote3", "vote3:think", "echo"):
        reply = client.chat.completions.create(model=name, messages=_ask(), max_tokens=20)
        assert reply.choices[0].message.content
    health = httpx.get(f"{main.url}/health").json()  # no key needed
    assert health["status"] == "ok" and health["models"] == ids


def test_passthrough_chat_n_usage_trace_id_and_storing(main: ServeProcess) -> None:
    raw = _client(main).chat.completions.with_raw_response.create(
        model="echo", messages=_ask(), n=3, seed=5
    )
    reply = raw.parse()
    trace_id = raw.headers["x-ponder-trace-id"]
    assert reply.ponder == {"trace_id": trace_id, "model": "echo", "calls": 1}  # type: ignore[attr-defined]
    assert reply.id == f"chatcmpl-{trace_id}"
    texts = [c.message.content for c in reply.choices]
    assert len(texts) == 3 and set(texts) <= {"The answer is 4", "The answer is 5"}
    # The scripted backend counts words: 4 per answer, 6 in the prompt "user: What is 2 + 2?".
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6, 12)
    record = _stored(main, trace_id)
    assert record.status == 200 and record.system is None and record.trace is None
    assert (record.prompt_tokens, record.completion_tokens, record.calls) == (6, 12, 1)
    assert (
        record.request["n"] == 3 and record.response["choices"][2]["message"]["content"] == texts[2]
    )


def test_completions_endpoint(main: ServeProcess) -> None:
    client = _client(main)
    plain = client.completions.create(model="echo", prompt="2 + 2 =", max_tokens=10, seed=1)
    assert plain.choices[0].text in ("The answer is 4", "The answer is 5")
    assert plain.usage is not None and plain.usage.prompt_tokens == 4  # 2, +, 2, =
    system = client.completions.create(model="vote3", prompt="2 + 2 =", max_tokens=10)
    assert system.choices[0].text.startswith("The answer is")
    assert system.usage is not None and system.usage.completion_tokens == 12  # 3 samples


def test_system_by_name_by_pair_and_by_extra_body(main: ServeProcess) -> None:
    client = _client(main)
    by_name = client.chat.completions.create(model="vote3", messages=_ask(), seed=3)
    by_pair = client.chat.completions.create(model="vote3:echo", messages=_ask(), seed=3)
    by_body = client.chat.completions.create(
        model="echo", messages=_ask(), seed=3, extra_body={"ponder": {"system": "vote3"}}
    )
    for reply in (by_name, by_pair, by_body):
        assert reply.ponder["system"] == "vote3"  # type: ignore[attr-defined]
        assert reply.ponder["calls"] == 1  # type: ignore[attr-defined]
        assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert by_name.choices[0].message.content == by_pair.choices[0].message.content
    assert by_pair.choices[0].message.content == by_body.choices[0].message.content
    # The voted answer is the majority of the stored trace's candidates.
    trace = _stored(main, by_name.ponder["trace_id"]).parsed_trace()  # type: ignore[attr-defined]
    texts = [c.text for c in trace.candidates]
    assert len(texts) == 3
    assert texts.count(by_name.choices[0].message.content) >= 2


def test_overrides_and_an_inline_config(main: ServeProcess) -> None:
    client = _client(main)
    two = client.chat.completions.create(
        model="vote3", messages=_ask(), extra_body={"ponder": {"overrides": {"layers.0.n": 2}}}
    )
    assert two.usage is not None and two.usage.completion_tokens == 8
    inline = {
        "name": "mine",
        "layers": [{"type": "generate", "n": 4, "model": "think"}, {"type": "vote"}],
    }
    reply = client.chat.completions.create(
        model="echo", messages=_ask(), extra_body={"ponder": {"system": inline}}
    )
    assert reply.ponder["system"] == "mine"  # type: ignore[attr-defined]
    assert reply.choices[0].message.content == "The answer is 391"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="vote3", messages=_ask(), extra_body={"ponder": {"overrides": {"layers.0.nn": 2}}}
        )
    assert "nn" in bad.value.message and bad.value.body["param"] == "ponder.overrides"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(
            model="echo", messages=_ask(), extra_body={"ponder": {"sytem": "vote3"}}
        )
    assert unknown.value.body["param"] == "ponder.sytem"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as unserved:
        client.chat.completions.create(
            model="echo",
            messages=_ask(),
            extra_body={"ponder": {"system": {"layers": [{"type": "generate", "model": "qwen9"}]}}},
        )
    assert "qwen9" in unserved.value.message and "not served" in unserved.value.message


def test_n_runs_the_system_n_times_and_usage_sums_every_call(main: ServeProcess) -> None:
    reply = _client(main).chat.completions.create(model="vote3", messages=_ask(), n=2, seed=1)
    assert len(reply.choices) == 2
    assert reply.ponder["calls"] == 2  # type: ignore[attr-defined]
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 24)


def test_request_params_reach_the_final_generation(main: ServeProcess) -> None:
    client = _client(main)
    reply = client.chat.completions.create(
        model="one", messages=_ask(), max_tokens=3, temperature=0.0, stop=["is"]
    )
    trace = _stored(main, reply.ponder["trace_id"]).parsed_trace()  # type: ignore[attr-defined]
    params = trace.events[0].calls[0].params
    assert (params.max_tokens, params.temperature, params.stop) == (3, 0.0, ("is",))
    # The scripted answer is cut to 3 words, then at the stop sequence.
    assert reply.choices[0].message.content == "The answer "
    assert reply.choices[0].finish_reason == "stop"


def test_multi_turn_reaches_the_system_intact(main: ServeProcess) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21C"},
        {"role": "assistant", "content": "Sunny."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "tomorrow?"}],
        },
    ]
    reply = _client(main).chat.completions.create(model="one", messages=messages)  # type: ignore[arg-type]
    query = _stored(main, reply.ponder["trace_id"]).parsed_trace().query  # type: ignore[attr-defined]
    assert [m.role for m in query] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert query[2].tool_calls[0].name == "get_weather" and query[3].tool_call_id == "c1"
    assert query[5].content == "And tomorrow?"
    # What the model was sent is the same conversation (the component adds nothing for n=1).
    sent = _stored(main, reply.ponder["trace_id"]).parsed_trace().events[0].calls[0].prompt  # type: ignore[attr-defined]
    assert [m.content for m in sent] == [m.content for m in query]


# ----- streaming ------------------------------------------------------------------------------------


def test_streaming_passthrough_with_usage(main: ServeProcess) -> None:
    chunks = list(
        _client(main).chat.completions.create(
            model="echo", messages=_ask(), n=2, stream=True, stream_options={"include_usage": True}
        )
    )
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert set(texts.values()) <= {"The answer is 4", "The answer is 5"}
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop", "stop"]
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 8
    record = _stored(main, chunks[0].id.removeprefix("chatcmpl-"))
    assert record.completion_tokens == 8 and record.response["choices"][1]["message"]["content"]


def test_streaming_a_system_shows_progress_then_the_answer(main: ServeProcess) -> None:
    chunks = list(
        _client(main).chat.completions.create(model="vote3", messages=_ask(), stream=True)
    )
    progress = [c.ponder["progress"] for c in chunks if not c.choices and c.ponder.get("progress")]  # type: ignore[attr-defined]
    assert [(p["event"], p["layer"]) for p in progress] == [
        ("layer_start", 0), ("layer_end", 0), ("layer_start", 1), ("layer_end", 1)
    ]  # fmt: skip
    assert progress[1]["candidates"] == 3 and progress[0]["components"] == ["generate"]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.startswith("The answer is")
    quiet = list(
        _client(main).chat.completions.create(
            model="vote3", messages=_ask(), stream=True, extra_body={"ponder": {"progress": False}}
        )
    )
    assert all(c.choices for c in quiet)


def test_streaming_n_runs_of_a_system(main: ServeProcess) -> None:
    chunks = list(
        _client(main).chat.completions.create(model="vote3", messages=_ask(), n=2, stream=True)
    )
    texts: dict[int, str] = {0: "", 1: ""}
    finishes = []
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes.append(choice.index)
    assert all(t.startswith("The answer is") for t in texts.values())
    assert sorted(finishes) == [0, 1]


def test_completions_stream(main: ServeProcess) -> None:
    chunks = list(_client(main).completions.create(model="one:think", prompt="hi", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices).endswith("The answer is 391")


# ----- tool calls and reasoning ---------------------------------------------------------------------


def test_tool_calls_round_trip_passthrough_and_system(main: ServeProcess) -> None:
    client = _client(main)
    for model in ("tool", "one:tool"):
        reply = client.chat.completions.create(
            model=model,
            messages=_ask("Weather in Paris?"),
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        call = choice.message.tool_calls[0]  # type: ignore[index]
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        # The call goes back with its result, as an agent loop does.
        follow = client.chat.completions.create(
            model=model,
            messages=[
                *_ask("Weather in Paris?"),
                choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
            ],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
        assert follow.choices[0].message.tool_calls
    # With tool_choice "none" the text stays text.
    none = client.chat.completions.create(
        model="tool",
        messages=_ask(),
        tools=[WEATHER_TOOL],
        tool_choice="none",  # type: ignore[list-item]
    )
    assert none.choices[0].message.content == TOOL_JSON and not none.choices[0].message.tool_calls


def test_tool_choice_required_and_named_are_honoured(main: ServeProcess) -> None:
    client = _client(main)
    adder = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        reply = client.chat.completions.create(
            model="one:tool",
            messages=_ask(),
            tools=[WEATHER_TOOL, adder],
            tool_choice=choice,  # type: ignore[list-item,arg-type]
        )
        assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
        # The model is told that it must call a tool.
        trace = _stored(main, reply.ponder["trace_id"]).parsed_trace()  # type: ignore[attr-defined]
        assert "You must answer with a call of" in trace.events[0].calls[0].prompt[0].content
    # A model that answers in prose where a call is required: an error, never a silent answer.
    with pytest.raises(openai.InternalServerError) as prose:
        client.chat.completions.create(
            model="echo",
            messages=_ask(),
            tools=[WEATHER_TOOL],
            tool_choice="required",  # type: ignore[list-item]
        )
    assert "did not call a tool" in prose.value.message
    with pytest.raises(openai.InternalServerError) as other:
        client.chat.completions.create(
            model="tool",
            messages=_ask(),
            tools=[WEATHER_TOOL, adder],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "add"}},
        )
    assert "did not call the tool 'add'" in other.value.message


def test_tool_calls_streamed_and_through_the_stream_helper(main: ServeProcess) -> None:
    client = _client(main)
    for model in ("tool", "one:tool"):
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=_ask(),
                tools=[WEATHER_TOOL],
                stream=True,  # type: ignore[list-item]
            )
        )
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
        assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        with client.chat.completions.stream(
            model=model,
            messages=_ask(),
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        ) as stream:
            final = stream.get_final_completion()
        call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_reasoning_content(main: ServeProcess) -> None:
    client = _client(main)
    for model in ("think", "one:think"):
        message = client.chat.completions.create(model=model, messages=_ask()).choices[0].message
        assert message.content == "The answer is 391"
        assert message.reasoning_content == "17 * 23 = 391"  # type: ignore[attr-defined]
        chunks = list(client.chat.completions.create(model=model, messages=_ask(), stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert "".join(d.content or "" for d in deltas).strip() == "The answer is 391"
        assert (
            "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "17 * 23 = 391"
        )
    # Votes see answers without the reasoning: four identical answers win.
    inline = {
        "name": "v",
        "layers": [{"type": "generate", "n": 4, "model": "think"}, {"type": "vote"}],
    }
    reply = client.chat.completions.create(
        model="echo", messages=_ask(), extra_body={"ponder": {"system": inline}}
    )
    assert reply.choices[0].message.reasoning_content == "17 * 23 = 391"  # type: ignore[attr-defined]
    # Judges (and rankers, critics, fusers) see the answers without the reasoning.
    judged = {
        "name": "j",
        "layers": [
            {"type": "generate", "n": 2, "model": "think"},
            {"type": "judge", "mode": "score", "top_k": 1, "model": "echo", "repair_retries": 0},
        ],
    }
    reply = client.chat.completions.create(
        model="echo", messages=_ask(), extra_body={"ponder": {"system": judged}}
    )
    trace = _stored(main, reply.ponder["trace_id"]).parsed_trace()  # type: ignore[attr-defined]
    judge_prompts = [str(call.prompt) for call in trace.events[1].calls]
    assert judge_prompts and all("The answer is 391" in p for p in judge_prompts)
    assert not any("17 * 23" in p for p in judge_prompts)


# ----- errors and limits ----------------------------------------------------------------------------


def test_auth(main: ServeProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as wrong:
        _client(main, "wrong").models.list()
    assert wrong.value.status_code == 401
    for headers in ({}, {"Authorization": "Basic k-alpha"}, {"Authorization": "Bearer k-alph"}):
        bare = httpx.post(
            f"{main.url}/v1/chat/completions",
            json={"model": "echo", "messages": _ask()},
            headers=headers,
        )
        assert bare.status_code == 401
        assert bare.json()["error"]["type"] == "authentication_error"
    assert _client(main, KEYS[1]).models.list().data
    assert httpx.get(f"{main.url}/health").status_code == 200


def test_the_browser_view_is_served_with_the_same_keys(main: ServeProcess) -> None:
    """`ponder serve` mounts /ui on its database; keys guard it through a login, not Bearer."""
    answered = _client(main).chat.completions.with_raw_response.create(
        model="echo", messages=_ask("shown in the browser view?")
    )
    trace_id = answered.headers["x-ponder-trace-id"]
    with httpx.Client(base_url=main.url, timeout=30) as browser:
        locked = browser.get("/ui/requests", headers={"Authorization": f"Bearer {KEYS[0]}"})
        assert locked.status_code == 401 and trace_id not in locked.text
        logged = browser.post(
            "/ui/login", data={"key": KEYS[1], "next": "/ui/requests"}, follow_redirects=True
        )
        assert logged.status_code == 200 and trace_id in logged.text
        page = browser.get(f"/ui/requests/{trace_id}")
        assert page.status_code == 200 and "shown in the browser view?" in page.text
        assert KEYS[1] not in page.text


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    return body["error"]  # type: ignore[no-any-return]


def test_error_statuses(main: ServeProcess) -> None:
    client = _client(main)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4", messages=_ask())
    assert "vote3:echo" in missing.value.message and missing.value.body["param"] == "model"  # type: ignore[index]
    post = lambda body, **kw: httpx.post(  # noqa: E731
        f"{main.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEYS[0]}"},
        **kw,
    )
    invalid = post({"model": "echo", "messages": [{"role": "robot", "content": "x"}]})
    assert invalid.status_code == 400
    assert _error(invalid)["param"] == "messages.0.role"
    missing_field = post({"model": "echo"})
    assert missing_field.status_code == 400 and _error(missing_field)["param"] == "messages"
    too_many = post({"model": "echo", "messages": _ask(), "n": 5})
    assert too_many.status_code == 400 and _error(too_many)["param"] == "n"
    too_long = post({"model": "echo", "messages": _ask(), "max_completion_tokens": 101})
    assert too_long.status_code == 400 and _error(too_long)["param"] == "max_completion_tokens"
    huge = post({"model": "echo", "messages": _ask("x" * 30000)})
    assert huge.status_code == 413
    not_json = httpx.post(
        f"{main.url}/v1/chat/completions",
        content=b"{nope",
        headers={"Authorization": f"Bearer {KEYS[0]}"},
    )
    assert not_json.status_code == 400 and _error(not_json)["type"] == "invalid_request_error"
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="dead", messages=_ask())
    assert failed.value.status_code == 502
    assert "dead" in failed.value.message or "connect" in failed.value.message.lower()
    assert SECRET not in failed.value.response.text
    assert failed.value.response.headers["x-ponder-trace-id"]
    assert _stored(main, failed.value.response.headers["x-ponder-trace-id"]).status == 502
    # What would be silently ignored is refused, naming the field.
    for body, param in (
        ({"model": "echo", "messages": _ask(), "logprobs": True, "stream": True}, "logprobs"),
        ({"model": "vote3", "messages": _ask(), "logprobs": True}, "logprobs"),
    ):
        refused = post(body)
        assert refused.status_code == 400 and _error(refused)["param"] == param
    with pytest.raises(openai.BadRequestError) as echo:
        client.completions.create(model="echo", prompt="hi", echo=True)
    assert echo.value.body["param"] == "echo"  # type: ignore[index]
    # An unknown route is OpenAI-shaped too.
    assert _error(httpx.get(f"{main.url}/v1/nothing"))["type"] == "not_found_error"


def test_per_key_concurrency(main: ServeProcess) -> None:
    def call(key: str) -> int:
        try:
            _client(main, key).chat.completions.create(model="slow", messages=_ask())
            return 200
        except openai.RateLimitError as exc:
            assert exc.response.headers["retry-after"] == "1"
            return 429

    with ThreadPoolExecutor(3) as pool:
        same = list(pool.map(call, [KEYS[0], KEYS[0]]))
        both = list(pool.map(call, [KEYS[0], KEYS[1]]))
    assert sorted(same) == [200, 429]
    assert both == [200, 200]


# ----- queue, timeout, drain ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight() -> Iterator[ServeProcess]:
    args = [
        "--model", _model("slow", outputs=["slow answer"], delay_s=1.0),
        "--model", _model("sleepy", outputs=["late"], delay_s=3.0),
        "--max-active", "1", "--max-queued", "1", "--timeout", "2", "--no-store",
    ]  # fmt: skip
    with serve(args) as server:
        yield server


def test_queue_full_is_429_with_retry_after(tight: ServeProcess) -> None:
    def call(_: int) -> int:
        response = httpx.post(
            f"{tight.url}/v1/chat/completions",
            json={"model": "slow", "messages": _ask()},
            timeout=30,
        )
        if response.status_code == 429:
            assert response.headers["retry-after"] == "1"
            assert _error(response)["type"] == "rate_limit_error"
        return response.status_code

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(call, 0)
        time.sleep(0.3)  # the first one works, the second waits, the third finds the queue full
        second = pool.submit(call, 1)
        time.sleep(0.3)
        third = pool.submit(call, 2)
        codes = [first.result(), second.result(), third.result()]
    assert codes == [200, 200, 429]


def test_timeout_is_504(tight: ServeProcess) -> None:
    response = httpx.post(
        f"{tight.url}/v1/chat/completions", json={"model": "sleepy", "messages": _ask()}, timeout=30
    )
    assert response.status_code == 504 and _error(response)["type"] == "timeout_error"


def test_a_stream_past_the_timeout_ends_with_an_error_event(tight: ServeProcess) -> None:
    client = openai.OpenAI(base_url=f"{tight.url}/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.APIError) as late:
        list(client.chat.completions.create(model="sleepy", messages=_ask(), stream=True))
    assert "longer than the server's limit" in late.value.message


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    server = ServeProcess(
        [
            "--model",
            _model("slow", outputs=["slow answer"], delay_s=2.0),
            "--no-store",
            "--drain",
            "20",
        ]
    )
    try:
        server.wait_ready()
        result: dict[str, Any] = {}

        def call() -> None:
            result["response"] = httpx.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "slow", "messages": _ask()},
                timeout=30,
            )

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(0.7)
        server.terminate()
        thread.join(timeout=30)
        assert result["response"].status_code == 200
        assert result["response"].json()["choices"][0]["message"]["content"] == "slow answer"
        # uvicorn re-raises the signal once it has drained: the exit status says SIGTERM.
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health", timeout=2)
    finally:
        out, _ = server.stop()
    # What `ponder serve` printed at start: the URL, the served names, a client example.
    assert f"{server.url}/v1" in out and "\n  slow\n" in out
    assert f'OpenAI(base_url="{server.url}/v1"' in out and 'model="slow"' in out


def test_non_loopback_without_keys_needs_a_flag() -> None:
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is on no interface: were the check ever to let it through,
    # binding would fail rather than open a port beyond loopback.
    refused = ServeProcess(["--host", "192.0.2.1", "--model", _model("e", outputs=["x"])])
    out, err = refused.proc.communicate(timeout=60)
    assert refused.proc.returncode == 2
    assert "--insecure-no-auth" in err and "no API key" in err
    assert "listening on" not in out  # refused before any socket was opened


def test_ponder_trace_opens_a_served_request(main: ServeProcess) -> None:
    import subprocess

    from tests._serve import PONDER

    reply = _client(main).chat.completions.create(model="vote3", messages=_ask())
    trace_id = reply.ponder["trace_id"]  # type: ignore[attr-defined]
    db = str(main.db)  # type: ignore[attr-defined]
    shown = subprocess.run(
        [PONDER, "trace", trace_id, "--db", db], capture_output=True, text=True, check=True
    ).stdout
    assert f"served request {trace_id}" in shown and "system vote3" in shown
    assert "generate" in shown and "vote" in shown  # the tree of layers and components
    record = json.loads(
        subprocess.run(
            [PONDER, "trace", trace_id, "--db", db, "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert record["id"] == trace_id and record["trace"]["system"] == "vote3"


def test_every_config_in_configs_can_be_served() -> None:
    from ponder.errors import ConfigError
    from ponder.serve import load_service

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    # The ensemble names smollm2-135m itself, so that model is served too (nothing is loaded yet).
    service = load_service(["qwen2.5-coder-0.5b", "smollm2-135m"], configs)
    names = service.names()
    for path in configs:
        assert path.stem in names and f"{path.stem}:smollm2-135m" in names
    with pytest.raises(
        ConfigError, match=r"layers\[0\]\[0\]\.model: .*smollm2-135m.* is not served"
    ):
        load_service(["qwen2.5-coder-0.5b"], [p for p in configs if p.stem == "ensemble-fuse"])


def test_check_bind() -> None:
    from ponder.errors import ConfigError
    from ponder.serve import check_bind

    assert check_bind("127.0.0.1", (), allow_no_keys=False) is None
    assert check_bind("::1", (), allow_no_keys=False) is None
    assert check_bind("localhost", (), allow_no_keys=False) is None
    assert check_bind("0.0.0.0", {"k"}, allow_no_keys=False) is None
    with pytest.raises(ConfigError, match="no API key"):
        check_bind("192.168.1.5", (), allow_no_keys=False)
    warning = check_bind("0.0.0.0", (), allow_no_keys=True)
    assert warning is not None and "WITHOUT API keys" in warning


def test_load_service_builds_models_from_flags(tmp_path: Path) -> None:
    from ponder.errors import ConfigError
    from ponder.serve import load_service

    remote = load_service(
        ["llama3:8b"], backend="openai", base_url="http://127.0.0.1:11434/v1", api_key_env="K"
    )
    served = remote.models["llama3:8b"]  # a name with ":" is served whole (Ollama's names)
    assert served.backend_kind == "openai" and served.backend.identity.startswith("openai")
    assert remote.resolve("llama3:8b").config is None
    local = load_service(['{"backend": "llamacpp", "model": "smollm2-135m", "threads": 3}'])
    assert local.default_model == "smollm2-135m"
    assert local.models["smollm2-135m"].backend.config.threads == 3  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="given twice"):
        load_service(["smollm2-135m", "smollm2-135m"])
