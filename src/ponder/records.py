"""Typed records that flow through Ponder: problems, sampling parameters, completions, samples, verdicts.

The request and response types of backends live here too: a :class:`GenerationRequest` (a prompt, ``n``,
sampling parameters, and optionally tools, top log-probabilities and the continuation of a partial assistant
turn) is answered by a :class:`Generation` of :class:`Completion` s, or streamed as :class:`StreamDelta` s;
every backend's calls are summed in its :class:`Usage`.

Chat messages follow the OpenAI shape (roles ``system``, ``user``, ``assistant``, ``tool``; assistant
``tool_calls``; a tool result's ``tool_call_id``). A message's ``content`` is always a ``str`` in Python, so
code that reads it as text keeps working: an assistant message that only calls tools has ``content == ""``,
``None`` is accepted on input, and it is sent as ``null`` on the wire (see :meth:`Message.wire_content`).
Fields that a plain message does not use are left out of ``model_dump()``, so plain messages and completions
serialise exactly as before these fields existed.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "error", "unknown"]
VerdictStatus = Literal["correct", "incorrect", "unparsed", "error"]


def _drop_unset_extras(data: dict[str, Any], extras: tuple[str, ...]) -> dict[str, Any]:
    """``data`` without the optional ``extras`` that hold their empty default (``None``, ``()``, ``[]``)."""
    return {k: v for k, v in data.items() if k not in extras or v not in (None, (), [])}


class ToolCall(BaseModel):
    """A function call requested by the model."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str = Field("{}", description="The arguments as the model wrote them (JSON text).")

    def parsed_arguments(self) -> Any:
        """The arguments decoded from JSON (raises ``ValueError`` when the model wrote invalid JSON)."""
        return json.loads(self.arguments)


class Message(BaseModel):
    """One chat message.

    ``tool_calls`` only on assistant messages; ``tool_call_id`` (the call answered) only and always on
    ``tool`` messages.
    """

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _null_content(cls, value: object) -> object:
        # OpenAI's shape: an assistant turn that only calls tools has content null.
        return "" if value is None else value

    @model_validator(mode="after")
    def _check_tool_fields(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("tool_call_id is required on tool messages and only there")
        return self

    @model_serializer(mode="wrap")
    def _serialise(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_unset_extras(handler(self), ("tool_calls", "tool_call_id"))

    @property
    def wire_content(self) -> str | None:
        """``content`` as the OpenAI wire format wants it: ``None`` for a tool-calls-only turn."""
        return None if self.tool_calls and not self.content else self.content


Prompt = str | list[Message]
"""A raw text prompt (completion endpoint) or a list of chat messages."""


class Problem(BaseModel):
    """One task item: what to ask and what counts as right."""

    model_config = ConfigDict(frozen=True)

    id: str
    question: str
    reference: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class SamplingParams(BaseModel):
    """Decoding parameters. Validated before any generation starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(0.7, ge=0.0, le=5.0, description="0 means greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="Keep the k most likely tokens; 0 disables.")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="Drop tokens below min_p x the top one.")
    max_tokens: int = Field(512, ge=1, le=131072)
    stop: tuple[str, ...] = ()
    seed: int = Field(0, ge=0, lt=2**31, description="Base seed; each request derives its own.")

    @model_validator(mode="after")
    def _check_stop(self) -> SamplingParams:
        if any(s == "" for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        return self


class ToolSpec(BaseModel):
    """A function the model may call (sent as an OpenAI ``tools`` entry)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the arguments.",
    )


class NamedToolChoice(BaseModel):
    """Force a call of one named tool."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class GenerationRequest(BaseModel):
    """One request for ``n`` completions of one prompt: what every backend answers.

    ``params.seed`` is the seed of this request. ``continue_final_message``: the prompt's last message is a
    partial assistant turn that the model continues; completions hold only the new text, never the prefix.
    """

    model_config = ConfigDict(frozen=True)

    prompt: Prompt
    n: int = Field(1, ge=1)
    params: SamplingParams = Field(default_factory=lambda: SamplingParams())
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None
    top_logprobs: int = Field(
        0, ge=0, le=20, description="Alternatives to return per generated token (0: none)."
    )
    continue_final_message: bool = False
    cache_prompt: bool | None = Field(
        None,
        description="Reuse the engine's cache of an earlier request's prompt prefix (None: the "
        "backend's own setting). Faster when requests share long prefixes (tree search), but a "
        "sample may then differ from what the same seed gives without it.",
    )

    @model_validator(mode="after")
    def _check(self) -> GenerationRequest:
        if self.continue_final_message and (
            isinstance(self.prompt, str) or not self.prompt or self.prompt[-1].role != "assistant"
        ):
            raise ValueError(
                "continue_final_message needs a chat prompt ending in an assistant message"
            )
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice needs tools")
        return self

    def with_n(self, n: int, seed: int) -> GenerationRequest:
        """The same request for ``n`` completions with seed ``seed``."""
        params = self.params.model_copy(update={"seed": seed % 2**31})
        return self.model_copy(update={"n": n, "params": params})

    @property
    def prefix(self) -> str:
        """The partial assistant text being continued ('' unless ``continue_final_message``)."""
        if self.continue_final_message and not isinstance(self.prompt, str):
            return self.prompt[-1].content
        return ""


class TopLogprob(BaseModel):
    """One candidate token at a position and its log-probability."""

    token: str
    logprob: float


class TokenLogprob(BaseModel):
    """One generated token, its log-probability and the most likely alternatives at its position."""

    token: str
    logprob: float
    top: list[TopLogprob] = Field(default_factory=list)


class Completion(BaseModel):
    """One generated sample as the backend returned it."""

    text: str
    finish_reason: FinishReason = "unknown"
    completion_tokens: int = Field(0, ge=0)
    latency_s: float = Field(0.0, ge=0.0, description="Wall time of the request that produced it.")
    mean_logprob: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: list[TokenLogprob] | None = Field(
        None,
        description="Per-token log-probabilities with alternatives (when top_logprobs was asked).",
    )

    @model_serializer(mode="wrap")
    def _serialise(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _drop_unset_extras(handler(self), ("tool_calls", "logprobs"))


class Generation(BaseModel):
    """The answer to one request for n completions of one prompt."""

    completions: list[Completion]
    prompt_tokens: int = Field(0, ge=0, description="Prompt tokens evaluated for this request.")
    cached_prompt_tokens: int = Field(
        0,
        ge=0,
        description="Of prompt_tokens, those the engine took from its prompt cache instead of "
        "evaluating them (where it reports it).",
    )
    latency_s: float = Field(0.0, ge=0.0)
    node: str | None = Field(
        None, description="The node that drew it, where an executor spread requests over nodes."
    )


class StreamDelta(BaseModel):
    """A piece of one completion of a streamed request.

    ``text`` is new text of completion ``index``; the last delta of a completion carries its
    ``finish_reason`` and, where the engine reports them, token counts (summed into the backend's usage).
    """

    index: int = Field(0, ge=0)
    text: str = ""
    finish_reason: FinishReason | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int | None = Field(
        None, ge=0, description="On a request's last delta, if reported."
    )
    completion_tokens: int | None = Field(
        None, ge=0, description="Tokens of this delta's completion."
    )


class Usage(BaseModel):
    """What one backend has done since it was created (a snapshot; see ``Backend.usage``)."""

    model_config = ConfigDict(frozen=True)

    requests: int = Field(
        0, ge=0, description="Requests answered (after retries), streams included."
    )
    completions: int = Field(0, ge=0)
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    retries: int = Field(0, ge=0, description="Attempts that failed transiently and were retried.")
    failures: int = Field(0, ge=0, description="Requests that failed for good.")
    latency_s: float = Field(0.0, ge=0.0, description="Summed wall time of answered requests.")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Sample(BaseModel):
    """A stored completion of one problem in one run."""

    id: int | None = None
    run_id: str
    problem_id: str
    index: int = Field(ge=0, description="Position among this problem's samples (0-based).")
    text: str
    finish_reason: FinishReason
    completion_tokens: int
    prompt_tokens: int
    latency_s: float
    seed: int
    mean_logprob: float | None = None
    node: str | None = Field(
        None, description="Where it was drawn: the Ray node (None: in the sampling process)."
    )


class Verdict(BaseModel):
    """A verifier's judgement of one sample."""

    status: VerdictStatus
    extracted: str | None = None
    score: float | None = None
    detail: str = ""
