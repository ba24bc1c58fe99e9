"""Hidden reasoning: the ``<think>`` blocks of reasoning models."""

from __future__ import annotations

import re

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)


def strip_think(text: str) -> str:
    """``text`` without its reasoning, so that nothing inside it counts as the answer.

    * Closed ``<think>...</think>`` blocks are dropped (each becomes a line break).
    * A stray ``</think>`` (the chat template opened the block) drops everything before it.
    * An unclosed ``<think>`` drops everything after it: a reasoning trace cut off by the token
      limit has no answer.

    Tags are matched case-insensitively.
    """
    text = _THINK_BLOCK.sub("\n", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    opened = _THINK_OPEN.search(text)
    if opened:
        text = text[: opened.start()]
    return text
