"""Requests served by `ponder serve` are stored with their traces and read back, newest first."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ponder.errors import NotFoundError, StoreError
from ponder.records import Message
from ponder.store import SCHEMA_VERSION, ServerRequest, Store
from ponder.systems import Trace, Usage


def _record(i: int, **over: object) -> ServerRequest:
    values: dict[str, object] = {
        "id": f"tr-{i}",
        "created_at": 1000.0 + i,
        "endpoint": "/v1/chat/completions",
        "model": "sample-8-vote:smollm2-135m",
        "system": "sample-8-vote",
        "status": 200,
        "latency_s": 0.25,
        "prompt_tokens": 40,
        "completion_tokens": 9,
        "calls": 2,
        "request": {"model": "sample-8-vote", "messages": [{"role": "user", "content": "hi"}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": "hello"}}]},
        "trace": None,
    }
    values.update(over)
    return ServerRequest.model_validate(values)


def test_requests_round_trip_newest_first(tmp_path: Path) -> None:
    trace = Trace(
        system="sample-8-vote",
        query=[Message(role="user", content="hi")],
        usage=Usage(calls=2, prompt_tokens=40, completion_tokens=9),
    )
    with Store(tmp_path / "s.db") as store:
        store.add_server_request(_record(1))
        store.add_server_request(_record(2, trace=trace.model_dump(mode="json")))
        store.add_server_request(
            _record(3, system=None, status=502, response=None, error="backend down")
        )
        with pytest.raises(StoreError):
            store.add_server_request(_record(1))  # a trace id is stored once
    with Store(tmp_path / "s.db") as store:
        listed = store.server_requests()
        assert [r.id for r in listed] == ["tr-3", "tr-2", "tr-1"]
        assert [r.id for r in store.server_requests(limit=1, offset=1)] == ["tr-2"]
        got = store.server_request("tr-2")
        assert got == _record(2, trace=trace.model_dump(mode="json"))
        parsed = got.parsed_trace()
        assert parsed is not None and parsed.usage.completion_tokens == 9
        failed = store.server_request("tr-3")
        assert (failed.status, failed.error, failed.response, failed.parsed_trace()) == (
            502,
            "backend down",
            None,
            None,
        )
        with pytest.raises(NotFoundError, match="tr-9"):
            store.server_request("tr-9")
    con = sqlite3.connect(tmp_path / "s.db")
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
    con.close()
