"""A served backend as one system run sees it (tools, streaming of the last stage, cancellation)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ponder.backends import Backend
from ponder.records import (
    Completion,
    Generation,
    GenerationRequest,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from ponder.systems import LayerRecord


class Tap(Backend):
    """A served backend as one system run sees it.

    It knows which layer is running (from the system's layer hook) and, in the answer layer, adds
    the request's tools to the calls of the components that write the answer and keeps each
    completion's tool calls; in a streamed request whose last layer is one generation, it streams
    that call's tokens to ``sink``. Calls for one completion go through the served backend's stream,
    so a cancelled request stops the engine's decoding.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        answer_layer: int,
        tools: tuple[ToolSpec, ...] = (),
        tool_choice: ToolChoice | None = None,
        stream_layer: int | None = None,
        sink: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.layer = -1
        self.components: list[str] = []
        self.answer_layer = answer_layer
        self.tools = tools
        self.tool_choice = tool_choice
        self.stream_layer = stream_layer
        self.sink = sink
        self.streamed = False
        self.made: list[Completion] = []

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def max_batch(self) -> int:
        return self.inner.max_batch

    def context_size(self) -> int | None:
        return self.inner.context_size()

    def count_tokens(self, text: str) -> int | None:
        return self.inner.count_tokens(text)

    def on_layer(self, record: LayerRecord, done: bool) -> None:
        if not done:
            self.layer = record.index
            self.components = [e.component for e in record.events]

    async def _send(self, request: GenerationRequest) -> Generation:
        answering = self.layer == self.answer_layer and bool(self.tools)
        if answering and not isinstance(request.prompt, str):
            request = request.model_copy(
                update={"tools": self.tools, "tool_choice": self.tool_choice}
            )
        sink = None
        if self.sink is not None and self.layer == self.stream_layer and not self.streamed:
            sink, self.streamed = self.sink, True
        if request.n == 1 and not request.top_logprobs:
            generation = await via_stream(self.inner, request, sink)
        else:
            generation = await self.inner.complete(request)
        if answering:
            self.made.extend(generation.completions)
        return generation


async def via_stream(
    backend: Backend, request: GenerationRequest, sink: Callable[[str], None] | None = None
) -> Generation:
    """One completion, drawn through the backend's stream (cancellable), text passed to ``sink``."""
    start = time.perf_counter()
    parts: list[str] = []
    finish: Any = "unknown"
    calls: tuple[ToolCall, ...] = ()
    prompt_tokens = completion_tokens = 0
    async for delta in backend.stream(request):
        if delta.text:
            parts.append(delta.text)
            if sink is not None:
                sink(delta.text)
        if delta.finish_reason is not None:
            finish = delta.finish_reason
        calls = calls or delta.tool_calls
        prompt_tokens += delta.prompt_tokens or 0
        completion_tokens += delta.completion_tokens or 0
    latency = time.perf_counter() - start
    completion = Completion(
        text="".join(parts),
        finish_reason=finish,
        completion_tokens=completion_tokens,
        latency_s=latency,
        tool_calls=calls,
    )
    return Generation(completions=[completion], prompt_tokens=prompt_tokens, latency_s=latency)
