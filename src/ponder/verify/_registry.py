"""Verifiers by kind: the task names a kind, the registry builds a verifier for it."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from ponder.errors import ConfigError
from ponder.verify._base import Verifier

_FACTORIES: dict[str, Callable[[], Verifier]] = {}


def register_verifier(kind: str) -> Callable[[Callable[[], Verifier]], Callable[[], Verifier]]:
    """Register a verifier factory for tasks whose ``verifier`` is ``kind`` (decorator).

    Plugins register from a module named in the ``ponder.verifiers`` entry-point group.
    """

    def deco(factory: Callable[[], Verifier]) -> Callable[[], Verifier]:
        _FACTORIES[kind] = factory
        return factory

    return deco


def verifier_kinds() -> list[str]:
    for ep in entry_points(group="ponder.verifiers"):
        ep.load()
    return sorted(_FACTORIES)


def make_verifier(kind: str) -> Verifier:
    """A new verifier of ``kind`` (close it after use, or use it in a ``with`` block)."""
    if kind not in _FACTORIES:
        verifier_kinds()
    if kind not in _FACTORIES:
        raise ConfigError(
            f"no verifier for kind {kind!r}", hint=f"known kinds: {', '.join(verifier_kinds())}"
        )
    return _FACTORIES[kind]()


@register_verifier("math")
def _math() -> Verifier:
    from ponder.verify.math import MathVerifier

    return MathVerifier()


@register_verifier("code")
def _code() -> Verifier:
    from ponder.verify.code import CodeVerifier

    return CodeVerifier()
