"""Upper bounds of what a scorer's model calls cost (:meth:`Scorer.cost_bound`), known before
they are made, so that a strategy's budget can hold them.

A prompt is bounded by the scoring model's own tokenizer where its backend has one (the count plus
the chat template's allowance, which never undercounts), else without one
(:func:`~ponder.systems._budget.upper_bound`: at most one token per UTF-8 byte). A reply shown
again in a repair prompt is counted at twice its ``max_tokens`` (re-tokenising a text can split it
differently).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ponder.records import Message
from ponder.systems._budget import MESSAGE_OVERHEAD
from ponder.systems._prompts import template

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.systems._context import RunContext

# A repair prompt names the problem with the reply: a sentence of the parser's (the longest are
# under 150 bytes).
_PROBLEM_BYTES = 300


async def call_bound(
    ctx: RunContext, backend: Backend, messages: Sequence[Message], max_tokens: int
) -> tuple[int, int]:
    """One call: 1 call, and at most the prompt's tokens plus ``max_tokens``."""
    return 1, await ctx.prompt_bound(backend, list(messages)) + max_tokens


async def asked_bound(
    ctx: RunContext,
    backend: Backend,
    messages: Sequence[Message],
    max_tokens: int,
    repair_retries: int,
    expected: str,
) -> tuple[int, int]:
    """A :meth:`RunContext.ask` with at most ``repair_retries`` repair prompts: its calls, and
    the tokens of all of them (each repair resends the conversation so far)."""
    base = await ctx.prompt_bound(backend, list(messages))
    repair = len(template("repair").encode()) + len(expected.encode()) + _PROBLEM_BYTES
    per_round = 2 * max_tokens + repair + 2 * MESSAGE_OVERHEAD
    tokens = sum(base + attempt * per_round + max_tokens for attempt in range(repair_retries + 1))
    return repair_retries + 1, tokens
