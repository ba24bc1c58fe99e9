"""The text toolkit: <think> stripping, code fences, continuations; one implementation each."""

from __future__ import annotations

import pytest

from ponder.records import Verdict
from ponder.systems import get_extractor
from ponder.tasks import DEFAULT_TEMPLATE, Aime2025Task
from ponder.text import (
    CodeBlock,
    code_blocks,
    cut_continuation,
    extract_answer,
    question_markers,
    stop_sequences,
    strip_think,
)
from ponder.verify.code import CodeReference, CodeVerifier, extract_program

# --- <think> -----------------------------------------------------------------------------------

THINK = [
    ("<think>99?</think>The answer is 12.", "\nThe answer is 12."),
    ("<THINK>a</Think> b <think>c</think> d", "\n b \n d"),
    # The chat template opened the block: everything up to the stray closing tag is reasoning.
    ("so maybe 77 </think> It is 8.", " It is 8."),
    # Cut off while reasoning: no answer at all.
    ("First line.\n<think>It is 99... no, wait", "First line.\n"),
    ("<think>only thoughts", ""),
    ("no reasoning here", "no reasoning here"),
    # A closed block, then an unclosed one.
    ("<think>x</think>42<think>hmm", "\n42"),
]


@pytest.mark.parametrize(("text", "expected"), THINK)
def test_strip_think(text: str, expected: str) -> None:
    assert strip_think(text) == expected


def test_every_reader_ignores_reasoning() -> None:
    text = "<think>#### 1\n```python\ndef f():\n    return 1\n```</think>#### 2\n"
    assert extract_answer(text) == "2"
    assert get_extractor("math")(text) == "2"
    assert get_extractor("last_line")(text) == "#### 2"
    assert get_extractor("text")(text) == "#### 2"
    assert extract_program(text, entry_point="f") is None
    assert get_extractor("code")(text) is None
    assert get_extractor("last_line")("<think>unfinished") is None


# --- code fences -------------------------------------------------------------------------------


def test_code_blocks_backticks_tildes_and_labels() -> None:
    text = (
        "Here:\n```python\na = 1\n```\nand\n~~~py\nb = 2\n~~~\n"
        "```\nc = 3\n```\n````{.Python}\nd = '```'\n````\n```js\nlet e;\n```\n"
    )
    assert code_blocks(text) == [
        CodeBlock("python", "a = 1\n"),
        CodeBlock("python", "b = 2\n"),
        CodeBlock("", "c = 3\n"),
        CodeBlock("python", "d = '```'\n"),  # a longer fence holds a shorter one
        CodeBlock("js", "let e;\n"),
    ]


def test_code_blocks_unterminated_indented_and_empty() -> None:
    assert code_blocks("```python\ndef f():\n    return 1\n") == [
        CodeBlock("python", "def f():\n    return 1\n")
    ]
    listed = "1. Code:\n   ```python\n   x = 1\n   if x:\n       y = 2\n   ```\n"
    assert code_blocks(listed) == [CodeBlock("python", "x = 1\nif x:\n    y = 2\n")]
    assert code_blocks("```\n\n```\n") == []
    # A tilde fence is not closed by backticks.
    assert code_blocks("~~~\nx = '```'\n```\n~~~\n") == [CodeBlock("", "x = '```'\n```\n")]


# The vote's code extractor and the code verifier read the same program from the same text
# (before issue 11 the vote took the last ``` block only, missing ~~~ and unclosed fences).
SAME_PROGRAM = [
    "~~~python\ndef add(a, b):\n    return a + b\n~~~\n",
    "Sure:\n```python\ndef add(a, b):\n    return a + b\n",  # cut off by the token limit
    "```python\ndef add(a, b):\n    return a + b\n```\nTest it:\n```python\nprint(add(1, 2))\n```",
    "<think>```python\ndef add(a, b):\n    return a - b\n```</think>~~~\ndef add(a, b):\n"
    "    return a + b\n~~~",
    "def add(a, b):\n    return a + b\n\nThis adds the two numbers.\n",
    "  1. The code:\n     ```python\n     def add(a, b):\n         return a + b\n     ```\n",
]


@pytest.mark.parametrize("text", SAME_PROGRAM)
def test_vote_code_extractor_is_the_code_verifiers_extraction(text: str) -> None:
    program = extract_program(text, entry_point="add")
    assert program is not None
    assert get_extractor("code")(text) == program.strip()
    assert "return a + b" in program


def test_the_code_verifier_runs_the_program_the_vote_counts() -> None:
    # The real verifier (sandboxed run) reports the program it ran; it is the vote's answer.
    reference = CodeReference(
        test="def check(candidate):\n    assert candidate(2, 3) == 5\n", entry_point="add"
    ).to_json()
    with CodeVerifier(workers=1) as verifier:
        verdicts: list[Verdict] = verifier.verify_many([(reference, t) for t in SAME_PROGRAM])
    for text, verdict in zip(SAME_PROGRAM, verdicts, strict=True):
        assert verdict.status == "correct", (text, verdict)
        assert verdict.extracted is not None
        assert verdict.extracted.strip() == get_extractor("code")(text)


# --- continuations -----------------------------------------------------------------------------


def test_question_markers_come_from_the_template() -> None:
    assert question_markers(DEFAULT_TEMPLATE) == ("Solve the following math problem.", "Problem:")
    assert question_markers(Aime2025Task.template) == (
        "Solve the following competition math problem.",
        "Problem:",
    )
    assert question_markers("Question: {question}\nAnswer:") == ("Question:",)
    assert question_markers("Q: {question}") == ("Q:",)
    assert question_markers("**Math question:** {question}") == ("Math question:",)
    assert question_markers("{question}") == ()
    assert question_markers("{question}\n\nWrite the function.") == ()
    # A short first line is no marker (it could open an ordinary solution); braces are escapes.
    assert question_markers("Solve it.\n\n{question}") == ()
    assert question_markers("Answer in \\boxed{{}} please.\n\nTask: {question}") == (
        "Answer in \\boxed{} please.",
        "Task:",
    )
    # The instruction's first sentence only, and no label when the question is mid-line.
    assert question_markers("Read this carefully. Then solve.\nIt is: {question}") == (
        "Read this carefully.",
        "It is:",
    )
    assert question_markers("Solve the next problem right now: {question}") == ()
    assert stop_sequences(("Problem:", "Q:")) == ("\nProblem:", "\nQ:")


MARKERS = question_markers(DEFAULT_TEMPLATE)

# The model's own answer, then an invented next problem that carries its own final answer, in
# each form (####, \boxed{}, "The answer is") and each way of writing the marker.
FOLLOW_UPS = [
    ("#### 8", "\n\nProblem: A farmer has 3 cows and buys 4 more. How many?\n3 + 4 = 7\n#### 7"),
    ("The answer is 8.", "\nProblem: Tom has 5 pens and 2 more.\nThe answer is 7."),
    ("#### 8", "\n\n**Problem 2:** A square has side 3.\nIts area is \\boxed{9}."),
    ("So 4 + 4 = 8.", "\n\n## Problem: Ann has 9.\nThe answer is 9."),
    ("\\boxed{8}", "\n\nproblem: lower case still counts\n#### 99"),
    ("#### 8", "\n\nSolve the following math problem. Think it through.\n\nProblem: x\n#### 1"),
    ("#### 8", "\n\nSolve  the following\nmath problem.\n\\boxed{5}"),
    ("#### 8", "\n\nsolve the following math problem:\nProblem: x\n#### 5"),
]


@pytest.mark.parametrize(("own", "invented"), FOLLOW_UPS)
def test_a_made_up_next_problem_is_cut_before_extraction(own: str, invented: str) -> None:
    text = own + invented
    assert extract_answer(text) != "8"  # uncut, the invented answer wins
    mine = cut_continuation(text, MARKERS)
    assert mine.rstrip() == own
    assert extract_answer(mine) == "8"


def test_the_answer_is_and_boxed_answers_survive_a_cut() -> None:
    text = (
        "So she pays 3 * 4 = 12.\nThe answer is 12.\n\nProblem: Ann has 2 cats.\nThe answer is 2."
    )
    assert extract_answer(cut_continuation(text, MARKERS)) == "12"
    text = "Thus \\boxed{12}.\n\nProblem: Ann has 2 cats. \\boxed{2}"
    assert extract_answer(cut_continuation(text, MARKERS)) == "12"


def test_what_is_not_a_new_problem_is_kept() -> None:
    # Restating the given problem first is not a continuation.
    text = "Problem: Janet has 3 apples and buys 5.\n3 + 5 = 8\n#### 8"
    assert cut_continuation(text, MARKERS) == text
    # Mid-line mentions, other labels, and no markers at all.
    text = "The problem: she has 8.\nQuestion: is it 8? Yes.\n#### 8"
    assert cut_continuation(text, MARKERS) == text
    assert cut_continuation("#### 8\nProblem: x #### 9", ()) == "#### 8\nProblem: x #### 9"
