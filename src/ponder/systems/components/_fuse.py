"""``fuse``: synthesise the candidates (and their critiques) into new candidates."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ponder.records import Message
from ponder.systems._component import Component, Delta, ModelComponentConfig, register_component
from ponder.systems._context import RunContext
from ponder.systems._prompts import render
from ponder.systems._state import State, query_text
from ponder.systems.components._common import chat, numbered, sample, system_text, user_template


class FuseConfig(ModelComponentConfig):
    """Write ``n`` new answers from all candidates (one request with n).

    The fused candidates replace the inputs, or, with ``keep_inputs``, come before them.
    """

    type: Literal["fuse"] = "fuse"
    n: int = Field(1, ge=1, le=1000, description="Fused candidates to write.")
    keep_inputs: bool = Field(False, description="Keep the input candidates after the fused ones.")
    use_critiques: bool = Field(True, description="Show critiques from an earlier layer.")
    concise: bool = Field(False, description="Ask for an answer about as long as the candidates.")
    temperature: float = Field(0.4, ge=0.0, le=5.0)

    makes_candidates: ClassVar[bool] = True
    template_placeholders: ClassVar[frozenset[str]] = frozenset(
        {"query", "candidates", "count", "critique_note", "length_note"}
    )

    def describe(self) -> str:
        return f"fuse(n={self.n})" if self.n > 1 else "fuse"


@register_component("fuse")
class Fuse(Component[FuseConfig]):
    config_type = FuseConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        candidates = state.candidates
        if not candidates:
            ctx.note("no candidates to fuse")
            return Delta()
        with_critiques = cfg.use_critiques and any(state.critiques_of(c) for c in candidates)
        template = user_template(cfg, "fuse")
        system = system_text(cfg, "fuse.system")

        def build(texts: list[str]) -> list[Message]:
            user = render(
                template,
                query=query_text(state.messages),
                candidates=numbered(candidates, state if with_critiques else None, texts),
                count=len(candidates),
                critique_note=" with a reviewer's notes on each" if with_critiques else "",
                length_note=(
                    "\nKeep your answer about as long as a typical candidate."
                    if cfg.concise
                    else ""
                ),
            )
            return chat(system, user)

        backend = ctx.backend(cfg.model)
        prompt = await ctx.fit(backend, build, candidates, max_tokens=cfg.max_tokens)
        completions = await sample(
            ctx,
            backend,
            prompt,
            cfg.n,
            lambda chunk: cfg.sampling(ctx.seed_for("fuse", chunk)),
            "fuse",
        )
        parents = [c.id for c in candidates]
        new = [
            ctx.candidate(
                c.text, action="fused", model=backend.identity, parents=parents, completion=c
            )
            for c in completions
        ]
        return Delta(new=new, placement="prepend" if cfg.keep_inputs else "replace")
