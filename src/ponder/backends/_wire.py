"""The OpenAI JSON shapes that both the embedded engine and OpenAI-compatible servers speak.

One implementation of: messages, tools and tool choice as request JSON; a choice's text, tool calls,
finish reason and per-token log-probabilities as records (chat, ``/completions`` in llama.cpp's and the
legacy OpenAI shape); streamed chunks as deltas; stripping the echo of a continued assistant turn.
"""

from __future__ import annotations

import math
from typing import Any

from ponder.records import (
    FinishReason,
    Message,
    NamedToolChoice,
    StreamDelta,
    TokenLogprob,
    ToolCall,
    ToolChoice,
    ToolSpec,
    TopLogprob,
)

# Finish reasons that mean "the model ended the text itself" across servers (TGI says eos_token and
# stop_sequence); anything else but "length" and "tool_calls" is not something Ponder can interpret.
_STOP_REASONS = frozenset({"stop", "eos", "eos_token", "stop_sequence"})


def finish_reason(reason: object) -> FinishReason:
    """A server's finish reason as Ponder's."""
    if reason in _STOP_REASONS:
        return "stop"
    if reason == "length":
        return "length"
    return "tool_calls" if reason == "tool_calls" else "unknown"


def message_json(message: Message) -> dict[str, Any]:
    """One chat message as request JSON (``content`` null for an assistant turn that only calls tools)."""
    out: dict[str, Any] = {"role": message.role, "content": message.wire_content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def tools_json(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def tool_choice_json(choice: ToolChoice) -> str | dict[str, Any]:
    if isinstance(choice, NamedToolChoice):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def tool_calls(message: dict[str, Any] | None) -> tuple[ToolCall, ...]:
    """The complete tool calls of a response message (not of a streamed fragment)."""
    calls = (message or {}).get("tool_calls") or []
    out = []
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        out.append(
            ToolCall(
                id=str(call.get("id") or f"call_{i}"),
                name=str(function.get("name") or ""),
                arguments=str(function.get("arguments") or "{}"),
            )
        )
    return tuple(out)


def strip_echo(text: str, prefix: str) -> str:
    """The new text of a continued assistant turn.

    llama.cpp answers a chat request that ends in an assistant message with that message's text followed
    by the continuation (measured on xllamacpp 2026.10.11549; its streams send only the new text); servers
    that do not echo (vLLM) leave ``text`` without the prefix, and it is kept as it is.
    """
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


def _logprob(entry: dict[str, Any]) -> float:
    # llama.cpp sends ``prob`` instead of ``logprob`` for post-sampling probabilities.
    if "logprob" in entry:
        return float(entry["logprob"])
    prob = float(entry.get("prob", 0.0))
    return math.log(prob) if prob > 0 else -math.inf


def token_logprobs(choice: dict[str, Any]) -> list[TokenLogprob] | None:
    """The generated tokens of one choice with their alternatives, or None when the server sent none.

    Chat responses (and llama.cpp's ``/completions``) use ``logprobs.content[]``; the legacy
    ``/completions`` shape (OpenAI, vLLM) uses ``tokens`` / ``token_logprobs`` / ``top_logprobs``.
    """
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if isinstance(content, list):
        out = []
        for t in content:
            if not isinstance(t, dict) or not ("logprob" in t or "prob" in t):
                continue
            top = t.get("top_logprobs") or t.get("top_probs") or []
            alternatives = [
                TopLogprob(token=str(a.get("token", "")), logprob=_logprob(a)) for a in top
            ]
            out.append(
                TokenLogprob(token=str(t.get("token", "")), logprob=_logprob(t), top=alternatives)
            )
        return out
    values = logprobs.get("token_logprobs")
    if not isinstance(values, list):
        return None
    tokens = logprobs.get("tokens") or [""] * len(values)
    tops = logprobs.get("top_logprobs") or [None] * len(values)
    return [
        TokenLogprob(
            token=str(token),
            logprob=float(value),
            top=[TopLogprob(token=k, logprob=float(v)) for k, v in (top or {}).items()],
        )
        for token, value, top in zip(tokens, values, tops, strict=False)
        if value is not None
    ]


def mean_logprob(tokens: list[TokenLogprob] | None) -> float | None:
    return sum(t.logprob for t in tokens) / len(tokens) if tokens else None


def with_top(tokens: list[TokenLogprob] | None, k: int) -> list[TokenLogprob] | None:
    """``tokens`` to return in a completion: None unless ``k`` alternatives were asked for."""
    if not k or tokens is None:
        return None
    return [t.model_copy(update={"top": t.top[:k]}) for t in tokens]


class ToolCallAssembler:
    """Joins the fragments of streamed tool calls (OpenAI sends a call's arguments piece by piece)."""

    def __init__(self) -> None:
        self._parts: dict[tuple[int, int], dict[str, str]] = {}

    def add(self, choice_index: int, delta: dict[str, Any]) -> None:
        for i, fragment in enumerate(delta.get("tool_calls") or []):
            key = (choice_index, int(fragment.get("index", i)))
            part = self._parts.setdefault(key, {"id": "", "name": "", "arguments": ""})
            function = fragment.get("function") or {}
            part["id"] = part["id"] or str(fragment.get("id") or "")
            part["name"] += str(function.get("name") or "")
            part["arguments"] += str(function.get("arguments") or "")

    def finish(self, choice_index: int) -> tuple[ToolCall, ...]:
        """The complete calls of choice ``choice_index`` (once it has finished)."""
        keys = sorted(k for k in self._parts if k[0] == choice_index)
        return tuple(
            ToolCall(
                id=self._parts[k]["id"] or f"call_{k[1]}",
                name=self._parts[k]["name"],
                arguments=self._parts[k]["arguments"] or "{}",
            )
            for k in keys
        )


def stream_deltas(chunk: dict[str, Any], calls: ToolCallAssembler) -> list[StreamDelta]:
    """The deltas of one streamed chunk (chat or ``/completions``), and one for its usage if it has one.

    Streams carry only new text, also of a continued turn (llama.cpp echoes the prefix only in whole
    responses), so nothing is stripped. Tool calls come complete on the delta that finishes a choice.
    """
    out = []
    for choice in chunk.get("choices") or []:
        index = int(choice.get("index") or 0)
        delta = choice.get("delta") or {}
        calls.add(index, delta)
        reason = choice.get("finish_reason")
        out.append(
            StreamDelta(
                index=index,
                text=str(delta.get("content") or choice.get("text") or ""),
                finish_reason=None if reason is None else finish_reason(reason),
                tool_calls=() if reason is None else calls.finish(index),
            )
        )
    usage = chunk.get("usage")
    if usage:
        out.append(
            StreamDelta(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        )
    return out


def cached_tokens(usage: dict[str, Any]) -> int:
    """Prompt tokens served from the engine's prompt cache (OpenAI's
    ``usage.prompt_tokens_details.cached_tokens``, which llama.cpp reports too; 0 when absent)."""
    details = usage.get("prompt_tokens_details") or {}
    try:
        return max(int(details.get("cached_tokens") or 0), 0)
    except (TypeError, ValueError):
        return 0
