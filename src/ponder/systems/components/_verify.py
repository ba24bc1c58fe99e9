"""``verify``: a programmatic verifier as a filter, for queries that come with a reference."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from ponder.errors import PonderError
from ponder.systems._component import Component, ComponentConfig, Delta, register_component
from ponder.systems._context import RunContext
from ponder.systems._state import State


class VerifyConfig(ComponentConfig):
    """Keep the candidates a verifier passes (e.g. visible tests of a coding problem).

    ``verifier`` names a verifier passed to the system (``System(..., verifiers={...})``: a
    :class:`~ponder.verify.Verifier` or a function ``(reference, text) -> bool``) or a registered
    verifier kind (``math``, ...). The query's ``reference`` is what it checks against.
    Fallback: without a reference, or when no candidate passes, all candidates are kept (recorded).
    Scores: 1 for pass, 0 for fail.
    """

    type: Literal["verify"] = "verify"
    verifier: str = Field("math", description="A verifier given to the system, or a verifier kind.")
    top_k: int | None = Field(None, ge=1, description="Keep at most this many passing candidates.")

    def describe(self) -> str:
        return f"verify({self.verifier})"


@register_component("verify")
class Verify(Component[VerifyConfig]):
    config_type = VerifyConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        candidates = state.candidates
        ids = [c.id for c in candidates]
        if state.reference is None:
            ctx.fallback("the query has no reference to verify against", "kept all candidates", ids)
            return Delta()
        if not candidates:
            ctx.note("no candidates to verify")
            return Delta()
        check = ctx.resources.checker(cfg.verifier)
        try:
            # Verifiers block (processes, sandboxes): keep them off the event loop.
            passed = await asyncio.to_thread(check, state.reference, [c.text for c in candidates])
        except PonderError:
            raise
        except Exception as exc:  # a user-supplied check failed: re-raised with where it happened
            raise ctx.error(
                f"verifier {cfg.verifier!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        scores = {c.id: 1.0 if ok else 0.0 for c, ok in zip(candidates, passed, strict=True)}
        kept = [c.id for c, ok in zip(candidates, passed, strict=True) if ok]
        if not kept:
            ctx.fallback("no candidate passed the verifier", "kept all candidates", ids)
            return Delta(scores=scores)
        return Delta(keep=kept[: cfg.top_k], scores=scores)
