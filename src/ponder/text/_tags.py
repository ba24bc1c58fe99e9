"""Answers the prompt asked for between tags: ``<answer>...</answer>``."""

from __future__ import annotations

import re
from functools import lru_cache

from ponder.text._think import strip_think


@lru_cache(maxsize=16)
def _tag_patterns(tag: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    name = re.escape(tag)
    return (
        re.compile(rf"<{name}>", re.IGNORECASE),
        re.compile(rf"</{name}>", re.IGNORECASE),
    )


def tagged_answer(text: str, tag: str = "answer") -> str | None:
    """The content of the last ``<tag>...</tag>`` in ``text``, outside any ``<think>`` block.

    The rules, in order:

    1. Reasoning is dropped first (:func:`strip_think`), so a tag the model wrote while thinking
       never counts.
    2. The last opening ``<tag>`` with a non-empty content wins. Its content runs to the next
       closing ``</tag>``; the last opening tag's may also run to the end of the text (generation
       stopped at ``</tag>``, which a stop sequence leaves out of the text, or ran out of tokens
       after the answer). An empty ``<tag></tag>``, or an unclosed tag that is not the last, is
       passed over for the one before it.
    3. The content is stripped of surrounding whitespace. No opening tag with a non-empty content
       is no answer (None): nothing else in the text is taken for the answer.

    Tags are matched case-insensitively (``<Answer>`` counts).

    Args:
        text: A model's reply.
        tag: The tag name, without angle brackets.
    """
    if not tag or not tag.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"tag must be a plain name such as 'answer', got {tag!r}")
    opening, closing = _tag_patterns(tag)
    body = strip_think(text)
    starts = list(opening.finditer(body))
    for n, start in enumerate(reversed(starts)):
        rest = body[start.end() :]
        end = closing.search(rest)
        if end is None and n > 0:
            continue
        answer = (rest[: end.start()] if end else rest).strip()
        if answer:
            return answer
    return None
