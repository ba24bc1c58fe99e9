"""Continuations: a model that answers and then writes a made-up next problem in the prompt's format.

Few-shot prompts and base models invite it: ``#### 8\\n\\nProblem: A farmer has ...`` and then a
worked answer to the invented problem, with its own ``####``. The prompt's own format says what
such a continuation looks like: the label the template puts before the question (``Problem:``,
``Question:``, ``Q:``) and the template's opening instruction sentence, when it has one. From them
come the stop sequences sent to the backend (:func:`stop_sequences`) and the cut applied before an
answer is extracted (:func:`cut_continuation`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_FIELD = "{question}"
# A label before the question: one to four words ending in a colon ("Problem:", "Q:", "Math
# question:"), optionally with markdown emphasis around it.
_LABEL = re.compile(r"^[*_]*(?P<label>[A-Za-z][A-Za-z0-9]*(?:[ \t]+[A-Za-z0-9]+){0,3}):[*_]*$")
# The first sentence of an instruction line: up to ". ", "? ", "! " or the end of the line.
_SENTENCE = re.compile(r"^(?P<sentence>.+?[.?!])(?:\s|$)")
_MIN_SENTENCE_WORDS = 3
# Markdown a model may put at the start of an invented problem's first line.
_DECORATION = r"^[ \t>#*_]*"


def question_markers(template: str) -> tuple[str, ...]:
    """The text a new problem in ``template``'s format starts with, as it appears in the template.

    At most two markers: the label on the question's own line before ``{question}``
    (``"Problem:"``) and the first sentence of the template when the template opens with an
    instruction (``"Solve the following math problem."``; kept only when it has at least three
    words, so that it cannot occur in an ordinary solution). A template that is the bare
    question has none.

    Args:
        template: A ``str.format`` template with a ``{question}`` field (``{{``/``}}`` escapes are
            read as single braces).
    """
    at = template.find(_FIELD)
    if at < 0:
        return ()
    before = template[:at].replace("{{", "{").replace("}}", "}")
    markers: list[str] = []
    lines = before.split("\n")
    first = lines[0].strip()
    if len(lines) > 1 and first:
        sentence = _SENTENCE.match(first)
        text = sentence.group("sentence") if sentence else first
        if len(text.split()) >= _MIN_SENTENCE_WORDS:
            markers.append(text)
    label = _LABEL.match(lines[-1].strip())
    if label is not None:
        markers.append(label.group("label") + ":")
    return tuple(markers)


def stop_sequences(markers: Sequence[str]) -> tuple[str, ...]:
    """Stop strings for a backend: each marker at the start of a new line (``"\\nProblem:"``).

    Only a marker on a line of its own stops generation, so a reply that opens by restating the
    problem ("Problem: ...") is not cut off before it starts.
    """
    return tuple(f"\n{m}" for m in markers)


def _marker_pattern(marker: str) -> str:
    if marker.endswith(":"):
        # A label, as a model writes it: any case, numbered ("Problem 2:"), in bold ("**Q:**").
        words = r"[ \t]+".join(re.escape(w) for w in marker[:-1].split())
        return rf"{words}(?:[ \t]*\d+)?[ \t*_]*:"
    # An instruction sentence, with any line breaks or spaces, and any closing punctuation.
    return r"\s+".join(re.escape(w) for w in marker.rstrip(".?!").split()) + r"[.?!:]?"


def cut_continuation(text: str, markers: Sequence[str]) -> str:
    """``text`` up to the first line that starts a new problem in the prompt's format.

    A line starts a new problem when it begins with one of ``markers`` (from
    :func:`question_markers`; case-insensitive, after optional markdown such as ``**`` or ``#``,
    a label may carry a number: ``Problem 2:``). A marker before any other text does not count:
    the model is restating the problem it was given. Without markers the text is returned as it
    is.
    """
    if not markers:
        return text
    pattern = re.compile(
        _DECORATION + "(?:" + "|".join(_marker_pattern(m) for m in markers) + ")",
        re.IGNORECASE | re.MULTILINE,
    )
    for match in pattern.finditer(text):
        if text[: match.start()].strip():
            return text[: match.start()]
    return text
