"""Parsers of model replies: rankings, pairwise winners, scores, verdicts, critiques, unit tests.

Each parser returns a value or raises :class:`Unparseable` whose ``problem`` is phrased for the
model: it is sent back in a repair prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal


class Unparseable(Exception):
    """A reply does not have the required form; ``problem`` says what is wrong."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
_RANKING_LINE = re.compile(r"^[\s*#>_-]*ranking\s*[*_]*\s*:(?P<rest>.*)$", re.I | re.M)
_CHAIN = re.compile(r"\[\s*\d+\s*\](?:\s*(?:>|≻|&gt;)\s*\[\s*\d+\s*\])+")


def parse_ranking(text: str, count: int, required: int | None = None) -> list[int]:
    """A best-first order of ``count`` candidates from a reply like ``Ranking: [2] > [1] > [3]``.

    The last line starting with "Ranking:" counts; without one, the last chain ``[a] > [b] > ...``.
    At least ``required`` candidates (default: all) must be listed; the unlisted ones follow in
    their input order.

    Returns:
        0-based candidate indices, best first, each exactly once.
    """
    required = count if required is None else min(required, count)
    lines = list(_RANKING_LINE.finditer(text))
    if lines:
        numbers = [int(n) for n in _BRACKETED.findall(lines[-1].group("rest"))]
    else:
        chains = list(_CHAIN.finditer(text))
        numbers = [int(n) for n in _BRACKETED.findall(chains[-1].group(0))] if chains else []
    if not numbers:
        raise Unparseable("it has no ranking line such as 'Ranking: [2] > [1] > [3]'")
    order: list[int] = []
    for n in numbers:
        if not 1 <= n <= count:
            raise Unparseable(
                f"the ranking names [{n}], but the candidates are numbered [1] to [{count}]"
            )
        if n - 1 in order:
            raise Unparseable(f"the ranking names [{n}] more than once")
        order.append(n - 1)
    if len(order) < required:
        raise Unparseable(
            f"the ranking lists {len(order)} of the {count} candidates; list every one of them"
        )
    return order + [i for i in range(count) if i not in order]


_WINNER = re.compile(
    r"winner\s*(?:is)?\s*[*_]*\s*[:=\-]?\s*[*_]*\s*(?:answer\s*)?[\[(]?\s*([AB])\b", re.I
)


def parse_winner(text: str) -> Literal["A", "B"]:
    """``"A"`` or ``"B"`` from a reply ending in ``Winner: A`` (the last such line counts)."""
    found = _WINNER.findall(text)
    if found:
        return "A" if found[-1].upper() == "A" else "B"
    bare = text.strip().strip("*.[]() ").upper()
    if bare in ("A", "B"):
        return "A" if bare == "A" else "B"
    raise Unparseable("it does not end with 'Winner: A' or 'Winner: B'")


_SCORE = re.compile(r"score\s*[*_]*\s*[:=]\s*[*_]*\s*(\d+(?:\.\d+)?)", re.I)


def parse_score(text: str, low: float = 1, high: float = 10) -> float:
    """The number in the last ``Score: N`` line, which must lie in ``[low, high]``."""
    found = _SCORE.findall(text)
    if not found:
        bare = text.strip().strip("*.")
        if re.fullmatch(r"\d+(?:\.\d+)?", bare):
            found = [bare]
    if not found:
        raise Unparseable(f"it has no line 'Score: N' with N from {low:g} to {high:g}")
    score = float(found[-1])
    if not low <= score <= high:
        raise Unparseable(f"the score {score:g} is outside {low:g} to {high:g}")
    return score


_VERDICT = re.compile(r"verdict\s*[*_]*\s*[:=]\s*[*_\[\s]*([A-Za-z]+)", re.I)


def parse_verdict(text: str, yes: Collection[str], no: Collection[str]) -> bool:
    """True or False from the last ``Verdict: WORD`` line (WORD in ``yes`` or ``no``, any case)."""
    yes_set = {w.upper() for w in yes}
    no_set = {w.upper() for w in no}
    words = [w.upper() for w in _VERDICT.findall(text)]
    words = [w for w in words if w in yes_set or w in no_set]
    if not words:
        bare = text.strip().strip("*.[]").upper()
        if bare in yes_set or bare in no_set:
            words = [bare]
    if not words:
        choices = " or ".join(
            f"'Verdict: {w}'" for w in (*sorted(yes_set)[:1], *sorted(no_set)[:1])
        )
        raise Unparseable(f"it does not end with {choices}")
    return words[-1] in yes_set


@dataclass(frozen=True)
class ParsedCritique:
    strengths: str
    weaknesses: str
    text: str


_HEADER = re.compile(
    r"^[\s#*_>]*(?:\[\s*(\d+)\s*\]|(?:candidate|answer|response)\s*#?\s*(\d+))[*_\s]*:?[*_]*",
    re.I | re.M,
)
# A line holding nothing but a number ("#### 2", "**3.**"): small models number their blocks so.
# Such a line could as well be an answer quoted from a candidate, so it only opens a block when it
# continues the numbering (the block after [1] is 2).
_BARE_HEADER = re.compile(r"^[\s#*_>]*(\d+)\s*[.):]?[*_\s]*$", re.M)
_STRENGTHS = re.compile(r"strengths?\s*[*_]*\s*:", re.I)
_WEAKNESSES = re.compile(r"weakness(?:es)?\s*[*_]*\s*:", re.I)


def _section(block: str) -> tuple[str, str]:
    s = _STRENGTHS.search(block)
    w = _WEAKNESSES.search(block)
    strengths = weaknesses = ""
    if s is not None:
        end = w.start() if w is not None and w.start() > s.end() else len(block)
        strengths = block[s.end() : end].strip(" *_\n")
    if w is not None:
        end = s.start() if s is not None and s.start() > w.end() else len(block)
        weaknesses = block[w.end() : end].strip(" *_\n")
    return strengths, weaknesses


def _critique_headers(text: str, count: int) -> list[tuple[int, int, int]]:
    """``(number, start, end)`` of each block header, in order of position."""
    marked = [(m, True) for m in _HEADER.finditer(text)]
    bare = [(m, False) for m in _BARE_HEADER.finditer(text)]
    headers: list[tuple[int, int, int]] = []
    for m, is_marked in sorted([*marked, *bare], key=lambda h: h[0].start()):
        n = int(m.group(1) or m.group(2)) if is_marked else int(m.group(1))
        last = headers[-1][0] if headers else 0
        if 1 <= n <= count and (is_marked or n == last + 1):
            headers.append((n, m.start(), m.end()))
    return headers


def parse_critiques(text: str, count: int, *, partial: bool = False) -> dict[int, ParsedCritique]:
    """Per-candidate reviews from blocks headed ``[n]`` (or "Candidate n"), keyed by 0-based index.

    A block without "Strengths:"/"Weaknesses:" headings is kept whole as the weaknesses part.
    Unless ``partial``, every candidate must have a block (see :func:`require_all_critiques`).
    """
    headers = _critique_headers(text, count)
    found: dict[int, ParsedCritique] = {}
    for pos, (n, _, end) in enumerate(headers):
        stop = headers[pos + 1][1] if pos + 1 < len(headers) else len(text)
        block = text[end:stop].strip()
        if n - 1 in found or not block:
            continue
        strengths, weaknesses = _section(block)
        if not strengths and not weaknesses:
            weaknesses = block
        found[n - 1] = ParsedCritique(strengths, weaknesses, block)
    return found if partial else require_all_critiques(found, count)


def require_all_critiques(
    found: dict[int, ParsedCritique], count: int
) -> dict[int, ParsedCritique]:
    """``found`` when every candidate has a block; else :class:`Unparseable` naming the missing.

    The problem asks for the missing blocks only: callers keep the blocks already read.
    """
    missing = [i for i in range(count) if i not in found]
    if missing:
        names = ", ".join(f"[{i + 1}]" for i in missing)
        raise Unparseable(
            f"there is no review block for candidate(s) {names}; write the blocks for these "
            "candidates only, each starting with its number in brackets on its own line"
        )
    return found


_BULLET = re.compile(
    r"^\s*(?:[-*•]|\d+\s*[.):]|(?:check|test)\s*#?\s*\d*\s*[:.)])\s*(?P<text>.+)$", re.I
)


def parse_unit_tests(text: str, max_tests: int) -> list[str]:
    """Checks from a reply: lines starting with "- " (or "1." / "Check 1:"), or a JSON list."""
    tests: list[str] = []
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        try:
            data = json.loads(text[start : end + 1])
        except ValueError:
            data = None
        if isinstance(data, list) and data and all(isinstance(t, str) for t in data):
            tests = [t.strip() for t in data]
    if not tests:
        for line in text.splitlines():
            m = _BULLET.match(line)
            if m is not None:
                tests.append(m.group("text").strip().strip("*_").strip())
    unique: list[str] = []
    for t in tests:
        if len(t) >= 3 and t not in unique:
            unique.append(t)
    if not unique:
        raise Unparseable("it has no checks; put each check on its own line starting with '- '")
    return unique[:max_tests]


_RESULT = re.compile(
    r"^[\s*#_>\[]*(?:(?:check|test|unit\s*test)\s*)?#?\s*(\d+)\s*[\]*_]*\s*[:.)\-]*\s*[*_\[]*\s*"
    r"(PASS(?:ED)?|FAIL(?:ED)?)\b",
    re.I | re.M,
)


def parse_test_results(text: str, count: int) -> dict[int, bool]:
    """PASS/FAIL per check from lines like ``2: FAIL``, keyed by 0-based index (last line wins).

    Checks without a line are missing from the result; see :func:`require_all_results`.
    """
    results: dict[int, bool] = {}
    for m in _RESULT.finditer(text):
        n = int(m.group(1))
        if 1 <= n <= count:
            results[n - 1] = m.group(2).upper().startswith("PASS")
    return results


def require_all_results(text: str, count: int) -> list[bool]:
    """Like :func:`parse_test_results`, but every check must have a result."""
    results = parse_test_results(text, count)
    missing = [i + 1 for i in range(count) if i not in results]
    if missing:
        raise Unparseable(
            f"there is no 'N: PASS' or 'N: FAIL' line for check(s) {', '.join(map(str, missing))}"
        )
    return [results[i] for i in range(count)]
