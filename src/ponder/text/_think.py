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


def split_think(text: str) -> tuple[str | None, str]:
    """``(reasoning, answer)``: the text inside ``text``'s ``<think>`` blocks, and
    :func:`strip_think` of it (what the reader is shown), with the break the blocks left at its
    start removed.

    ``reasoning`` is None when ``text`` has no think tag (``answer`` is then ``text`` unchanged);
    several blocks are joined by a blank line. A stray ``</think>`` makes everything before it
    reasoning; an unclosed ``<think>`` makes everything after it reasoning.
    """
    if not (_THINK_OPEN.search(text) or _THINK_CLOSE.search(text)):
        return None, text
    parts = [m.group(0)[7:-8] for m in _THINK_BLOCK.finditer(text)]
    rest = _THINK_BLOCK.sub("\n", text)
    closes = list(_THINK_CLOSE.finditer(rest))
    if closes:
        parts.insert(0, rest[: closes[-1].start()])
        rest = rest[closes[-1].end() :]
    opened = _THINK_OPEN.search(rest)
    if opened:
        parts.append(rest[opened.end() :])
        rest = rest[: opened.start()]
    reasoning = "\n\n".join(p.strip() for p in parts if p.strip())
    return reasoning, rest.lstrip()
