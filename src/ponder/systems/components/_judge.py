"""``judge``: an LLM verifier that scores (1-10) or accepts/rejects each candidate."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ponder._aio import gather_all
from ponder.records import Message
from ponder.systems._component import Component, Delta, ModelComponentConfig, register_component
from ponder.systems._context import Asked, RunContext
from ponder.systems._parsing import parse_score, parse_verdict
from ponder.systems._prompts import render
from ponder.systems._state import Candidate, State, query_text
from ponder.systems.components._common import chat, system_text, user_template

SCORE_EXPECTED = "end with one line 'Score: N' where N is a whole number from 1 to 10"
ACCEPT_EXPECTED = "end with exactly one line: 'Verdict: ACCEPT' or 'Verdict: REJECT'"
ACCEPT_WORDS = ("ACCEPT", "ACCEPTED", "CORRECT", "YES")
REJECT_WORDS = ("REJECT", "REJECTED", "INCORRECT", "NO")


class JudgeConfig(ModelComponentConfig):
    """Judge each candidate in its own call (all candidates concurrently).

    * ``score``: a grade from 1 to 10; candidates are sorted by it (stable), optionally cut at
      ``min_score`` and to ``top_k``. Best-of-N is ``generate n`` then ``judge top_k: 1``.
    * ``accept``: ACCEPT or REJECT (score 1 or 0); with ``filter``, rejected candidates are dropped.

    Fallback: a candidate whose reply stays unparseable is unscored and kept (after the scored ones
    when sorting). When a filter would drop every candidate, all are kept and that is recorded.
    """

    type: Literal["judge"] = "judge"
    mode: Literal["score", "accept"] = "score"
    top_k: int | None = Field(None, ge=1, description="Keep at most this many.")
    min_score: float | None = Field(None, ge=1, le=10, description="Score mode: drop lower scores.")
    filter: bool = Field(True, description="Accept mode: drop rejected candidates.")
    temperature: float = Field(0.2, ge=0.0, le=5.0)
    max_tokens: int = Field(384, ge=1, le=131072)

    template_placeholders: ClassVar[frozenset[str]] = frozenset({"query", "candidate"})

    @model_validator(mode="after")
    def _mode_fields(self) -> JudgeConfig:
        if self.min_score is not None and self.mode != "score":
            raise ValueError("min_score applies to mode 'score' only")
        return self

    def describe(self) -> str:
        k = f", top_k={self.top_k}" if self.top_k else ""
        return f"judge({self.mode}{k})"


@register_component("judge")
class Judge(Component[JudgeConfig]):
    config_type = JudgeConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        candidates = state.candidates
        if not candidates:
            ctx.note("no candidates to judge")
            return Delta()
        backend = ctx.backend(cfg.model)
        body = user_template(cfg, "judge_score" if cfg.mode == "score" else "judge_accept")
        query = query_text(state.messages)

        async def judge(candidate: Candidate) -> Asked[float]:
            def build(texts: list[str]) -> list[Message]:
                user = render(body, query=query, candidate=texts[0])
                return chat(system_text(cfg, "judge.system"), user)

            scored = cfg.mode == "score"
            messages = await ctx.fit(backend, build, [candidate], max_tokens=cfg.max_tokens)
            return await ctx.ask(
                backend,
                messages,
                cfg.sampling(ctx.seed_for("judge", candidate.id)),
                parse_score if scored else _accepted,
                purpose=f"judge {candidate.id}",
                expected=SCORE_EXPECTED if scored else ACCEPT_EXPECTED,
            )

        outcomes = await gather_all(judge(c) for c in candidates)
        scores: dict[str, float] = {}
        for candidate, asked in zip(candidates, outcomes, strict=True):
            if asked.value is None:
                ctx.fallback(
                    f"unparseable judgement after {ctx.repair_retries} repair(s): {asked.problem}",
                    "left unscored and kept",
                    [candidate.id],
                    asked.output,
                )
            else:
                scores[candidate.id] = asked.value
        if cfg.mode == "score":
            kept = self._by_score(candidates, scores, ctx)
            return Delta(keep=kept[: cfg.top_k], reorder=True, scores=scores)
        kept = [c.id for c in candidates]
        if cfg.filter:
            accepted = [c.id for c in candidates if scores.get(c.id, 1.0) > 0]
            if accepted:
                kept = accepted
            else:
                ctx.fallback("the judge rejected every candidate", "kept all candidates", kept)
        return Delta(keep=kept[: cfg.top_k], scores=scores)

    def _by_score(
        self, candidates: list[Candidate], scores: dict[str, float], ctx: RunContext
    ) -> list[str]:
        # Stable sort: equal scores keep the input order; unscored candidates go last.
        ranked = sorted(candidates, key=lambda c: (c.id not in scores, -scores.get(c.id, 0.0)))
        floor = self.config.min_score
        if floor is None:
            return [c.id for c in ranked]
        kept = [c.id for c in ranked if c.id not in scores or scores[c.id] >= floor]
        if not kept:
            ctx.fallback(
                f"no candidate reached min_score {floor:g}",
                "kept all candidates, best first",
                [c.id for c in ranked],
            )
            return [c.id for c in ranked]
        return kept


def _accepted(text: str) -> float:
    return 1.0 if parse_verdict(text, ACCEPT_WORDS, REJECT_WORDS) else 0.0
