"""Answer extractors: how a candidate's final answer is pulled out of its text (for voting).

``math`` (the default) is :func:`ponder.text.extract_answer`, the math verifier's own extraction;
``code`` is :func:`ponder.verify.code.extract_program`, the code verifier's own, so that voting
and verifying read the same answer from the same text. Every extractor ignores ``<think>``
reasoning (:func:`ponder.text.strip_think`). Register more with :func:`register_extractor`, or from an
installed plugin through the ``ponder.extractors`` entry-point group (named after the extractor; a module
that registers it, or the function itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from ponder._registry import callable_adopter, lookup, names, registering, set_adopter
from ponder.text import extract_answer, strip_think
from ponder.verify.code import extract_program

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
    lines = [line.strip() for line in strip_think(text).splitlines() if line.strip()]
    return lines[-1] if lines else None


@register_extractor("text")
def _whole_text(text: str) -> str | None:
    return " ".join(strip_think(text).split()) or None


@register_extractor("code")
def _program(text: str) -> str | None:
    # The program the code verifier would run for this text (without a task prompt to continue),
    # without surrounding blank space, so that blocks differing only in it vote together.
    program = extract_program(text)
    return program.strip() or None if program is not None else None
