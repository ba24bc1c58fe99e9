"""``refine``: self-refine — critique, then revise, for up to r rounds, until the critic accepts."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from ponder._aio import gather_all
from ponder.records import Message
from ponder.systems._component import Component, Delta, ModelComponentConfig, register_component
from ponder.systems._context import RunContext
from ponder.systems._models import ModelRef
from ponder.systems._parsing import parse_verdict
from ponder.systems._prompts import check_template, render, template
from ponder.systems._state import Candidate, State, query_text
from ponder.systems.components._common import chat
from ponder.text import strip_think

VERDICT_EXPECTED = "end with exactly one line: 'Verdict: ACCEPT' or 'Verdict: REVISE'"
ACCEPT_WORDS = ("ACCEPT", "ACCEPTED", "CORRECT")
REVISE_WORDS = ("REVISE", "REJECT", "INCORRECT")


class RefineConfig(ModelComponentConfig):
    """Improve candidates in place: each round a critic reviews the candidate; unless it accepts,
    the model revises the candidate using the review. At most ``max_rounds`` rounds per candidate.

    ``model``/``temperature``/``max_tokens``/``template`` are the reviser's; the ``critic_*`` fields
    are the critic's (the critic model defaults to the reviser's). The candidate keeps its id; each
    revision is a new version in its history. Score: 1 if the critic accepted it, else 0.
    Fallback: an unparseable verdict (after repair prompts) counts as "revise", with the critic's
    whole reply as the feedback.
    """

    type: Literal["refine"] = "refine"
    max_rounds: int = Field(3, ge=1, le=20)
    top_k: int | None = Field(
        None, ge=1, description="Refine only the first k candidates (the rest pass unchanged)."
    )
    critic_model: ModelRef | None = Field(None, description="Default: the reviser's model.")
    critic_temperature: float = Field(0.2, ge=0.0, le=5.0)
    critic_max_tokens: int = Field(512, ge=1, le=131072)
    critic_template: str | None = Field(None, description="Placeholders: $query, $candidate.")
    temperature: float = Field(0.5, ge=0.0, le=5.0)

    template_placeholders: ClassVar[frozenset[str]] = frozenset({"query", "candidate", "feedback"})

    @field_validator("critic_template")
    @classmethod
    def _check_critic_template(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value, {"query", "candidate"})
        return value

    def model_refs(self) -> list[ModelRef | None]:
        return [self.model, self.critic_model if self.critic_model is not None else self.model]

    def describe(self) -> str:
        return f"refine(rounds={self.max_rounds})"


@register_component("refine")
class Refine(Component[RefineConfig]):
    config_type = RefineConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        targets = state.candidates[: self.config.top_k]
        if not targets:
            ctx.note("no candidates to refine")
            return Delta()
        results = await gather_all(self._refine(c, state, ctx) for c in targets)
        changed = [new for (new, _), old in zip(results, targets, strict=True) if new is not old]
        scores = {c.id: 1.0 if accepted else 0.0 for c, accepted in results}
        return Delta(changed=changed, scores=scores)

    async def _refine(
        self, candidate: Candidate, state: State, ctx: RunContext
    ) -> tuple[Candidate, bool]:
        cfg = self.config
        reviser = ctx.backend(cfg.model)
        critic = ctx.backend(cfg.critic_model if cfg.critic_model is not None else cfg.model)
        query = query_text(state.messages)
        critic_body = cfg.critic_template or template("refine_critic")
        revise_body = cfg.template or template("refine_revise")
        # The reviser answers the query again, so it keeps the query's own system message.
        system = [m for m in state.messages if m.role == "system"]
        if cfg.system_prompt is not None:
            system = (
                [Message(role="system", content=cfg.system_prompt)] if cfg.system_prompt else []
            )
        current = candidate
        for round_ in range(1, cfg.max_rounds + 1):
            asked = await ctx.ask(
                critic,
                chat(
                    template("refine.system"),
                    render(critic_body, query=query, candidate=strip_think(current.text).strip()),
                ),
                cfg.sampling(
                    ctx.seed_for("critic", candidate.id, round_),
                    temperature=cfg.critic_temperature,
                    max_tokens=cfg.critic_max_tokens,
                ),
                lambda text: parse_verdict(text, ACCEPT_WORDS, REVISE_WORDS),
                purpose=f"critic {candidate.id} round {round_}",
                expected=VERDICT_EXPECTED,
            )
            if asked.value is True:
                ctx.note(f"{candidate.id}: accepted in round {round_}")
                return current, True
            if asked.value is None:
                ctx.fallback(
                    f"unparseable critic verdict after {ctx.repair_retries} repair(s): "
                    f"{asked.problem}",
                    "revised with the critic's whole reply as feedback",
                    [candidate.id],
                    asked.output,
                )
            user = render(
                revise_body,
                query=query,
                candidate=strip_think(current.text).strip(),
                feedback=asked.output,
            )
            generation = await ctx.generate(
                reviser,
                [*system, Message(role="user", content=user)],
                1,
                cfg.sampling(ctx.seed_for("revise", candidate.id, round_)),
                f"revise {candidate.id} round {round_}",
            )
            current = ctx.revised(current, generation.completions[0].text, model=reviser.identity)
        ctx.note(f"{candidate.id}: not accepted after {cfg.max_rounds} round(s)")
        return current, False
