"""Answer extractors: how a candidate's final answer is pulled out of its text (for voting).

``math`` (the default) is :func:`ponder.verify.math.extract_answer`. Register more with
:func:`register_extractor`, or from an installed plugin through the ``ponder.extractors`` entry-point
group (named after the extractor; a module that registers it, or the function itself).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import cast

from ponder._registry import callable_adopter, lookup, names, registering, set_adopter
from ponder.verify.math import extract_answer

Extractor = Callable[[str], str | None]
"""Candidate text -> its answer, or None when it states none."""


set_adopter("extractor", callable_adopter("answer extractor"))


def register_extractor(name: str) -> Callable[[Extractor], Extractor]:
    """Register an answer extractor under ``name`` (decorator); configs name it in ``extractor``.

    Raises:
        DuplicateNameError: another extractor already has the name.
    """
    return registering("extractor", name)


def extractor_names() -> list[str]:
    """Names of all answer extractors (built-in and plugins), sorted."""
    return names("extractor")


def get_extractor(name: str) -> Extractor:
    """The extractor registered as ``name``.

    Raises:
        UnknownNameError: no such extractor (the message lists the valid ones).
        PluginLoadError: the plugin that provides it failed to load.
    """
    return cast(Extractor, lookup("extractor", name))


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
