"""Verifiers: judge samples against reference answers (see :class:`Verifier`)."""

from ponder.verify._base import Verifier
from ponder.verify._registry import make_verifier, register_verifier, verifier_kinds
from ponder.verify.math import MathVerifier, extract_answer, is_equivalent

__all__ = [
    "MathVerifier",
    "Verifier",
    "extract_answer",
    "is_equivalent",
    "make_verifier",
    "register_verifier",
    "verifier_kinds",
]
