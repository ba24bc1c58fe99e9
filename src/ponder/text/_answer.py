"""Pull the final answer out of a model's free-form solution text.

Everything here is plain string work (no sympy), so it is cheap and safe to run anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal, get_args

from ponder.errors import ConfigError
from ponder.text._think import strip_think

ExtractStrategy = Literal["hash", "boxed", "answer_is", "last_number"]
"""How to find the answer: ``hash`` (GSM8K ``#### 42``), ``boxed`` (``\\boxed{...}``),
``answer_is`` ("the answer is 42", "Final answer: 42"), ``last_number`` (the last number).

``hash`` and ``boxed`` are both a final-answer marker: where a text has both, the one written last
wins, whatever their order in the strategy list (models trained on both formats sometimes open with
a guess after ``####`` and end with a worked ``\\boxed{}`` answer, or the other way round)."""

DEFAULT_STRATEGIES: tuple[ExtractStrategy, ...] = ("hash", "boxed", "answer_is", "last_number")
"""The default order: explicit answer markers first, the last number only as a fallback."""

# Final-answer markers that compete by position (the last written wins) rather than by list order.
_FINAL_MARKERS: frozenset[str] = frozenset({"hash", "boxed"})

_VALID: tuple[str, ...] = get_args(ExtractStrategy)

# Unicode look-alikes of the ASCII minus that models (and copied references) use.
_MINUS_SIGNS = str.maketrans({"−": "-", "–": "-", "—": "-", "﹣": "-", "－": "-"})

_CURRENCY = r"(?:\\\$|[$€£¥])"
# A number as people write it: 1,234,567 / 3.5 / .5 / 3/4, with optional sign, currency, percent.
# The sign only counts when it is not a binary minus ("10-3" is not "-3").
_NUMBER = re.compile(
    r"""
    (?P<sign>(?<![\w)\]}])-)?
    (?:"""
    + _CURRENCY
    + r"""\s?)?
    (?P<body>
        \\[dt]?frac\{-?\d+\}\{\d+\}          # \frac{3}{4}
      | \d+(?:\.\d+)?\s?/\s?\d+(?:\.\d+)?     # 3/4, 1.5/2
      | \d{1,3}(?:,\d{3})+(?:\.\d+)?          # 1,234,567.89
      | \d+(?:\.\d+)?                         # 42, 3.14
      | \.\d+                                 # .5
    )
    (?P<pct>\s?\\?%)?
    """,
    re.VERBOSE,
)
_PLAIN_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?")

# What may stand between an answer marker and the answer: spaces, bold, colons, and an opening
# tag or bracket copied from a placeholder ("#### <answer>540</answer>", "#### <540>").
_WRAPPER_OPEN = re.compile(r"^(?:[ \t*:]+|<[A-Za-z_][\w-]*>|<(?=[-\d.$]))*")
# An answer wholly inside a tag pair or angle brackets: "<answer>540</answer>", "<540>".
_TAG_WRAPPED = re.compile(
    r"^(?:<(?P<tag>[A-Za-z_][\w-]*)>(?P<inner>.*?)</(?P=tag)>|<(?P<bare>[^<>]*\d[^<>]*)>)$", re.S
)
_HASH = re.compile(r"####[ \t]*(?P<rest>[^\n]*)")
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|(?<![a-z])answer)\s*(?:\*\*)?\s*(?:is\b|:|=)(?:\s*(?:\*\*|:))*",
    re.IGNORECASE,
)
_BOX_CMD = re.compile(r"\\(?:boxed|fbox)\b")

# Delimited math at the start of an "answer is ..." tail: $...$, $$...$$, \(...\), \[...\].
_DELIMITED = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# The end of the answer sentence: newline, or sentence punctuation before a space or the end.
_SENTENCE_END = re.compile(r"\n|[.!?;](?=\s|$)")
# Plain words (units, "dollars", "in total") after a mathematical answer; "pi" is mathematics.
_TRAILING_WORD = re.compile(r"\s+(?!pi\b)[A-Za-z][A-Za-z'\-]+\.?$")
# What makes a number only the start of a longer expression: "2x", "3^2", "2\pi", "1 + 2", "2(x+1)".
_CONTINUES = re.compile(
    r"[a-zA-Z](?![a-zA-Z])|[\^_({\[/]|\s*[*+=^]|\s*\\(?!text|mbox|quad|qquad|[,;:! %$])"
)


def check_strategies(strategies: Sequence[str] | str) -> tuple[ExtractStrategy, ...]:
    """Validate strategy names and return them as a tuple.

    Raises:
        ConfigError: a name is unknown, or there are none.
    """
    names = (strategies,) if isinstance(strategies, str) else tuple(strategies)
    if not names:
        raise ConfigError(
            "extraction strategies must not be empty", hint=f"use some of: {', '.join(_VALID)}"
        )
    unknown = [n for n in names if n not in _VALID]
    if unknown:
        raise ConfigError(
            f"unknown answer extraction strategy {', '.join(map(repr, unknown))}; "
            f"valid strategies are: {', '.join(_VALID)}"
        )
    return names  # type: ignore[return-value]  # each name was checked against the Literal above


def extract_answer(
    text: str, strategies: Sequence[ExtractStrategy] | str = DEFAULT_STRATEGIES
) -> str | None:
    """Return the final answer in ``text``, lightly normalised, or None when there is none.

    Strategies are tried in order; the first that finds something wins, except that ``hash`` and
    ``boxed`` are tried together and the one written last in the text wins. See
    :data:`ExtractStrategy`.

    Raises:
        ConfigError: a strategy name is unknown.
    """
    order = check_strategies(strategies)
    body = strip_think(text)
    done: set[str] = set()
    for name in order:
        if name in done:
            continue
        # The final-answer markers in the list are tried together, where the first of them stands.
        group = [n for n in order if n in _FINAL_MARKERS] if name in _FINAL_MARKERS else [name]
        done.update(group)
        hits = []
        for member in group:
            hit = _LOCATORS[member](body)
            if hit is not None and (answer := normalize_answer(hit[1])):
                hits.append((hit[0], answer))
        if hits:
            return max(hits, key=lambda h: h[0])[1]
    return None


def normalize_answer(answer: str) -> str:
    """Light, meaning-preserving clean-up of an extracted answer.

    Strips answer tags (``<answer>540</answer>``, ``<540>``: small models copy a prompt's
    ``<answer>`` placeholder), math delimiters and ``$`` signs, markdown bold, surrounding whitespace, trailing
    punctuation, leading currency signs and thousands separators of plain numbers; maps Unicode
    minus signs to ``-`` and ``\\%`` to ``%``. LaTeX such as ``\\frac{1}{2}`` is kept as it is.
    """
    s = answer.translate(_MINUS_SIGNS).strip()
    for _ in range(3):  # delimiters can nest: "**$18$**."
        before = s
        s = s.strip().strip("*").strip()
        if wrapped := _TAG_WRAPPED.match(s):
            s = wrapped.group("inner") if wrapped.group("tag") else wrapped.group("bare")
        s = s.rstrip(".,;:!?").strip()
        for open_, close in (("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(open_) and s.endswith(close):
                s = s[len(open_) : -len(close)].strip()
        s = s.replace("\\$", "$").replace("$", " ").strip()
        s = re.sub(r"^[€£¥]\s*", "", s)
        s = re.sub(r"^-\s*[€£¥]\s*", "-", s)
        if s == before:
            break
    s = s.replace("\\%", "%")
    s = re.sub(r"\s+", " ", s)
    if _PLAIN_THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s


def _hash_at(text: str) -> tuple[int, str] | None:
    """The last ``#### answer`` in ``text`` and where it starts."""
    for m in reversed(list(_HASH.finditer(text))):
        found = _leading_answer(m.group("rest"))
        if found is not None:
            return m.start(), found
    return None


def _boxed_at(text: str) -> tuple[int, str] | None:
    """The content of the last non-empty box in ``text`` and where the box starts."""
    for m in reversed(list(_BOX_CMD.finditer(text))):
        found = _box_content(text, m.end())
        if found is not None and found.strip():
            return m.start(), found
    return None


def _boxed(text: str) -> str | None:
    hit = _boxed_at(text)
    return None if hit is None else hit[1]


def _box_content(text: str, pos: int) -> str | None:
    """Content of the box whose command ends at ``pos``: a balanced ``{...}`` or one bare token."""
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    if pos >= len(text):
        return None
    if text[pos] != "{":
        bare = re.match(r"[^\s$]+", text[pos:])
        return bare.group(0) if bare else None
    group = _balanced(text, pos)
    return None if group is None else group[1:-1]


def _balanced(text: str, start: int) -> str | None:
    """The ``{...}`` group opening at ``start`` (escaped ``\\{``, ``\\}`` do not count), or None."""
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2  # skip the escaped character, so "\{" and "\}" never change the depth
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
        i += 1
    return None  # unbalanced: a truncated answer


def _answer_is(text: str) -> str | None:
    for m in reversed(list(_ANSWER_IS.finditer(text))):
        found = _leading_answer(text[m.end() :])
        if found is not None:
            return found
    return None


def _last_number(text: str) -> str | None:
    last = None
    for m in _NUMBER.finditer(text.translate(_MINUS_SIGNS)):
        last = m
    return None if last is None else _number_text(last)


def _number_text(m: re.Match[str]) -> str:
    body = re.sub(r"\s", "", m.group("body"))
    sign = "-" if m.group("sign") else ""
    pct = "%" if m.group("pct") else ""
    return f"{sign}{body}{pct}"


def _leading_answer(tail: str) -> str | None:
    """The answer at the start of ``tail`` (the text after an answer marker), or None.

    A number is taken without what follows it (units, the rest of the sentence) unless mathematics
    continues after it; a delimited or boxed expression is taken whole; otherwise the rest of the
    sentence, less trailing words, if it looks like mathematics.
    """
    s = _WRAPPER_OPEN.sub("", tail.translate(_MINUS_SIGNS))
    num = _NUMBER.match(s)
    if num and not _CONTINUES.match(s, num.end()):
        return _number_text(num)
    for open_, close in _DELIMITED:
        if s.startswith(open_):
            close_at = s.find(close, len(open_))
            if close_at > len(open_):
                inner = s[len(open_) : close_at]
                boxed = _boxed(inner)
                return boxed if boxed is not None else inner
    box = _BOX_CMD.match(s)
    if box:
        return _box_content(s, box.end())
    stop = _SENTENCE_END.search(s)
    sentence = (s if stop is None else s[: stop.start()]).strip()
    while True:
        shorter = _TRAILING_WORD.sub("", sentence)
        if shorter == sentence or not shorter.strip():
            break
        sentence = shorter
    return sentence if _looks_mathematical(sentence) else None


def _looks_mathematical(s: str) -> bool:
    """Reject prose ("the answer is correct"), keep short symbolic answers ("B", "x", "(A)")."""
    s = s.strip()
    return bool(s) and (bool(re.search(r"[\d\\^=+]", s)) or len(s) <= 3)


def _anywhere(find: Callable[[str], str | None]) -> Callable[[str], tuple[int, str] | None]:
    """A strategy that is never compared by position (position 0)."""

    def locate(text: str) -> tuple[int, str] | None:
        found = find(text)
        return None if found is None else (0, found)

    return locate


_LOCATORS: dict[str, Callable[[str], tuple[int, str] | None]] = {
    "hash": _hash_at,
    "boxed": _boxed_at,
    "answer_is": _anywhere(_answer_is),
    "last_number": _anywhere(_last_number),
}
