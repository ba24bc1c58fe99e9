"""Verifiers by kind on the shared plugin registry: the task names a kind, the registry builds a
verifier for it. Plugins: the ``ponder.verifiers`` entry-point group (a module that registers with
:func:`register_verifier`, or a factory ``() -> Verifier``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from ponder._registry import callable_adopter, lookup, names, registering, set_adopter
from ponder.verify._base import Verifier

VerifierFactory = Callable[[], Verifier]


set_adopter("verifier", callable_adopter("verifier factory"))


def register_verifier(kind: str) -> Callable[[VerifierFactory], VerifierFactory]:
    """Register a verifier factory for tasks whose ``verifier`` is ``kind`` (decorator).

    Raises:
        DuplicateNameError: another factory already has the kind.
    """
    return registering("verifier", kind)


def verifier_kinds() -> list[str]:
    """Names of all verifier kinds (built-in and plugins), sorted."""
    return names("verifier")


def make_verifier(kind: str) -> Verifier:
    """A new verifier of ``kind`` (close it after use, or use it in a ``with`` block).

    Raises:
        UnknownNameError: no such kind (the message lists the kinds).
        PluginLoadError: the plugin that provides it failed to load.
    """
    return cast(VerifierFactory, lookup("verifier", kind))()


@register_verifier("math")
def _math() -> Verifier:
    from ponder.verify.math import MathVerifier

    return MathVerifier()


@register_verifier("code")
def _code() -> Verifier:
    from ponder.verify.code import CodeVerifier

    return CodeVerifier()


@register_verifier("gym")
def _gym() -> Verifier:
    from ponder.verify.gym import GymVerifier

    return GymVerifier()
