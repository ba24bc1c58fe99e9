"""Decide whether an extracted answer means the same as the reference answer."""

from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from ponder.errors import VerifyError
from ponder.text import normalize_answer

# math-verify's own timeouts use signal.alarm, which only works in a process's main thread
# (elsewhere it raises). Its default limit applies there; off the main thread the caller must bound
# the time itself.
_MATH_VERIFY_TIMEOUT_S = 5

_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SLASH = re.compile(r"(?P<num>[-+]?\d+(?:\.\d+)?)/(?P<den>[-+]?\d+(?:\.\d+)?)")
_FRAC = re.compile(
    r"(?P<sign>[-+]?)\\[dt]?frac(?:\{(?P<num>[-+]?\d+)\}\{(?P<den>[-+]?\d+)\}|(?P<n1>\d)(?P<d1>\d))"
)


def is_equivalent(reference: str, answer: str) -> bool:
    """Whether ``answer`` is mathematically the same as ``reference``.

    Plain numbers (integers, decimals, ``a/b``, ``\\frac{a}{b}``, with thousands separators,
    currency or a trailing percent sign) are compared exactly as fractions, so ``18 == 18.00``,
    ``0.5 == 1/2`` and ``50% == 50`` (a percent sign is a unit, not a factor of 1/100), but
    ``0.33 != 1/3``. Anything else goes to math-verify (symbolic comparison: ``\\sqrt{2}``,
    ``2\\pi``, intervals, sets, equations).

    Pure and safe to call in a worker process. Input that math-verify cannot read or evaluate is
    not equivalent (math-verify's own rule); a failure of the check itself (math-verify missing,
    an exception that escapes it) is not the answer's fault and raises.

    Raises:
        VerifyError: math-verify is not installed, or the comparison crashed (the message names
            the cause); a verifier turns it into an ``error`` verdict, never ``incorrect``.
    """
    try:
        return _equivalent(reference, answer)
    except ModuleNotFoundError as exc:
        raise VerifyError(
            f"math-verify is not available ({exc})", hint="pip install math-verify"
        ) from exc
    except Exception as exc:  # whatever sympy raises, the caller needs one type
        raise VerifyError(
            f"the equivalence check of {answer!r} against {reference!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def as_number(text: str) -> Fraction | None:
    """The exact value of a plain number written as text, or None when it is not one."""
    s = normalize_answer(text).replace(" ", "").removesuffix("%")
    try:
        if _DECIMAL.fullmatch(s):
            return Fraction(Decimal(s))
        if m := _SLASH.fullmatch(s):
            return Fraction(Decimal(m["num"])) / Fraction(Decimal(m["den"]))
        if m := _FRAC.fullmatch(s):
            value = Fraction(int(m["num"] or m["n1"]), int(m["den"] or m["d1"]))
            return -value if m["sign"] == "-" else value
    except (ZeroDivisionError, InvalidOperation, ValueError):
        return None
    return None


def _equivalent(reference: str, answer: str) -> bool:
    ref, ans = normalize_answer(reference), normalize_answer(answer)
    if not ref or not ans:
        return False
    if ref == ans:
        return True
    ref_num, ans_num = as_number(ref), as_number(ans)
    if ref_num is not None and ans_num is not None:
        return ref_num == ans_num
    return _symbolic_equivalent(ref, ans)


def _symbolic_equivalent(reference: str, answer: str) -> bool:
    from math_verify import verify  # deferred: importing sympy costs ~0.5 s

    timeout = _timeout()
    gold, target = _parse(reference, timeout), _parse(answer, timeout)
    if not gold or not target:
        return False
    # math-verify reads expressions it cannot evaluate ("1/0") as not equal, by its own rules;
    # anything that escapes it is a failure of the check (see is_equivalent).
    return bool(verify(gold, target, timeout_seconds=timeout))


def _parse(text: str, timeout: int | None) -> list[Any]:
    """math-verify's parse of ``text``, first as inline LaTeX, then as it is."""
    from math_verify import parse

    for candidate in (f"${text}$", text):
        parsed = parse(candidate, parsing_timeout=timeout)
        if parsed:
            return list(parsed)
    return []


def _timeout() -> int | None:
    return _MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def warm_up() -> None:
    """Import math-verify and run one comparison, so that a worker's first check is not slow.

    Without math-verify this does nothing: plain numbers are still compared, and each symbolic
    comparison gets an ``error`` verdict that says math-verify is missing.
    """
    try:
        import math_verify  # noqa: F401
    except ModuleNotFoundError:
        return
    _symbolic_equivalent("\\sqrt{4}", "2")
