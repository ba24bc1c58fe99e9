"""Putting outcomes on the wire: responses, stream chunks, ``<think>`` splitting of streamed text,
and error text without secrets."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from ponder.records import ToolCall
from ponder.serve._protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChatMessageOut,
    ChoiceLogprobs,
    ChunkInfo,
    CompletionChoice,
    CompletionChunkChoice,
    FunctionCallOut,
    PonderInfo,
    Progress,
    TextCompletion,
    TextCompletionChunk,
    ToolCallOut,
    UsageOut,
)
from ponder.serve._serving import Outcome, Target


def new_trace_id() -> str:
    return uuid.uuid4().hex


def usage_out(outcome: Outcome) -> UsageOut:
    return UsageOut(
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        total_tokens=outcome.prompt_tokens + outcome.completion_tokens,
    )


def _calls_out(calls: Sequence[ToolCall]) -> list[ToolCallOut] | None:
    if not calls:
        return None
    return [
        ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments))
        for c in calls
    ]


def info(trace_id: str, target: Target, outcome: Outcome | None = None) -> PonderInfo:
    return PonderInfo(
        trace_id=trace_id,
        system=target.system,
        model=target.model.name,
        calls=outcome.calls if outcome is not None else 0,
    )


def chat_response(trace_id: str, model: str, target: Target, outcome: Outcome) -> ChatCompletion:
    choices = [
        ChatChoice(
            index=i,
            message=ChatMessageOut(
                content=a.text if a.text or not a.tool_calls else None,
                reasoning_content=a.reasoning,
                tool_calls=_calls_out(a.tool_calls),
            ),
            finish_reason=a.finish,
            logprobs=None if a.logprobs is None else ChoiceLogprobs(content=a.logprobs),
        )
        for i, a in enumerate(outcome.answers)
    ]
    return ChatCompletion(
        id=f"chatcmpl-{trace_id}",
        created=int(time.time()),
        model=model,
        choices=choices,
        usage=usage_out(outcome),
        ponder=info(trace_id, target, outcome),
    )


def completion_response(
    trace_id: str, model: str, target: Target, outcome: Outcome
) -> TextCompletion:
    choices = [
        CompletionChoice(index=i, text=a.text, finish_reason=a.finish)
        for i, a in enumerate(outcome.answers)
    ]
    return TextCompletion(
        id=f"cmpl-{trace_id}",
        created=int(time.time()),
        model=model,
        choices=choices,
        usage=usage_out(outcome),
        ponder=info(trace_id, target, outcome),
    )


# ----- streaming ------------------------------------------------------------------------------


class ChunkWriter:
    """Builds the stream chunks of one request (chat or text completion)."""

    def __init__(self, trace_id: str, model: str, *, chat: bool) -> None:
        self.trace_id = trace_id
        self.model = model
        self.chat = chat
        self.created = int(time.time())
        self.id = f"chatcmpl-{trace_id}" if chat else f"cmpl-{trace_id}"

    def _chunk(
        self, choices: list[Any], usage: UsageOut | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        extra = ChunkInfo(trace_id=self.trace_id, progress=progress)
        cls = ChatCompletionChunk if self.chat else TextCompletionChunk
        chunk = cls(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=usage,
            ponder=extra,
        )
        return chunk.model_dump(exclude_none=True)

    def role(self, index: int) -> dict[str, Any]:
        return self._chunk(
            [ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))]
        )

    def text(self, index: int, text: str, *, reasoning: bool = False) -> dict[str, Any]:
        # Built by hand (once per token): what _chunk's models give, without their cost.
        choice: dict[str, Any]
        if self.chat:
            choice = {
                "index": index,
                "delta": {"reasoning_content" if reasoning else "content": text},
            }
        else:
            choice = {"index": index, "text": text}
        return {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "ponder": {"trace_id": self.trace_id},
        }

    def tool_calls(self, index: int, calls: Sequence[ToolCall]) -> dict[str, Any]:
        wire = [
            {
                "index": k,
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for k, c in enumerate(calls)
        ]
        return self._chunk([ChatChunkChoice(index=index, delta=ChatDelta(tool_calls=wire))])

    def finish(self, index: int, reason: str) -> dict[str, Any]:
        if self.chat:
            return self._chunk(
                [ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=reason)]
            )
        return self._chunk([CompletionChunkChoice(index=index, text="", finish_reason=reason)])

    def usage(self, outcome: Outcome) -> dict[str, Any]:
        return self._chunk([], usage=usage_out(outcome))

    def progress(self, event: Progress) -> dict[str, Any]:
        return self._chunk([], progress=event)


class ThinkSplitter:
    """Splits streamed text into reasoning (inside ``<think>``) and content, as it arrives.

    A tag split across deltas is held back until it is complete.
    """

    _OPEN, _CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self.inside = False
        self.pending = ""

    def feed(self, text: str) -> list[tuple[bool, str]]:
        """``(is_reasoning, text)`` pieces ready to send."""
        out: list[tuple[bool, str]] = []
        buf = self.pending + text
        self.pending = ""
        while buf:
            tag = self._CLOSE if self.inside else self._OPEN
            at = buf.lower().find(tag)
            if at >= 0:
                if at:
                    out.append((self.inside, buf[:at]))
                buf = buf[at + len(tag) :]
                self.inside = not self.inside
                continue
            keep = _partial_suffix(buf.lower(), tag)
            if len(buf) > keep:
                out.append((self.inside, buf[: len(buf) - keep]))
            self.pending = buf[len(buf) - keep :]
            break
        return out

    def flush(self) -> list[tuple[bool, str]]:
        pending, self.pending = self.pending, ""
        return [(self.inside, pending)] if pending else []


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that starts ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-k:]):
            return k
    return 0


_SECRET = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+\S+)")


def redact(text: str, secrets: Collection[str] = ()) -> str:
    """``text`` without API keys (the server's, and anything shaped like one)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SECRET.sub("[redacted]", text)


def backend_cause(exc: BaseException) -> str:
    """The message of a failed backend call, for a 502 (the chain of causes, one line)."""
    parts = [str(exc)]
    cause = exc.__cause__
    while cause is not None and len(parts) < 4:
        parts.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__
    return " <- ".join(p.splitlines()[0] for p in parts if p)
