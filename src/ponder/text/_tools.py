"""Tool calls written as text, for models (and engines) that do not return structured calls.

Small local models asked to call a tool often answer with the call as plain text: Hermes-style
``<tool_call>{...}</tool_call>`` tags (Qwen's chat template asks for these), a fenced JSON block, or a
bare JSON object such as ``{"name": "get_weather", "arguments": {"city": "Paris"}}`` as the whole
reply (measured: Qwen2.5-Coder 0.5B at temperature 0). :func:`parse_tool_calls` recognises these,
keeps only calls that name a declared tool with arguments that satisfy the tool's JSON schema, and
returns the text that is left.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ponder.records import ToolCall, ToolSpec
from ponder.text._fence import code_blocks

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCED = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.DOTALL | re.MULTILINE)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_problem(value: Any, schema: Mapping[str, Any], path: str = "arguments") -> str | None:
    """Why ``value`` does not satisfy ``schema``, or None when it does.

    Checks the parts of JSON Schema that tool declarations use: ``type`` (one or a list),
    ``enum``, ``const``, ``properties``, ``required``, ``additionalProperties: false`` and
    ``items``. Other keywords are not checked.
    """
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        allowed = tuple(t for n in names for t in _JSON_TYPES.get(n, ()))
        is_bool = isinstance(value, bool)
        ok = isinstance(value, allowed) and not (
            is_bool and "boolean" not in names  # bool is an int in Python, not in JSON
        )
        if not ok:
            return f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: {value!r} is not one of {schema['enum']}"
    if "const" in schema and value != schema["const"]:
        return f"{path}: expected {schema['const']!r}"
    if isinstance(value, dict):
        return _object_problem(value, schema, path)
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            problem = schema_problem(item, schema["items"], f"{path}[{i}]")
            if problem:
                return problem
    return None


def _object_problem(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> str | None:
    properties = schema.get("properties") or {}
    missing = [k for k in schema.get("required") or () if k not in value]
    if missing:
        return f"{path}: missing required {', '.join(map(repr, missing))}"
    for key, item in value.items():
        if key in properties:
            problem = schema_problem(item, properties[key], f"{path}.{key}")
            if problem:
                return problem
        elif schema.get("additionalProperties") is False:
            return f"{path}: unexpected property {key!r}"
    return None


def _call_id(text: str, index: int) -> str:
    digest = hashlib.sha256(f"{index}|{text}".encode()).hexdigest()[:24]
    return f"call_{digest}"


def _as_call(data: Any, tools: Mapping[str, ToolSpec]) -> tuple[str, Any] | None:
    """``(name, arguments)`` when ``data`` is a call of a declared tool with valid arguments."""
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("function"), dict):  # the OpenAI wire shape, written out as text
        data = data["function"]
    name = data.get("name")
    if not isinstance(name, str) or name not in tools:
        return None
    args = data.get("arguments", data.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if schema_problem(args, tools[name].parameters) is not None:
        return None
    return name, args


def _calls_in(text: str, tools: Mapping[str, ToolSpec]) -> list[tuple[str, Any]] | None:
    """The calls in one JSON text (an object, or a list of objects); None unless all are calls."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    items = data if isinstance(data, list) else [data]
    calls = [_as_call(item, tools) for item in items]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def parse_tool_calls(text: str, tools: Sequence[ToolSpec]) -> tuple[str, tuple[ToolCall, ...]]:
    """The tool calls written in ``text`` and the text without them.

    Recognised, in this order (the first form found wins):

    * Hermes tags: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (one or more; an
      unclosed last tag runs to the end of the text);
    * fenced JSON blocks (```` ```json ````) that hold a call or a list of calls;
    * the whole reply as one JSON call or list of calls.

    A call counts only when it names a tool in ``tools`` and its arguments (an object, or JSON text
    of one) satisfy the tool's schema (see :func:`schema_problem`); ``{"function": {...}}`` and
    ``parameters`` instead of ``arguments`` are accepted. Call ids are derived from the text, so
    the same reply gives the same ids.

    Returns:
        ``(content, calls)``: with no calls, ``(text, ())``; otherwise the text with every
        recognised call removed (stripped) and the calls, arguments as compact JSON text.
    """
    declared = {t.name: t for t in tools}
    if not declared or not text.strip():
        return text, ()
    found: list[tuple[str, Any]] = []
    content = text
    hermes = list(_HERMES.finditer(text))
    if hermes:
        for match in hermes:
            calls = _calls_in(match.group(1), declared)
            if calls:
                found += calls
                content = content.replace(match.group(0), "", 1)
    if not found and code_blocks(text):
        for match in _FENCED.finditer(text):
            calls = _calls_in(match.group(2), declared)
            if calls:
                found += calls
                content = content.replace(match.group(0), "", 1)
    if not found:
        calls = _calls_in(text.strip(), declared)
        if calls:
            found, content = calls, ""
    if not found:
        return text, ()
    made = tuple(
        ToolCall(
            id=_call_id(text, i),
            name=name,
            arguments=json.dumps(args, ensure_ascii=False, separators=(",", ":")),
        )
        for i, (name, args) in enumerate(found)
    )
    return content.strip(), made
