"""Answer extractors: how a candidate's final answer is pulled out of its text (for voting).

``math`` (the default) is :func:`ponder.verify.math.extract_answer`. Register more with
:func:`register_extractor`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ponder.errors import ConfigError
from ponder.verify.math import extract_answer

Extractor = Callable[[str], str | None]
"""Candidate text -> its answer, or None when it states none."""

_EXTRACTORS: dict[str, Extractor] = {}


def register_extractor(name: str) -> Callable[[Extractor], Extractor]:
    """Register an answer extractor under ``name`` (decorator); configs name it in ``extractor``."""

    def deco(fn: Extractor) -> Extractor:
        _EXTRACTORS[name] = fn
        return fn

    return deco


def extractor_names() -> list[str]:
    return sorted(_EXTRACTORS)


def get_extractor(name: str) -> Extractor:
    """The extractor registered as ``name``.

    Raises:
        ConfigError: no such extractor.
    """
    if name not in _EXTRACTORS:
        raise ConfigError(
            f"unknown answer extractor {name!r}",
            hint=f"choose one of: {', '.join(extractor_names())}",
        )
    return _EXTRACTORS[name]


@register_extractor("math")
def _math(text: str) -> str | None:
    return extract_answer(text)


@register_extractor("last_line")
def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


@register_extractor("text")
def _whole_text(text: str) -> str | None:
    return " ".join(text.split()) or None


_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.S)


@register_extractor("code")
def _last_code_block(text: str) -> str | None:
    blocks = _FENCE.findall(text)
    return blocks[-1].strip() or None if blocks else None
