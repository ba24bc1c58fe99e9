"""A deterministic backend for tests of logic (like inspect_ai's mockllm).

It never replaces tests of the real backends; it makes scheduling, storage and selection logic testable
without a model. Like every backend it implements only ``_send``; the policy (usage, tracing, streaming by
whole completions) comes from :class:`~ponder.backends.Backend`, with no concurrency bound or retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.backends._base import Backend
from ponder.backends._registry import register_backend
from ponder.records import Completion, Generation, GenerationRequest, Prompt, SamplingParams

ScriptFn = Callable[[Prompt, int, SamplingParams], str]
"""(prompt, index within request, params) -> completion text."""


class ScriptedConfig(BaseModel):
    """Config of the scripted backend (usable from YAML: outputs as a list, or a seeded generator)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["scripted"] = "scripted"
    name: str = "scripted"
    outputs: list[str] = Field(default_factory=list, description="Returned in order, cycling.")
    choices: list[str] = Field(
        default_factory=list, description="Seeded generator: each completion picks one of these."
    )
    delay_s: float = Field(0.0, ge=0.0, description="Simulated latency per request.")
    max_batch: int = Field(16, ge=1)


def _prompt_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.role}: {m.content}" for m in prompt)


@dataclass(eq=False)
class ScriptedBackend(Backend):
    """Returns scripted completions.

    Exactly one source is used, in this order: ``fn`` (a function of prompt, index and params), ``outputs``
    (a list consumed in order, cycling), or ``choices`` (a seeded generator: the same prompt and seed give the
    same picks). Token counts are whitespace word counts, so usage accounting is testable.
    """

    outputs: Sequence[str] = ()
    fn: ScriptFn | None = None
    choices: Sequence[str] = ()
    delay_s: float = 0.0
    name: str = "scripted"
    batch: int = 16
    fail_with: BaseException | None = None
    calls: list[tuple[Prompt, int, SamplingParams]] = field(default_factory=list)
    _cursor: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        super().__init__()

    @property
    def identity(self) -> str:
        return f"scripted:{self.name}"

    @property
    def max_batch(self) -> int:
        return self.batch

    def _text(self, prompt: Prompt, i: int, params: SamplingParams) -> str:
        if self.fn is not None:
            return self.fn(prompt, i, params)
        if self.outputs:
            text = self.outputs[self._cursor % len(self.outputs)]
            self._cursor += 1
            return text
        if self.choices:
            key = f"{_prompt_text(prompt)}|{params.seed}|{i}".encode()
            rng = random.Random(hashlib.sha256(key).digest())
            return rng.choice(list(self.choices))
        return ""

    async def _send(self, request: GenerationRequest) -> Generation:
        prompt, n, params = request.prompt, request.n, request.params
        self.calls.append((prompt, n, params))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        start = time.perf_counter()
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail_with is not None:
                raise self.fail_with
            texts = [self._text(prompt, i, params) for i in range(n)]
        finally:
            self.in_flight -= 1
        latency = time.perf_counter() - start
        completions = []
        for text in texts:
            words = text.split()
            truncated = len(words) > params.max_tokens
            if truncated:
                text = " ".join(words[: params.max_tokens])
            completions.append(
                Completion(
                    text=text,
                    finish_reason="length" if truncated else "stop",
                    completion_tokens=min(len(words), params.max_tokens),
                    latency_s=latency,
                )
            )
        return Generation(
            completions=completions,
            prompt_tokens=len(_prompt_text(prompt).split()),
            latency_s=latency,
        )


@register_backend("scripted", ScriptedConfig)
def _make_scripted(config: ScriptedConfig) -> ScriptedBackend:
    return ScriptedBackend(
        outputs=config.outputs,
        choices=config.choices,
        delay_s=config.delay_s,
        name=config.name,
        batch=config.max_batch,
    )
