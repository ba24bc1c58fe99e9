"""The math verifier: answer extraction, equivalence, and the process-pool verifier."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.errors import ConfigError, VerifyError
from ponder.verify import MathVerifier, Verifier, extract_answer, is_equivalent
from ponder.verify.math import DEFAULT_STRATEGIES, _equiv
from ponder.verify.math._verifier import CheckResult, check_one

# --- extraction -----------------------------------------------------------------------------------

EXTRACTION = [
    # GSM8K style: "####" wins over any later number, trailing units go.
    ("Janet sells 16 - 3 - 4 = 9 eggs at $2 each: 9 * 2 = 18.\n#### 18", "18"),
    ("#### 18 eggs", "18"),
    ("#### 7\nLater text mentions 99 and 100.", "7"),
    ("#### $1,234.50", "1234.50"),
    ("#### 1\nsome more\n#### 2", "2"),
    # "####" and \boxed are both final-answer markers: the one written last wins.
    ("#### 1200\nTo find it: 60 * 3 = 180; 180 * 3 = 540.\nThus \\(\\boxed{540}\\).", "540"),
    ("So \\boxed{12}.\n#### 13", "13"),
    ("#### 7\nthe answer is 8", "7"),  # a weaker marker later does not override a final one
    # \boxed / \fbox, with nested and escaped braces; the last box counts.
    (r"So the total is \boxed{\dfrac{1}{2}}.", r"\dfrac{1}{2}"),
    (r"\boxed{\sqrt{2}}", r"\sqrt{2}"),
    (r"We get \boxed{\frac{1}{\sqrt{2}}} in the end", r"\frac{1}{\sqrt{2}}"),
    (r"first \boxed{3}, corrected: \boxed{4}", "4"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"\fbox{12}", "12"),
    (r"The final answer is $\boxed{5}$.", "5"),
    # A truncated box is not an answer; the fallback takes the last number.
    (r"the answer is \boxed{5", "5"),
    # "the answer is" / "final answer:": the expression after it, without units or punctuation.
    ("The answer is 42 dollars.", "42"),
    ("The answer is $18.00.", "18.00"),
    ("**Final answer:** 1,234", "1234"),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),
    ("I think the answer is 5. Let me check whether the answer is correct.", "5"),
    ("The answer is 2x + 1.", "2x + 1"),
    (r"The answer is \frac{1}{2} cup.", r"\frac{1}{2}"),
    (r"The answer is \(\frac{7}{2}\).", r"\frac{7}{2}"),
    (r"The answer is 2\pi.", r"2\pi"),
    ("The answer is (B) Paris.", "(B)"),
    ("answer = -3.5", "-3.5"),
    ("The answer is 50%.", "50%"),
    # The last number: negatives (also the Unicode minus), decimals, thousands, fractions, money.
    ("the result is −5", "-5"),
    ("So x = 3, y = 4, total 7.", "7"),
    ("values 1,234,567 and then 3/4", "3/4"),
    ("Total: $1,000,000", "1000000"),
    ("it costs 3.50.", "3.50"),
    ("the temperature fell to -12 degrees", "-12"),
    ("we get 10-3", "3"),  # a binary minus is not a sign
    # Reasoning blocks never hold the answer.
    ("<think>maybe 99</think> the answer is 12", "12"),
    ("<think>1</think> The answer is 5. <think>check: 6?</think>", "5"),
    ("<think>It is 99... no, wait", None),
    ("template opened the block: 77 </think> The answer is 8.", "8"),
    # Wrappers small models put around the answer: a copied "<answer>" placeholder, bold, math.
    ("The eggs cost 540 in all.\n#### <answer>540</answer>", "540"),
    ("#### <540>", "540"),
    ("#### <Answer> 1,080 </Answer>", "1080"),
    ("The answer is <answer>540</answer>.", "540"),
    ("#### **540**", "540"),
    ("#### $540$", "540"),
    ("#### 540 dollars.", "540"),
    ("<answer>540</answer>", "540"),
    ("#### <answer>", None),
    # Nothing to find.
    ("No idea.", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACTION)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_strategy_order_is_configurable() -> None:
    text = "#### 7\nthen 99"
    assert extract_answer(text, ["last_number"]) == "99"
    assert extract_answer(text, ["last_number", "hash"]) == "99"
    assert extract_answer(text, ["boxed"]) is None
    assert extract_answer(r"\boxed{3} so 4", ["last_number", "boxed"]) == "4"
    # hash and boxed compete by position wherever they stand in the list
    assert extract_answer("#### 1\n\\boxed{2}", ["boxed", "hash"]) == "2"
    assert extract_answer("\\boxed{2}\n#### 1", ["boxed", "answer_is", "hash"]) == "1"
    assert extract_answer("#### 1\n\\boxed{2}", ["hash"]) == "1"
    assert (
        extract_answer("#### 1\n\\boxed{2} the answer is 3", ["answer_is", "hash", "boxed"]) == "3"
    )


def test_unknown_strategy_is_a_config_error_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="hash, boxed, answer_is, last_number") as info:
        extract_answer("42", ["boxed", "nope"])  # type: ignore[list-item]
    assert "'nope'" in str(info.value)
    with pytest.raises(ConfigError, match="valid strategies"):
        MathVerifier(strategies=["last_digit"])  # type: ignore[list-item]
    with pytest.raises(ConfigError):
        MathVerifier(strategies=[])


# --- equivalence ----------------------------------------------------------------------------------

EQUIVALENCE = [
    ("18", "18.0", True),
    ("18", "18.00", True),
    ("18", "$18.00", True),
    ("1234", "1,234", True),
    ("1,000", "1000", True),
    ("0.5", "1/2", True),
    ("0.5", r"\frac{1}{2}", True),
    ("0.5", r"\dfrac{1}{2}", True),
    ("0.5", r"\frac12", True),
    ("3/4", "0.75", True),
    (r"\frac{3}{4}", "0.75", True),
    ("-3", "-3", True),
    ("-5", "−5", True),  # Unicode minus
    ("-5", "5", False),
    # Decision: a percent sign is a unit (GSM8K references omit it), not a factor of 1/100.
    ("50", "50%", True),
    ("50", r"50\%", True),
    ("0.5", "50%", False),
    # Plain numbers compare exactly: a rounded decimal is not the fraction.
    ("1/3", "0.333333", False),
    (r"\sqrt{2}", r"\sqrt{2}", True),
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    (r"\frac{\pi}{2}", r"\pi/2", True),
    ("(1,2)", "(1, 2)", True),
    ("18", "19", False),
    ("x", "y", False),
    (r"\sqrt{2}", "1.5", False),
    # Odd input: never an exception, never equivalent.
    ("", "", False),
    ("1/0", "1", False),
    ("abc", "1", False),
    (r"\frac{1}{", r"\frac{1}{", True),  # identical text is identical, parsable or not
    (r"\frac{1}{", "1", False),
]


@pytest.mark.parametrize(("reference", "answer", "expected"), EQUIVALENCE)
def test_is_equivalent(reference: str, answer: str, expected: bool) -> None:
    assert is_equivalent(reference, answer) is expected


def test_is_equivalent_raises_a_verify_error_when_the_check_itself_fails() -> None:
    # A failure of the check is not a wrong answer (issue 11, item 8): it raises, naming the cause.
    with pytest.raises(VerifyError, match=r"equivalence check.*failed: AttributeError"):
        is_equivalent(None, "1")  # type: ignore[arg-type]


def _decimal_string(x: Fraction) -> str | None:
    """``x`` as a finite decimal string, if it has one."""
    q = x.denominator
    for p in (2, 5):
        while q % p == 0:
            q //= p
    if q != 1:
        return None
    places = 0
    while (x * 10**places).denominator != 1:
        places += 1
    return f"{float(x):.{places}f}" if abs(x) < 10**12 else None


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_integers_in_any_format_are_equivalent(x: int) -> None:
    variants = [
        str(x),
        f"{x}.0",
        f"{x}.00",
        f"{x:,}",
        str(x).replace("-", "−"),
        f"\\frac{{{2 * x}}}{{2}}",
        f"{3 * x}/3",
        f"${x}",
    ]
    for v in variants:
        assert is_equivalent(str(x), v), v
    assert not is_equivalent(str(x), str(x + 1))
    assert not is_equivalent(str(x), f"{x + 1:,}")


@settings(max_examples=150, deadline=None)
@given(st.fractions(min_value=-(10**6), max_value=10**6, max_denominator=10**6))
def test_fractions_in_any_format_are_equivalent(x: Fraction) -> None:
    p, q = x.numerator, x.denominator
    variants = [f"{p}/{q}", f"\\frac{{{p}}}{{{q}}}", f"{2 * p}/{2 * q}"]
    if p < 0:
        variants.append(f"-\\frac{{{-p}}}{{{q}}}")
    decimal = _decimal_string(x)
    if decimal is not None:
        variants.append(decimal)
    for v in variants:
        assert is_equivalent(str(x), v), v
    assert not is_equivalent(str(x), str(x + 1))
    assert not is_equivalent(str(x), f"{p + q}/{q}")


# --- one check, in process ------------------------------------------------------------------------

CHECKS = [
    ("18", "Each egg is $2, so 9 * 2 = 18.\n#### 18", "correct", "18"),
    ("18", "#### 19", "incorrect", "19"),
    ("0.75", r"so it is \boxed{\frac{3}{4}}", "correct", r"\frac{3}{4}"),
    (r"\frac{\sqrt{2}}{2}", r"\boxed{\frac{1}{\sqrt{2}}}", "correct", r"\frac{1}{\sqrt{2}}"),
    ("1234", "In total 1,234 apples.", "correct", "1234"),
    ("18", "The answer is $18.00.", "correct", "18.00"),
    ("5", "<think>I guess 5</think> so it is 6", "incorrect", "6"),
    ("5", "I have no idea.", "unparsed", None),
    ("540", "So 540.\n#### <answer>540</answer>", "correct", "540"),
]


def test_a_failing_equivalence_check_is_an_error_not_incorrect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(reference: str, answer: str) -> bool:
        raise RuntimeError("sympy exploded")

    # Only the symbolic path crashes: plain numbers never reach it.
    monkeypatch.setattr(_equiv, "_symbolic_equivalent", crash)
    assert check_one("18", "#### 18", DEFAULT_STRATEGIES)[0] == "correct"
    status, extracted, detail = check_one(
        r"\frac{\sqrt{2}}{2}", r"\boxed{\frac{1}{\sqrt{2}}}", DEFAULT_STRATEGIES
    )
    assert (status, extracted) == ("error", r"\frac{1}{\sqrt{2}}")
    assert "RuntimeError: sympy exploded" in detail


def test_a_missing_math_verify_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "math_verify", None)  # import math_verify now fails
    status, _, detail = check_one(r"\sqrt{2}", r"\boxed{\sqrt{4}}", DEFAULT_STRATEGIES)
    assert status == "error"
    assert "math-verify is not available" in detail
    assert check_one("18", "#### 19", DEFAULT_STRATEGIES)[0] == "incorrect"


@pytest.mark.parametrize(("reference", "text", "status", "extracted"), CHECKS)
def test_check_one(reference: str, text: str, status: str, extracted: str | None) -> None:
    got_status, got_extracted, _ = check_one(reference, text, DEFAULT_STRATEGIES)
    assert (got_status, got_extracted) == (status, extracted)


# --- the verifier ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verifier() -> Iterator[MathVerifier]:
    with MathVerifier(workers=2) as v:
        yield v


MIXED = [
    ("18", "9 * 2 = 18\n#### 18"),
    ("18", "The answer is 17."),
    (None, "#### 3"),
    ("1/2", r"\boxed{0.5}"),
    ("3", "no number here"),
    ("-5", "the result is −5"),
    ("50", "The answer is 50%."),
    ("1000", "<think>100?</think> It is 1,000."),
    ("2", "#### 2 apples"),
    ("7", "The answer is 7, not 8."),
]
MIXED_STATUSES = [
    "correct",
    "incorrect",
    "error",
    "correct",
    "unparsed",
    "correct",
    "correct",
    "correct",
    "correct",
    "correct",
]


def test_verify_many_keeps_order_and_statuses(verifier: MathVerifier) -> None:
    assert isinstance(verifier, Verifier)
    items = MIXED * 3
    verdicts = verifier.verify_many(items)
    assert [v.status for v in verdicts] == MIXED_STATUSES * 3
    assert verdicts[1].extracted == "17"
    assert verdicts[2].detail == "no reference answer"
    assert verdicts[4].extracted is None
    assert verifier.verify_many([]) == []


def test_the_pool_is_reused_across_calls(verifier: MathVerifier) -> None:
    verifier.verify_many(MIXED[:2])
    pool = verifier._pool
    assert pool is not None
    assert [v.status for v in verifier.verify_many(MIXED[:2])] == ["correct", "incorrect"]
    assert verifier._pool is pool  # no second process start-up


def test_a_check_over_the_time_limit_is_an_error(verifier: MathVerifier) -> None:
    with MathVerifier(timeout_s=1e-6, workers=2) as hasty:
        verdicts = hasty.verify_many(MIXED[:4])
        assert [v.status for v in verdicts] == ["error"] * 4
        assert all(verdicts[i].detail == "timed out after 1e-06s" for i in (0, 1, 3))
        assert verdicts[2].detail == "no reference answer"
        # The same verifier goes on after its pool was replaced.
        assert [v.status for v in hasty.verify_many(MIXED[:1])] == ["error"]
    assert [v.status for v in verifier.verify_many(MIXED)] == MIXED_STATUSES


def test_name_reflects_strategies() -> None:
    assert MathVerifier().name == "math"
    assert MathVerifier(strategies=("boxed", "last_number")).name == "math:boxed,last_number"
    with pytest.raises(ConfigError):
        MathVerifier(timeout_s=0)
    with pytest.raises(ConfigError):
        MathVerifier(workers=0)


# A stand-in for checks that misbehave; it lives here, not in the product, and reaches the workers
# by reference because this module is importable there.
def _misbehaving_check(reference: str, text: str, strategies: tuple[str, ...]) -> CheckResult:
    if text.startswith("hang:"):
        Path(text.removeprefix("hang:")).write_text(str(os.getpid()))
        time.sleep(120)
    if text == "raise":
        raise ValueError("boom")
    if text == "die":
        os._exit(3)
    return check_one(reference, text, strategies)  # type: ignore[arg-type]


class _MisbehavingVerifier(MathVerifier):
    check = staticmethod(_misbehaving_check)


def _check_without_math_verify(
    reference: str, text: str, strategies: tuple[str, ...]
) -> CheckResult:
    sys.modules["math_verify"] = None  # type: ignore[assignment]  # as if it were not installed
    return check_one(reference, text, strategies)  # type: ignore[arg-type]


class _NoMathVerifyVerifier(MathVerifier):
    check = staticmethod(_check_without_math_verify)


def test_without_math_verify_the_workers_give_error_verdicts_with_the_cause() -> None:
    items = [("18", "#### 18"), (r"\sqrt{4}", r"\boxed{2}"), ("18", "#### 17")]
    with _NoMathVerifyVerifier(workers=1) as v:
        verdicts = v.verify_many(items)
    assert [x.status for x in verdicts] == ["correct", "error", "incorrect"]
    assert "math-verify is not available" in verdicts[1].detail


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_hung_check_is_killed_and_the_rest_still_verified(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    items = [*MIXED[:2], ("1", f"hang:{pid_file}"), ("1", "raise"), *MIXED[3:]]
    expected = [*MIXED_STATUSES[:2], "error", "error", *MIXED_STATUSES[3:]]
    with _MisbehavingVerifier(timeout_s=1.0, workers=2) as v:
        start = time.perf_counter()
        verdicts = v.verify_many(items)
        assert time.perf_counter() - start < 100  # killed, not waited for (the hang is 120 s)
        assert [x.status for x in verdicts] == expected
        assert verdicts[2].detail == "timed out after 1s"
        assert verdicts[3].detail == "ValueError: boom"
        assert _gone(int(pid_file.read_text()), within_s=60)  # a wait bound; it returns when gone
        assert [x.status for x in v.verify_many(MIXED[:2])] == MIXED_STATUSES[:2]


def test_a_dying_worker_gives_an_error_verdict_not_a_crash() -> None:
    items = [MIXED[0], ("1", "die"), MIXED[1]]
    with _MisbehavingVerifier(timeout_s=5.0, workers=1) as v:
        verdicts = v.verify_many(items)
    assert [x.status for x in verdicts] == ["correct", "error", "incorrect"]
    assert "worker process died" in verdicts[1].detail
