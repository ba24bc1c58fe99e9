"""A model's context window, as components see it: how many tokens a prompt takes, and fitting
candidates into one prompt.

Components that show many candidates in one prompt (fuse, rank, critique, judge) fit them into the
model's context: when the prompt would leave less than the reply's ``max_tokens`` (at most half the
context), the longest candidates are shortened, each to an equal share of the room left (shorter
ones keep their text and leave their surplus to the others). A shortened candidate keeps its start
and its end (where answers usually are) around a visible marker, ``[... 812 tokens cut ...]``, and
the component records a fallback in the trace naming the candidates cut. Every call is then
limited to the context minus its prompt (``max_tokens`` lowered, with a note in the trace and one
warning per component); a prompt that cannot fit at all raises :class:`PromptTooLongError`, which no
rerun can fix.

Where the numbers come from: the backend's own :meth:`~ponder.backends.Backend.context_size` and
:meth:`~ponder.backends.Backend.count_tokens` (the embedded llama.cpp engine answers both; the
context is asked once per backend). A backend that does not know its context (the default: a server
decides) gets nothing fitted or limited, and one without a tokenizer gets counts estimated from the
text's length (:func:`estimate_tokens`).

Chat prompts count their messages' text plus :data:`MESSAGE_OVERHEAD` tokens per message and
:data:`TEMPLATE_OVERHEAD` per prompt (role markers, and the default system prompt some chat
templates add, e.g. SmolLM2's 15 tokens), so a counted prompt is never smaller than the real one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ponder.backends import Backend
from ponder.errors import UserError
from ponder.records import Prompt

CHARS_PER_TOKEN = 3.0
"""Estimate without a tokenizer: BPE tokenizers average about 4 characters a token on English
prose, fewer on code and digits; 3 errs towards more tokens, so estimated prompts still fit."""
MESSAGE_OVERHEAD = 8
"""Tokens counted per chat message for its role markers."""
TEMPLATE_OVERHEAD = 48
"""Tokens counted per chat prompt for the template's own text (a default system prompt, the
assistant's opening)."""
MIN_SHARE = 16
"""Fewest tokens a shortened candidate keeps; below this the prompt cannot be fitted."""
MARKER = "[... {cut} tokens cut ...]"
P = TypeVar("P", bound=Prompt)
"""Put where a candidate was shortened."""


class PromptTooLongError(UserError):
    """A prompt does not fit in the model's context, even with its candidates shortened.

    Retrying cannot help: the prompt, the model or the config must change.
    """


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` estimated from its length (see :data:`CHARS_PER_TOKEN`)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def upper_bound(prompt: Prompt) -> int:
    """Tokens ``prompt`` cannot exceed, without asking a tokenizer: byte-level tokenizers make at
    most one token per UTF-8 byte."""
    if isinstance(prompt, str):
        return len(prompt.encode()) + TEMPLATE_OVERHEAD
    text = sum(len((m.content or "").encode()) for m in prompt)
    return text + MESSAGE_OVERHEAD * len(prompt) + TEMPLATE_OVERHEAD


class TokenMeter:
    """Context size and token counts of one backend (see the module docstring for the sources).

    Args:
        backend: The backend whose model is measured.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._context: int | None = None
        self._known = False
        self._tokenizes: bool | None = None  # whether the backend counts tokens (asked once)

    async def context(self) -> int | None:
        """Tokens one request may hold (None: unknown)."""
        # Not locked: concurrent first calls may both measure, and get the same answer.
        if not self._known:
            self._context = await self._measure_context()
            self._known = True
        return self._context

    async def _measure_context(self) -> int | None:
        # Off the event loop: the backend may load its model or ask its engine.
        return await asyncio.to_thread(self._backend.context_size)

    async def count(self, text: str) -> int:
        """Tokens of ``text`` (estimated when the backend has no tokenizer)."""
        if not text:
            return 0
        counted = await asyncio.to_thread(self._backend.count_tokens, text)
        return estimate_tokens(text) if counted is None else counted

    async def prompt_bound(self, prompt: Prompt) -> int:
        """Tokens ``prompt`` cannot exceed, for budgets: :meth:`prompt_tokens` where the backend
        has a tokenizer, else :func:`upper_bound` (an estimate from the length may undercount)."""
        if self._tokenizes is None:
            self._tokenizes = await asyncio.to_thread(self._backend.count_tokens, "a") is not None
        return await self.prompt_tokens(prompt) if self._tokenizes else upper_bound(prompt)

    async def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of a prompt, template overhead included (never fewer than the real count)."""
        if isinstance(prompt, str):
            return await self.count(prompt) + TEMPLATE_OVERHEAD
        counts = [await self.count(m.content or "") for m in prompt]
        return sum(counts) + MESSAGE_OVERHEAD * len(prompt) + TEMPLATE_OVERHEAD


# ----- fitting candidates -----------------------------------------------------------------------


@dataclass
class Fitted(Generic[P]):
    """Texts fitted into a prompt.

    Attributes:
        prompt: The prompt built from ``texts``.
        texts: The texts, shortened where needed.
        cut: Index of each shortened text -> tokens cut from it.
        context: The model's context (None: unknown, nothing was fitted).
        room: Tokens the texts could use together (when some were cut).
    """

    prompt: P
    texts: list[str]
    cut: dict[int, int] = field(default_factory=dict)
    context: int | None = None
    room: int = 0


def reply_reserve(max_tokens: int, context: int) -> int:
    """Tokens kept free for the reply: its ``max_tokens``, but at most half the context."""
    return min(max_tokens, context // 2)


async def fit_texts(
    meter: TokenMeter,
    build: Callable[[list[str]], P],
    texts: Sequence[str],
    *,
    max_tokens: int,
) -> Fitted[P]:
    """``build(texts)``, with the longest texts shortened so that the prompt leaves room for the
    reply (:func:`reply_reserve`) in the model's context.

    Raises:
        PromptTooLongError: even texts of :data:`MIN_SHARE` tokens each do not fit.
    """
    texts = list(texts)
    prompt = build(texts)
    context = await meter.context()
    if context is None:
        return Fitted(prompt, texts)
    reserve = reply_reserve(max_tokens, context)
    if upper_bound(prompt) + reserve <= context:
        return Fitted(prompt, texts, context=context)
    if await meter.prompt_tokens(prompt) + reserve <= context:
        return Fitted(prompt, texts, context=context)
    fixed = await meter.prompt_tokens(build([""] * len(texts)))
    counts = [await meter.count(t) for t in texts]
    marker = await meter.count(MARKER.format(cut=10**6)) + 2
    room = context - reserve - fixed - marker * len(texts)
    for _ in range(4):
        if room < MIN_SHARE * len(texts):
            raise PromptTooLongError(
                f"{len(texts)} candidate(s) do not fit in the model's context of {context} tokens: "
                f"the prompt around them takes {fixed} and the reply {reserve}, leaving "
                f"{max(room, 0)} tokens (at least {MIN_SHARE} a candidate are needed)",
                hint="keep fewer candidates before this component (e.g. a rank layer with top_k), "
                "lower its max_tokens, or use a model with a longer context",
            )
        shares = water_fill(counts, room)
        fitted = list(texts)
        cut: dict[int, int] = {}
        for i, (text, n, share) in enumerate(zip(texts, counts, shares, strict=True)):
            if n > share:
                fitted[i], cut[i] = await _shorten(meter, text, n, share)
        prompt = build(fitted)
        over = await meter.prompt_tokens(prompt) + reserve - context
        if over <= 0:
            return Fitted(prompt, fitted, cut, context, room)
        room -= over + MIN_SHARE  # counts of pieces need not add up exactly: try a little less
    raise PromptTooLongError(
        f"the candidates could not be fitted into the model's context of {context} tokens",
        hint="keep fewer candidates before this component, or use a model with a longer context",
    )


def water_fill(counts: Sequence[int], room: int) -> list[int]:
    """Each text's share of ``room`` tokens: equal shares, where texts shorter than their share
    keep all of theirs and leave the rest to the others."""
    shares = [0] * len(counts)
    left = room
    pending = sorted(range(len(counts)), key=lambda i: counts[i])
    while pending:
        share = left // len(pending)
        i = pending[0]
        if counts[i] <= share:
            shares[i] = counts[i]
            left -= counts[i]
            pending.pop(0)
            continue
        for j in pending:
            shares[j] = share
        break
    return shares


async def _shorten(meter: TokenMeter, text: str, count: int, share: int) -> tuple[str, int]:
    """``text`` (``count`` tokens) cut to about ``share`` tokens: its start and end around a marker."""
    keep_chars = max(1, int(len(text) * share / count))
    head = text[: keep_chars // 2].rstrip()
    tail = text[len(text) - (keep_chars - keep_chars // 2) :].lstrip()
    kept = await meter.count(head) + await meter.count(tail)
    cut = max(1, count - kept)
    return f"{head}\n{MARKER.format(cut=cut)}\n{tail}", cut
