"""The ``reward_model`` scorer: a (process) reward model behind any backend.

Request shape
-------------
One chat request per scored node, through the backend contract (for an OpenAI-compatible server,
``POST /v1/chat/completions``; nothing else is called)::

    messages = [
        {"role": "user", "content": <query: the last user message>},
        {"role": "assistant", "content": <the partial solution: its steps joined by the delimiter>},
        {"role": "user", "content": <question>},
    ]
    max_tokens = 1, temperature = 0, top_logprobs = <top_logprobs>, logprobs = true

``question`` defaults to "Is the last step of your solution correct? Answer + if it is, - if it
is not." (or, for a complete solution, whether the solution and its final answer are correct),
with the configured ``positive`` and ``negative`` labels; ``template`` replaces it (placeholders
``$positive``, ``$negative``, ``$query``, ``$solution``). With ``reply: tokens`` (the default) the
score is P(positive) / (P(positive) + P(negative)) from the first generated position's
alternatives, a label matching a token up to surrounding whitespace; None when neither label is
among them. A backend that returns no log-probabilities is an error (use ``reply: number``).
With ``reply: number`` (``max_tokens`` 8, no log-probabilities; the default question asks how
likely the last step, or the complete solution, is to be correct, as one number from 0 to 1) the
reply's first number is the score: it must lie in [0, 1], otherwise the node is left unscored.

The default labels are the ``+``/``-`` step labels of process reward models such as
Math-Shepherd's; a model trained with other labels sets ``positive`` and ``negative``
(``"Yes"``/``"No"``, ``"good"``/``"bad"``). The first user message is the query alone (the
system's other messages, a system prompt or few-shot turns, are not sent).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ponder.errors import UserError
from ponder.records import Message, SamplingParams
from ponder.systems._context import RunContext
from ponder.systems._models import ModelRef
from ponder.systems._prompts import check_template, render
from ponder.systems.tree._cost import call_bound
from ponder.systems.tree._odds import answer_odds
from ponder.systems.tree._scorers import ScoreInput, Scorer, config_name, register_scorer

PARTIAL = (
    "Is the last step of your solution correct? Answer $positive if it is, $negative if it is not."
)
COMPLETE = (
    "Is your solution correct, final answer included? Answer $positive if it is, "
    "$negative if it is not."
)
NUMBER = {
    False: "How likely is the last step of your solution to be correct? Answer with one number "
    "from 0 (certainly wrong) to 1 (certainly right).",
    True: "How likely is your solution to be correct, final answer included? Answer with one "
    "number from 0 (certainly wrong) to 1 (certainly right).",
}
PLACEHOLDERS = frozenset({"positive", "negative", "query", "solution"})
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


class RewardModelScorerConfig(BaseModel):
    """Score with a reward model (see :mod:`ponder.systems.tree._reward` for the request)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["reward_model"] = "reward_model"
    model: ModelRef = Field(
        description="The reward model, e.g. {backend: openai, base_url: ..., model: ...}."
    )
    positive: str = Field("+", min_length=1, description="The label of a correct step.")
    negative: str = Field("-", min_length=1, description="The label of a wrong step.")
    reply: Literal["tokens", "number"] = Field(
        "tokens", description="Read the labels' probabilities, or a number from 0 to 1."
    )
    top_logprobs: int = Field(20, ge=1, le=20, description="Alternatives read (tokens reply).")
    template: str | None = Field(
        None,
        description="Replaces the question after the solution; placeholders $positive, "
        "$negative, $query, $solution.",
    )

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value, PLACEHOLDERS)
        return value

    @field_validator("negative")
    @classmethod
    def _distinct(cls, value: str, info: ValidationInfo) -> str:
        positive = info.data.get("positive")
        if positive is not None and value.strip() == positive.strip():
            raise ValueError(f"the negative label must differ from the positive one ({positive!r})")
        return value


def _label(word: str) -> Callable[[str], bool]:
    wanted = word.strip()
    return lambda token: token.strip() == wanted


class RewardModelScorer(Scorer):
    """See :mod:`ponder.systems.tree._reward`."""

    def __init__(self, config: RewardModelScorerConfig) -> None:
        self.config = config
        self._name = config_name("reward_model", config)

    @property
    def name(self) -> str:
        return self._name

    def _max_tokens(self) -> int:
        return 8 if self.config.reply == "number" else 1

    async def cost_bound(self, item: ScoreInput, ctx: RunContext) -> tuple[int, int]:
        """One call: the messages and a reply of ``max_tokens`` (1, or 8 for a number)."""
        backend = ctx.backend(self.config.model)
        return await call_bound(ctx, backend, self.messages(item), self._max_tokens())

    def messages(self, item: ScoreInput) -> list[Message]:
        """The request's messages for ``item`` (see the module's docs)."""
        cfg = self.config
        if cfg.template is not None:
            question = cfg.template
        elif cfg.reply == "number":
            question = NUMBER[item.terminal]
        else:
            question = COMPLETE if item.terminal else PARTIAL
        question = render(
            question,
            positive=cfg.positive,
            negative=cfg.negative,
            query=item.query,
            solution=item.solution,
        )
        return [
            Message(role="user", content=item.query),
            Message(role="assistant", content=item.solution),
            Message(role="user", content=question),
        ]

    async def score(self, item: ScoreInput, ctx: RunContext) -> float | None:
        cfg = self.config
        backend = ctx.backend(cfg.model)
        seed = ctx.seed_for("reward model", item.solution, item.terminal)
        step = f"step {len(item.steps)}{', complete' if item.terminal else ''}"
        numeric = cfg.reply == "number"
        generation = await ctx.generate(
            backend,
            self.messages(item),
            1,
            SamplingParams(temperature=0.0, max_tokens=self._max_tokens(), seed=seed),
            f"reward model ({step})",
            top_logprobs=0 if numeric else cfg.top_logprobs,
        )
        completion = generation.completions[0]
        if numeric:
            found = _NUMBER.search(completion.text)
            value = float(found.group()) if found else None
            if value is None or not 0.0 <= value <= 1.0:
                ctx.fallback(
                    f"reward model: the reply for {step} holds no number from 0 to 1",
                    "left unscored",
                    output=completion.text,
                )
                return None
            return value
        if completion.logprobs is None:
            raise UserError(
                f"the reward model's backend {backend.identity} returned no log-probabilities",
                hint="use a backend that returns them (an OpenAI-compatible server with logprobs, "
                "llamacpp), or set reply: number",
            )
        return answer_odds(completion, _label(cfg.positive), _label(cfg.negative))


@register_scorer("reward_model", RewardModelScorerConfig)
def _make(config: RewardModelScorerConfig) -> Scorer:
    return RewardModelScorer(config)
