"""The ``judge`` scorer: a model's verdict on a partial solution.

How the verdict is read (``mode``):

* ``logprobs``: the model is asked whether the solution is correct so far, to answer Yes or No;
  one short request (``max_tokens`` 4, ``top_logprobs``) and the score is
  P(yes) / (P(yes) + P(no)), each summed over the case and whitespace variants among the
  alternatives at the first generated position that offers either. None when neither appears.
* ``score``: for backends without log-probabilities; the model grades the solution from 1 to 10
  in a ``Score: N`` line (up to ``repair_retries`` repair prompts follow an unreadable reply) and
  the score is (N - 1) / 9. None when no reply could be read.
* ``auto`` (the default) asks as in ``logprobs`` and falls back to ``score`` when the backend's
  completion came back without log-probabilities (remembered per backend, so it costs one extra
  call per backend, not per node).

A complete solution (a terminal node) is judged as a whole, final answer included; a partial one
on whether its steps so far are correct and lead towards the answer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ponder.records import Message, SamplingParams
from ponder.systems._context import RunContext
from ponder.systems._models import ModelRef
from ponder.systems._parsing import parse_score
from ponder.systems._prompts import check_template, render
from ponder.systems.tree._cost import asked_bound, call_bound
from ponder.systems.tree._odds import answer_odds, word_is
from ponder.systems.tree._scorers import ScoreInput, Scorer, config_name, register_scorer

SYSTEM = "You check solutions to problems carefully and honestly, step by step."

PROMPT = "Problem:\n$query\n\n$what:\n$solution\n\n$instruction"
PARTIAL = "The first steps of a solution"
COMPLETE = "A complete solution"
YES_NO = {
    False: "Are these steps correct so far, and do they lead towards the right answer? "
    "Answer with one word: Yes or No.",
    True: "Is this solution correct, and is its final answer right? "
    "Answer with one word: Yes or No.",
}
GRADE = {
    False: "How likely are these steps to be correct and to lead to the right answer? ",
    True: "How likely is this solution to be correct, final answer included? ",
}
GRADE_FORMAT = (
    "Grade from 1 (certainly wrong) to 10 (certainly right). Reply with one line: Score: N"
)
SCORE_EXPECTED = "end with one line 'Score: N' where N is a whole number from 1 to 10"
PLACEHOLDERS = frozenset({"query", "solution", "instruction"})

_YES, _NO = word_is("yes"), word_is("no")
# Tokens generated for a Yes/No verdict: room for a leading space or newline token before it.
_VERDICT_TOKENS = 4


class JudgeScorerConfig(BaseModel):
    """A model judges each partial solution (see :mod:`ponder.systems.tree._judge`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["judge"] = "judge"
    model: ModelRef | None = Field(None, description="The judging model (default: the system's).")
    mode: Literal["auto", "logprobs", "score"] = Field(
        "auto", description="Read a Yes/No token's probability, or a parsed 1-10 grade."
    )
    template: str | None = Field(
        None,
        description="Replaces the user prompt; placeholders $query, $solution and $instruction "
        "(how to answer: Yes/No, or a 'Score: N' line).",
    )
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_logprobs: int = Field(10, ge=1, le=20, description="Alternatives read per position.")
    repair_retries: int = Field(
        1, ge=0, le=10, description="Score mode: repair prompts after an unreadable grade."
    )
    max_tokens: int = Field(
        16,
        ge=1,
        le=8192,
        description="Score mode: tokens of the reply (raise it for a template asking for reasons).",
    )

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value, PLACEHOLDERS)
        return value


class JudgeScorer(Scorer):
    """See :mod:`ponder.systems.tree._judge`."""

    def __init__(self, config: JudgeScorerConfig) -> None:
        self.config = config
        self._name = config_name("judge", config)
        # Whether each backend (by identity) returned log-probabilities when asked (auto mode).
        self._has_logprobs: dict[str, bool] = {}

    async def cost_bound(self, item: ScoreInput, ctx: RunContext) -> tuple[int, int]:
        """One Yes/No call, or a grade with its repairs; in ``auto`` before the backend's answer
        is known, both."""
        cfg = self.config
        backend = ctx.backend(cfg.model)
        asks = await call_bound(
            ctx, backend, self._messages(item, YES_NO[item.terminal]), _VERDICT_TOKENS
        )
        grades = await asked_bound(
            ctx,
            backend,
            self._messages(item, GRADE[item.terminal] + GRADE_FORMAT),
            cfg.max_tokens,
            cfg.repair_retries,
            SCORE_EXPECTED,
        )
        known = set(self._has_logprobs.values())
        if cfg.mode == "score" or known == {False}:
            return grades
        if cfg.mode == "logprobs" or known == {True}:
            return asks
        return asks[0] + grades[0], asks[1] + grades[1]

    @property
    def name(self) -> str:
        return self._name

    def _messages(self, item: ScoreInput, instruction: str) -> list[Message]:
        user = render(
            self.config.template or PROMPT,
            query=item.query,
            what=COMPLETE if item.terminal else PARTIAL,
            solution=item.solution,
            instruction=instruction,
        )
        return [Message(role="system", content=SYSTEM), Message(role="user", content=user)]

    async def score(self, item: ScoreInput, ctx: RunContext) -> float | None:
        cfg = self.config
        backend = ctx.backend(cfg.model)
        step = f"step {len(item.steps)}{', complete' if item.terminal else ''}"
        seed = ctx.seed_for("judge scorer", item.solution, item.terminal)
        if cfg.mode == "score" or self._has_logprobs.get(backend.identity) is False:
            return await self._graded(item, ctx, seed, step)
        generation = await ctx.generate(
            backend,
            self._messages(item, YES_NO[item.terminal]),
            1,
            _params(cfg.temperature, _VERDICT_TOKENS, seed),
            f"judge scorer ({step})",
            top_logprobs=cfg.top_logprobs,
        )
        completion = generation.completions[0]
        if completion.logprobs is None:
            if cfg.mode == "logprobs":
                raise ctx.error(
                    f"the judge scorer's backend {backend.identity} returned no log-probabilities",
                    backend.identity,
                )
            self._has_logprobs[backend.identity] = False
            ctx.note(
                f"judge scorer: {backend.identity} returns no log-probabilities; "
                "grading 1-10 instead"
            )
            return await self._graded(item, ctx, seed, step)
        self._has_logprobs[backend.identity] = True
        return answer_odds(completion, _YES, _NO)

    async def _graded(
        self, item: ScoreInput, ctx: RunContext, seed: int, step: str
    ) -> float | None:
        cfg = self.config
        asked = await ctx.ask(
            ctx.backend(cfg.model),
            self._messages(item, GRADE[item.terminal] + GRADE_FORMAT),
            _params(cfg.temperature, cfg.max_tokens, seed),
            parse_score,
            purpose=f"judge scorer grade ({step})",
            expected=SCORE_EXPECTED,
            repair_retries=cfg.repair_retries,
        )
        if asked.value is None:
            ctx.fallback(
                f"judge scorer: unreadable grade of {step}: {asked.problem}",
                "left unscored",
                output=asked.output,
            )
            return None
        return (asked.value - 1) / 9


def _params(temperature: float, max_tokens: int, seed: int) -> SamplingParams:
    return SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed)


@register_scorer("judge", JudgeScorerConfig)
def _make(config: JudgeScorerConfig) -> Scorer:
    return JudgeScorer(config)
