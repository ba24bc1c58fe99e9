"""Fenced code blocks in markdown-ish model output."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A fenced block: ``` or ~~~ (3 or more) with an optional info string, up to the same fence at
# the start of a line, or to the end of the text (an answer cut off by the token limit).
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n"
    r"(?P<code>.*?)"
    r"(?:^[ \t]*(?P=fence)[ \t]*$|\Z)",
    re.DOTALL | re.MULTILINE,
)
_PYTHON_INFO = {"python", "py", "python3", "py3", "python2", "pycon", "ipython"}


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block: its language (``python`` for every Python alias, ``""`` when
    unlabelled, else the info string's first word, lower-cased) and its code."""

    language: str
    code: str


def code_blocks(text: str) -> list[CodeBlock]:
    """The non-empty fenced blocks of ``text``, in order.

    Fences are ```` ``` ```` or ``~~~`` (three or more; the closing fence must be the same run of
    characters, alone on its line). An unterminated last fence runs to the end of the text (an
    answer cut off by the token limit). A fence indented as part of a list item has that
    indentation removed from its lines. These are the code verifier's rules; the ``code`` answer
    extractor of systems uses the same function, so voting and verifying see the same programs.
    """
    blocks = []
    for match in _FENCE.finditer(text):
        info = match.group("info").strip().split()
        lang = info[0].lower().strip("{}.") if info else ""  # also pandoc's {.python}
        lang = "python" if lang in _PYTHON_INFO else lang
        code = match.group("code")
        indent = match.group("indent")
        if indent:  # a fence inside a list item: its lines carry the fence's indentation
            code = "".join(
                line[len(indent) :] if line.startswith(indent) else line
                for line in code.splitlines(keepends=True)
            )
        if code.strip():
            blocks.append(CodeBlock(lang, code))
    return blocks
