"""``rank``: order the candidates best first (listwise or pairwise) and keep the top k."""

from __future__ import annotations

from itertools import combinations
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ponder._aio import gather_all
from ponder.records import Message
from ponder.systems._component import Component, Delta, ModelComponentConfig, register_component
from ponder.systems._context import Asked, RunContext
from ponder.systems._parsing import parse_ranking, parse_winner
from ponder.systems._prompts import render
from ponder.systems._state import Candidate, State, query_text
from ponder.systems.components._common import chat, numbered, system_text, user_template

LISTWISE_EXPECTED = (
    "end with one line 'Ranking: ' followed by every candidate number in square brackets, best "
    "first, separated by ' > ' (for example 'Ranking: [2] > [1] > [3]')"
)
PAIRWISE_EXPECTED = "end with exactly one line: 'Winner: A' or 'Winner: B'"


class RankConfig(ModelComponentConfig):
    """Order the candidates best first and keep the first ``top_k``.

    * ``listwise``: one call shows all candidates (with their critiques when ``use_critiques`` and
      an earlier critique exists) and asks for an order like ``[2] > [1] > [3]``.
    * ``pairwise``: one call per pair (both orders with ``both_orders``, against position bias);
      candidates are ordered by wins, ties in input order.

    Scores: the candidate's position (1 = best) in listwise mode, its wins in pairwise mode.
    Fallback: an unparseable ranking keeps the input order (and gives no scores); an unparseable
    pair counts for neither candidate.
    """

    type: Literal["rank"] = "rank"
    mode: Literal["listwise", "pairwise"] = "listwise"
    top_k: int | None = Field(None, ge=1, description="Keep this many (default: all, reordered).")
    use_critiques: bool = Field(True, description="Show critiques from an earlier layer.")
    both_orders: bool = Field(False, description="Pairwise: ask about each pair both ways round.")
    temperature: float = Field(0.2, ge=0.0, le=5.0)
    max_tokens: int = Field(384, ge=1, le=131072)

    template_placeholders: ClassVar[frozenset[str]] = frozenset(
        {"query", "candidates", "count", "example", "a", "b"}
    )

    @model_validator(mode="after")
    def _pairwise_only(self) -> RankConfig:
        if self.both_orders and self.mode != "pairwise":
            raise ValueError("both_orders applies to mode 'pairwise' only")
        return self

    def describe(self) -> str:
        k = f", top_k={self.top_k}" if self.top_k else ""
        return f"rank({self.mode}{k})"


@register_component("rank")
class Rank(Component[RankConfig]):
    config_type = RankConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        candidates = state.candidates
        if len(candidates) <= 1:
            ctx.note(f"{len(candidates)} candidate(s): nothing to rank")
            return Delta(keep=[c.id for c in candidates], reorder=True)
        if self.config.mode == "listwise":
            order, scores = await self._listwise(state, ctx)
        else:
            order, scores = await self._pairwise(state, ctx)
        kept = [candidates[i].id for i in order][: self.config.top_k]
        return Delta(keep=kept, reorder=True, scores=scores)

    async def _listwise(self, state: State, ctx: RunContext) -> tuple[list[int], dict[str, float]]:
        cfg = self.config
        candidates = state.candidates
        count = len(candidates)
        example = " > ".join(f"[{i}]" for i in _example(count))
        template = user_template(cfg, "rank")
        system = system_text(cfg, "rank.system")

        def build(texts: list[str]) -> list[Message]:
            user = render(
                template,
                query=query_text(state.messages),
                candidates=numbered(candidates, state if cfg.use_critiques else None, texts),
                count=count,
                example=example,
            )
            return chat(system, user)

        backend = ctx.backend(cfg.model)
        messages = await ctx.fit(backend, build, candidates, max_tokens=cfg.max_tokens)
        asked = await ctx.ask(
            backend,
            messages,
            cfg.sampling(ctx.seed_for("rank")),
            lambda text: parse_ranking(text, count, cfg.top_k),
            purpose="rank",
            expected=LISTWISE_EXPECTED,
        )
        if asked.value is None:
            ctx.fallback(
                f"unparseable ranking after {ctx.repair_retries} repair(s): {asked.problem}",
                "kept the input order",
                [c.id for c in candidates],
                asked.output,
            )
            # No scores: the input order is not the ranker's judgement.
            return list(range(count)), {}
        order = asked.value
        return order, {candidates[i].id: float(pos) for pos, i in enumerate(order, 1)}

    async def _pairwise(self, state: State, ctx: RunContext) -> tuple[list[int], dict[str, float]]:
        cfg = self.config
        candidates = state.candidates
        backend = ctx.backend(cfg.model)
        pairs = list(combinations(range(len(candidates)), 2))
        if cfg.both_orders:
            pairs += [(j, i) for i, j in pairs]
        query = query_text(state.messages)
        body = user_template(cfg, "rank_pair")

        async def compare(i: int, j: int) -> Asked[str]:
            a, b = candidates[i], candidates[j]

            def build(texts: list[str]) -> list[Message]:
                user = render(body, query=query, a=texts[0], b=texts[1])
                return chat(system_text(cfg, "rank.system"), user)

            purpose = f"compare {a.id} vs {b.id}"
            messages = await ctx.fit(backend, build, [a, b], max_tokens=cfg.max_tokens)
            return await ctx.ask(
                backend,
                messages,
                cfg.sampling(ctx.seed_for("pair", a.id, b.id)),
                parse_winner,
                purpose=purpose,
                expected=PAIRWISE_EXPECTED,
            )

        outcomes = await gather_all(compare(i, j) for i, j in pairs)
        wins = [0] * len(candidates)
        failed: list[tuple[Candidate, Candidate, Asked[str]]] = []
        for (i, j), asked in zip(pairs, outcomes, strict=True):
            if asked.value is None:
                failed.append((candidates[i], candidates[j], asked))
            else:
                wins[i if asked.value == "A" else j] += 1
        for a, b, asked in failed:
            ctx.fallback(
                f"unparseable comparison of {a.id} vs {b.id} after {ctx.repair_retries} "
                f"repair(s): {asked.problem}",
                "the pair counts as a win for neither",
                [a.id, b.id],
                asked.output,
            )
        # Stable: equal wins keep the input order.
        order = sorted(range(len(candidates)), key=lambda i: -wins[i])
        return order, {c.id: float(w) for c, w in zip(candidates, wins, strict=True)}


def _example(count: int) -> list[int]:
    """A made-up order of ``count`` numbers for the prompt's example (not 1, 2, 3: that reads as a hint)."""
    shown = min(count, 4)
    return [*range(2, shown + 1), 1] if shown > 1 else [1]
