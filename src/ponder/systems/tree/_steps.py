"""Steps: a solution as a sequence of steps, and growing a partial solution by one step.

A step ends at ``delimiter`` (default: a blank line): it is the stop sequence of the request that
generates it, so each node of a tree costs one short request. The request's prompt is the query
followed by the partial solution so far as a partial assistant turn that the model continues
(``continue_final_message`` in the backend contract); the prompt prefix is shared by every node
below, which the embedded engine's prompt cache keeps. A backend that cannot continue an assistant
turn can use ``continuation: restate``: the partial solution is restated in the user's message
and the model asked for the next step (a documented fallback, with other token costs).

With ``regex``, a step ends at the first match of the pattern instead (generation stops at
``max_step_tokens`` and the text is cut at the match). A step whose end never comes is cut at
``max_step_tokens`` and its node marked ``truncated``. A step that completes the solution (the model
stopped without a delimiter following, or wrote its final answer) makes a ``terminal`` node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ponder.errors import BackendRequestError, ConfigError
from ponder.records import Completion, FinishReason, Generation, Message, Prompt

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.records import SamplingParams
    from ponder.systems._context import RunContext

DEFAULT_FINAL = r"####|\\boxed\{|[Tt]he (?:final )?answer is"
"""What marks a step that gives the final answer (GSM8K's ####, LaTeX \\boxed, "the answer is")."""

RESTATE = (
    "{query}\n\nHere is the start of a solution, step by step:\n\n{partial}\n\n"
    "Write only the next step of this solution (or, if it is complete, the final answer)."
)
RESTATE_REST = (
    "{query}\n\nHere is the start of a solution, step by step:\n\n{partial}\n\n"
    "Write the rest of this solution, ending with the final answer."
)


class StepsConfig(BaseModel):
    """How a solution splits into steps, and how a step is generated."""

    model_config = ConfigDict(extra="forbid")

    delimiter: str = Field(
        "\n\n", min_length=1, description="What ends a step (its stop sequence)."
    )
    regex: str | None = Field(
        None, description="A step ends at this pattern's first match instead of the delimiter."
    )
    max_step_tokens: int = Field(160, ge=1, le=8192, description="Tokens one step may take.")
    max_depth: int = Field(12, ge=1, le=200, description="Steps a solution may take.")
    final: str = Field(
        DEFAULT_FINAL, description="A step matching this regex gives the final answer."
    )
    prompt_cache: bool = Field(
        True,
        description="Ask the engine to reuse the cached prefix of earlier steps' prompts "
        "(llama.cpp's cache_prompt): each node rereads its whole path otherwise. A step may then "
        "differ from what the same seed gives without the cache.",
    )
    continuation: Literal["assistant", "restate"] = Field(
        "assistant",
        description="assistant: continue a partial assistant turn (needs a backend that does); "
        "restate: put the partial solution in the user's message.",
    )

    @field_validator("regex", "final")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


@dataclass(frozen=True)
class Step:
    """One generated step."""

    text: str
    finish_reason: FinishReason
    completion_tokens: int
    terminal: bool
    truncated: bool


def step_prompt(
    messages: list[Message], steps: list[str], cfg: StepsConfig, *, rest: bool = False
) -> tuple[Prompt, bool]:
    """The prompt that asks for the step after ``steps`` (``rest``: for the rest of the solution),
    and whether it continues the last (assistant) message."""
    if not steps:
        return list(messages), False
    partial = cfg.delimiter.join(steps)
    if cfg.continuation == "assistant":
        # The delimiter ends the last step, so the model starts the next one.
        return [*messages, Message(role="assistant", content=partial + cfg.delimiter)], True
    query = _last_user(messages)
    head = [m for m in messages if m is not query]
    text = (RESTATE_REST if rest else RESTATE).format(
        query=query.content if query else "", partial=partial
    )
    return [*head, Message(role="user", content=text)], False


def _last_user(messages: list[Message]) -> Message | None:
    return next((m for m in reversed(messages) if m.role == "user"), None)


def to_step(completion: Completion, cfg: StepsConfig) -> Step:
    """A completion as a step: cut at the regex, marked truncated or terminal."""
    text = completion.text
    ended = completion.finish_reason == "stop"
    if cfg.regex is not None:
        # The pattern may also open the step itself ("Step 2: ..."): the step ends at the first
        # match after its start.
        match = next((m for m in re.finditer(cfg.regex, text) if m.start() > 0), None)
        if match is not None:
            text, ended = text[: match.start()], True
        elif completion.finish_reason == "stop":
            ended = True
    truncated = completion.finish_reason == "length" and not ended
    gives_answer = re.search(cfg.final, text) is not None
    terminal = not truncated and (gives_answer or not text.strip())
    return Step(
        text=text.rstrip(),
        finish_reason=completion.finish_reason,
        completion_tokens=completion.completion_tokens,
        terminal=terminal,
        truncated=truncated,
    )


async def next_steps(
    ctx: RunContext,
    backend: Backend,
    messages: list[Message],
    steps: list[str],
    k: int,
    params: SamplingParams,
    cfg: StepsConfig,
    purpose: str,
) -> list[Step]:
    """``k`` candidate next steps after ``steps`` in one request (``params`` without the step's
    stop and length: they are set here)."""
    prompt, continued = step_prompt(messages, steps, cfg)
    stop = () if cfg.regex is not None else (cfg.delimiter,)
    step_params = params.model_copy(
        update={
            "stop": tuple(dict.fromkeys((*params.stop, *stop))),
            "max_tokens": cfg.max_step_tokens,
        }
    )
    generation = await _continue(ctx, backend, prompt, k, step_params, purpose, continued, cfg)
    return [to_step(c, cfg) for c in generation.completions]


async def rest_of_solution(
    ctx: RunContext,
    backend: Backend,
    messages: list[Message],
    steps: list[str],
    params: SamplingParams,
    cfg: StepsConfig,
    max_tokens: int,
    purpose: str,
) -> Step:
    """The rest of the solution after ``steps`` in one request (no step stop, up to
    ``max_tokens``): terminal when it gives the final answer or the model ends it."""
    prompt, continued = step_prompt(messages, steps, cfg, rest=True)
    rest_params = params.model_copy(update={"max_tokens": max_tokens})
    generation = await _continue(ctx, backend, prompt, 1, rest_params, purpose, continued, cfg)
    (completion,) = generation.completions
    text = completion.text.rstrip()
    truncated = completion.finish_reason == "length"
    gives_answer = re.search(cfg.final, text) is not None
    return Step(
        text=text,
        finish_reason=completion.finish_reason,
        completion_tokens=completion.completion_tokens,
        terminal=gives_answer or not truncated,
        truncated=truncated and not gives_answer,
    )


async def _continue(
    ctx: RunContext,
    backend: Backend,
    prompt: Prompt,
    k: int,
    params: SamplingParams,
    purpose: str,
    continued: bool,
    cfg: StepsConfig,
) -> Generation:
    try:
        return await ctx.generate(
            backend,
            prompt,
            k,
            params,
            purpose,
            continue_final_message=continued,
            cache_prompt=cfg.prompt_cache,
        )
    except BackendRequestError as exc:
        if not continued:
            raise
        raise ConfigError(
            f"{backend.name} rejected a request that continues a partial assistant turn "
            f"(tree search grows solutions this way): {exc.message}",
            hint="set `steps: {continuation: restate}` on the component to restate the partial "
            "solution in the user's message instead",
        ) from exc
