"""Ponder's math verdicts against an independent grader, on real stored model outputs.

The fixture ``tests/data/gsm8k_qwen05b_outputs.jsonl`` holds real completions of the embedded
default model (Qwen2.5-Coder 0.5B) on GSM8K problems, model outputs only: the references are read
from the task's data package here. Each line is ``{"problem_id", "index", "prompt", "text"}``;
``prompt`` says which default template the model saw (``placeholder``: the one before issue 11,
which asked for ``"#### <answer>"`` and so got ``#### <answer>3</answer>``; ``concrete``: today's,
which shows ``#### 42``, sampled with the task's stop sequences). How they were made is written
in ``tests/data/README.md``.

Two independent graders, each applied to the text cut at the task's own stop sequence as a
generation would have been: one written here from the published behaviour of lm-eval's GSM8K
filters (strict ``#### N``, else the last number; commas, dollar signs and a final period
ignored), and math-verify's own ``parse``/``verify`` of the whole text. Every disagreement is
printed; the only ones allowed are listed, each with the reason.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest

from ponder.tasks import continuation_markers, get_task
from ponder.text import cut_continuation
from ponder.verify import MathVerifier

FIXTURE = Path(__file__).parent / "data" / "gsm8k_qwen05b_outputs.jsonl"

# The generation-time stop of the gsm8k prompt: what lm-eval's ``until`` would have cut.
_UNTIL = ("\nProblem:", "\nSolve the following math problem.")
_STRICT = re.compile(r"#### (-?[0-9.,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def independent_answer(text: str) -> str | None:
    """lm-eval-style: cut at the stop, the first ``#### N``, else the last number-like run."""
    for stop in _UNTIL:
        text = text.split(stop)[0]
    strict = _STRICT.search(text)
    if strict:
        found = strict.group(1)
    else:
        runs = [a or b for a, b in _FLEXIBLE.findall(text)]
        if not runs:
            return None
        found = runs[-1]
    return found.replace(",", "").replace("$", "").rstrip(".")


def independent_correct(reference: str, text: str) -> bool:
    answer = independent_answer(text)
    if answer is None:
        return False
    try:
        return Decimal(answer) == Decimal(reference)
    except InvalidOperation:
        return False


def math_verify_correct(reference: str, text: str) -> bool:
    """math-verify's own reading of the whole text (its extraction, not Ponder's)."""
    from math_verify import parse, verify

    for stop in _UNTIL:
        text = text.split(stop)[0]
    return bool(verify(parse(reference), parse(text)))


GRADERS = {"lm-eval-style": independent_correct, "math-verify": math_verify_correct}

# (grader, prompt, problem_id, index) -> why Ponder's verdict differs, and why Ponder's is right.
# Nothing else may differ.
KNOWN_DISAGREEMENTS: dict[tuple[str, str, str, int], str] = {
    ("math-verify", "placeholder", "gsm8k/4", 4): (
        "the reply opens with '#### 13' (its only stated answer, wrong) and is cut off by the "
        "token limit mid-working; math-verify's extraction ignores '####' and takes a later '20' "
        "(the number of chickens), which happens to equal the reference. lm-eval's strict filter "
        "reads 13, as Ponder does."
    ),
}


def _load() -> list[dict[str, object]]:
    with FIXTURE.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_the_fixture_is_real_model_output_without_references() -> None:
    rows = _load()
    assert len(rows) >= 40
    assert {r["prompt"] for r in rows} == {"placeholder", "concrete"}
    assert all(set(r) == {"problem_id", "index", "prompt", "text"} for r in rows)
    # The reason this test exists: the old prompt's placeholder was copied literally.
    assert any("<answer>" in str(r["text"]) for r in rows if r["prompt"] == "placeholder")


def test_ponder_agrees_with_an_independent_grader_on_real_outputs() -> None:
    task = get_task("gsm8k")
    references = {p.id: p.reference for p in task.problems()}
    markers = continuation_markers(task.spec())  # as verification of a stored run applies them
    rows = _load()
    items = [
        (references[str(r["problem_id"])], cut_continuation(str(r["text"]), markers)) for r in rows
    ]
    with MathVerifier(workers=1) as verifier:
        verdicts = verifier.verify_many(items)
    assert not [v for v in verdicts if v.status == "error"]

    disagreements = {}
    for row, (reference, _), verdict in zip(rows, items, verdicts, strict=True):
        ours = verdict.status == "correct"
        text = str(row["text"])
        for grader, correct in GRADERS.items():
            theirs = correct(str(reference), text)
            if ours != theirs:
                key = (grader, str(row["prompt"]), str(row["problem_id"]), int(str(row["index"])))
                disagreements[key] = (
                    f"{key}: ponder {verdict.status} (extracted {verdict.extracted!r}), "
                    f"{grader} {'correct' if theirs else 'wrong'}, reference {reference!r}; "
                    f"text ends {text[-160:]!r}"
                )
    for line in disagreements.values():
        print("DISAGREEMENT", line)
    unexplained = {k: v for k, v in disagreements.items() if k not in KNOWN_DISAGREEMENTS}
    assert unexplained == {}
    assert set(KNOWN_DISAGREEMENTS) <= set(disagreements), "a listed disagreement is gone"
    # Before issue 11 the copied placeholder was scored wrong: now every such sample is read.
    placeholder = [
        v
        for r, v in zip(rows, verdicts, strict=True)
        if "#### <answer>" in str(r["text"]) and r["prompt"] == "placeholder"
    ]
    assert placeholder and all(v.status != "unparsed" for v in placeholder)
    assert all(v.extracted is not None and "<" not in v.extracted for v in placeholder)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so 3.\n#### 3", "3"),
        ("#### <answer>3</answer>", "3"),
        ("It costs $1,200.", "1200"),
        ("#### 8\nProblem: next one\n#### 9", "8"),
        ("no digits", None),
    ],
)
def test_the_independent_grader_itself(text: str, answer: str | None) -> None:
    assert independent_answer(text) == answer
