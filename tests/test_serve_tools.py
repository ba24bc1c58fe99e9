"""Tool calls written as text, and ``<think>`` reasoning split from the answer (ponder.text)."""

from __future__ import annotations

import json

import pytest

from ponder.records import ToolSpec
from ponder.text import parse_tool_calls, schema_problem, split_think, strip_think

WEATHER = ToolSpec(
    name="get_weather",
    description="Weather in a city",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["C", "F"]},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
)
ADD = ToolSpec(
    name="add",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
TOOLS = [WEATHER, ADD]


def _calls(text: str) -> list[tuple[str, dict[str, object]]]:
    return [(c.name, json.loads(c.arguments)) for c in parse_tool_calls(text, TOOLS)[1]]


def test_bare_json_as_qwen_writes_it() -> None:
    # What Qwen2.5-Coder 0.5B answered at temperature 0 (measured through the embedded engine).
    text = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    content, calls = parse_tool_calls(text, TOOLS)
    assert content == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert calls[0].id.startswith("call_")
    assert parse_tool_calls(text, TOOLS)[1][0].id == calls[0].id  # the same reply, the same id


def test_hermes_tags_keep_the_surrounding_text() -> None:
    text = (
        "Let me check both.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}\n</tool_call>\n'
        '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}</tool_call>'
    )
    content, calls = parse_tool_calls(text, TOOLS)
    assert content == "Let me check both."
    assert [c.name for c in calls] == ["get_weather", "add"]
    assert json.loads(calls[1].arguments) == {"a": 1, "b": 2}
    assert len({c.id for c in calls}) == 2


def test_fenced_json_and_lists_and_the_wire_shape() -> None:
    fenced = 'Sure:\n```json\n[{"name": "add", "arguments": {"a": 2, "b": 3}}]\n```\nDone.'
    content, calls = parse_tool_calls(fenced, TOOLS)
    assert [c.name for c in calls] == ["add"] and content == "Sure:\n\nDone."
    wire = '{"type": "function", "function": {"name": "add", "parameters": {"a": 1, "b": 1}}}'
    assert _calls(wire) == [("add", {"a": 1, "b": 1})]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "delete_everything", "arguments": {}}',  # not a declared tool
        '{"name": "get_weather", "arguments": {}}',  # required argument missing
        '{"name": "get_weather", "arguments": {"city": 3}}',  # wrong type
        '{"name": "get_weather", "arguments": {"city": "X", "unit": "K"}}',  # not in the enum
        '{"name": "get_weather", "arguments": {"city": "X", "extra": 1}}',  # no extra properties
        '{"name": "add", "arguments": {"a": true, "b": 1}}',  # a bool is not a JSON integer
        '{"name": "add", "arguments": "{not json"}',
        'The answer is {"name": "add"} maybe',  # JSON inside prose is not a call
        "<tool_call>not json</tool_call>",
        "plain text",
    ],
)
def test_what_is_not_a_call_stays_text(text: str) -> None:
    assert parse_tool_calls(text, TOOLS) == (text, ())


def test_no_tools_no_calls() -> None:
    text = '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    assert parse_tool_calls(text, []) == (text, ())


def test_schema_problem_names_the_path() -> None:
    schema = {
        "type": "object",
        "properties": {"xs": {"type": "array", "items": {"type": "number"}}},
    }
    assert schema_problem({"xs": [1, 2.5]}, schema) is None
    assert schema_problem({"xs": [1, "a"]}, schema) == "arguments.xs[1]: expected number, got str"
    assert schema_problem(None, {"type": ["object", "null"]}) is None


@pytest.mark.parametrize(
    ("text", "reasoning", "answer"),
    [
        ("<think>step 1\nstep 2</think>\n\nThe answer is 4.", "step 1\nstep 2", "The answer is 4."),
        ("plan...</think>Answer: 7", "plan...", "Answer: 7"),  # the template opened the block
        ("Answer: 7<think>more thoughts cut off", "more thoughts cut off", "Answer: 7"),
        ("no reasoning here", None, "no reasoning here"),
        ("<THINK>a</THINK>x<think>b</think>y", "a\n\nb", "x\ny"),
    ],
)
def test_split_think(text: str, reasoning: str | None, answer: str) -> None:
    assert split_think(text) == (reasoning, answer)
    # The answer part is what strip_think keeps (the one <think> stripper), less leading space.
    assert strip_think(text).lstrip() == answer
