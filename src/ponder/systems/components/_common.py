"""Prompt building and sampling helpers shared by the built-in components."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ponder._aio import gather_all
from ponder.backends import Backend
from ponder.records import Completion, Message, Prompt, SamplingParams
from ponder.systems._component import ModelComponentConfig
from ponder.systems._context import RunContext
from ponder.systems._prompts import template
from ponder.systems._state import Candidate, State
from ponder.text import strip_think


def system_text(config: ModelComponentConfig, default: str) -> str:
    """The component's system message: the config's override, else the ``default`` prompt file."""
    return config.system_prompt if config.system_prompt is not None else template(default)


def user_template(config: ModelComponentConfig, default: str) -> str:
    """The component's user prompt template: the config's override, else the ``default`` file."""
    return config.template if config.template is not None else template(default)


def chat(system: str, user: str) -> list[Message]:
    """A system message (left out when empty) and one user message."""
    messages = [Message(role="system", content=system)] if system else []
    return [*messages, Message(role="user", content=user)]


def numbered(
    candidates: Sequence[Candidate],
    state: State | None = None,
    texts: Sequence[str] | None = None,
) -> str:
    """Candidates as ``[1] text`` blocks; with ``state``, each followed by its current critiques.

    ``texts`` replaces the candidates' texts (shortened to fit the context, see ``RunContext.fit``);
    otherwise they are shown without their ``<think>`` reasoning.
    """
    blocks = []
    shown = [strip_think(c.text).strip() for c in candidates] if texts is None else texts
    for i, (candidate, text) in enumerate(zip(candidates, shown, strict=True), 1):
        block = f"[{i}]\n{text}"
        if state is not None:
            for c in state.critiques_of(candidate):
                if c.strengths or c.weaknesses:
                    block += f"\nReview of [{i}]: strengths: {c.strengths or '-'}"
                    block += f"; weaknesses: {c.weaknesses or '-'}"
                else:
                    block += f"\nReview of [{i}]: {c.text}"
        blocks.append(block)
    return "\n\n".join(blocks)


async def sample(
    ctx: RunContext,
    backend: Backend,
    prompt: Prompt,
    n: int,
    params: Callable[[int], SamplingParams],
    purpose: str,
) -> list[Completion]:
    """``n`` completions of one prompt in as few requests as the backend allows.

    Up to ``backend.max_batch`` completions go in one request, so they share the prompt's prefill;
    larger ``n`` is split into concurrent requests. ``params(chunk)`` gives each request its params.
    """
    size = max(1, backend.max_batch)
    chunks = [min(size, n - start) for start in range(0, n, size)]
    labels = [
        purpose if len(chunks) == 1 else f"{purpose} [{i + 1}/{len(chunks)}]"
        for i in range(len(chunks))
    ]
    generations = await gather_all(
        ctx.generate(backend, prompt, k, params(i), labels[i]) for i, k in enumerate(chunks)
    )
    return [c for g in generations for c in g.completions]
