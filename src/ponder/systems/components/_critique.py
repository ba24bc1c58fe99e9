"""``critique``: strengths and weaknesses of every candidate, from one call over all of them."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ponder.records import Message
from ponder.systems._component import Component, Delta, ModelComponentConfig, register_component
from ponder.systems._context import RunContext
from ponder.systems._parsing import ParsedCritique, parse_critiques, require_all_critiques
from ponder.systems._prompts import render
from ponder.systems._state import Critique, State, query_text
from ponder.systems.components._common import chat, numbered, system_text, user_template

EXPECTED = (
    "each block starts with the candidate number in brackets on its own line (like [3]), "
    "followed by a line 'Strengths: ...' and a line 'Weaknesses: ...'"
)


class CritiqueConfig(ModelComponentConfig):
    """Review every candidate in one call; the critiques go into the state for rank and fuse.

    A reply that reviews only some candidates is kept, and the repair prompt asks for the missing
    blocks alone (small models often stop early or number blocks their own way); the blocks of all
    replies are merged, the first block for a candidate counting.

    Fallback: candidates whose review cannot be found after the repair prompts get no critique.
    """

    type: Literal["critique"] = "critique"
    temperature: float = Field(0.3, ge=0.0, le=5.0)
    max_tokens: int = Field(768, ge=1, le=131072)

    template_placeholders: ClassVar[frozenset[str]] = frozenset({"query", "candidates", "count"})


@register_component("critique")
class Critic(Component[CritiqueConfig]):
    config_type = CritiqueConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        candidates = state.candidates
        count = len(candidates)
        if not candidates:
            ctx.note("no candidates to critique")
            return Delta()
        backend = ctx.backend(cfg.model)
        template = user_template(cfg, "critique")
        system = system_text(cfg, "critique.system")

        def build(texts: list[str]) -> list[Message]:
            user = render(
                template,
                query=query_text(state.messages),
                candidates=numbered(candidates, texts=texts),
                count=count,
            )
            return chat(system, user)

        messages = await ctx.fit(backend, build, candidates, max_tokens=cfg.max_tokens)
        merged: dict[int, ParsedCritique] = {}

        def parse(text: str) -> dict[int, ParsedCritique]:
            for i, parsed in parse_critiques(text, count, partial=True).items():
                merged.setdefault(i, parsed)
            return require_all_critiques(dict(merged), count)

        asked = await ctx.ask(
            backend,
            messages,
            cfg.sampling(ctx.seed_for("critique")),
            parse,
            purpose="critique",
            expected=EXPECTED,
        )
        found = asked.value
        if found is None:
            found = merged
            missing = [c.id for i, c in enumerate(candidates) if i not in found]
            ctx.fallback(
                f"unparseable critique after {ctx.repair_retries} repair(s): {asked.problem}",
                "the candidates listed here get no critique",
                missing,
                asked.output,
            )
        critiques = [
            Critique(
                candidate_id=candidates[i].id,
                candidate_version=candidates[i].version,
                strengths=parsed.strengths,
                weaknesses=parsed.weaknesses,
                text=parsed.text,
                component=ctx.label,
                layer=ctx.layer,
            )
            for i, parsed in sorted(found.items())
        ]
        return Delta(critiques=critiques)
