"""Prompt templates, kept as text files in ``ponder/systems/prompts``.

Templates use ``$name`` placeholders (:class:`string.Template`), so braces in prompts, candidates or
JSON examples never need escaping.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from importlib import resources
from string import Template


@cache
def template(name: str) -> str:
    """The text of ``prompts/<name>.txt`` (without its final newline)."""
    path = resources.files("ponder.systems").joinpath("prompts", f"{name}.txt")
    return path.read_text(encoding="utf-8").rstrip("\n")


def render(text: str, **values: object) -> str:
    """Fill the ``$name`` placeholders of ``text``; placeholders without a value stay as they are."""
    return Template(text).safe_substitute({k: str(v) for k, v in values.items()})


def check_template(text: str, allowed: Collection[str]) -> None:
    """Check that a user-supplied template uses only ``allowed`` placeholders.

    Raises:
        ValueError: an unknown placeholder or a malformed ``$`` (write ``$$`` for a literal dollar).
    """
    t = Template(text)
    if not t.is_valid():
        raise ValueError("the template has a malformed $ placeholder (write $$ for a literal $)")
    unknown = sorted(set(t.get_identifiers()) - set(allowed))
    if unknown:
        names = ", ".join(f"${n}" for n in unknown)
        raise ValueError(
            f"the template uses unknown placeholder(s) {names}; "
            f"available: {', '.join('$' + a for a in sorted(allowed))}"
        )
