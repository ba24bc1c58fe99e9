"""``beam_search`` and ``dvts``: step-level beam search guided by a process scorer.

Beam search keeps the ``width`` best partial solutions; each round every one of them is grown by
``expansions`` candidate next steps (one request each), the new steps are scored, and the
``width`` best non-terminal paths (by aggregated path score) go on. A path that ends (a terminal
step) is a finished solution. DVTS (diverse verifier tree search) spends the same compute on
``subtrees`` independent searches of width 1: the root is grown by one first step per subtree, and
each subtree then keeps its own best path, so one early high-scoring step cannot take every beam.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ponder._aio import gather_all
from ponder.systems._component import Component, Delta, register_component
from ponder.systems._context import RunContext
from ponder.systems._state import State
from ponder.systems.tree._grow import BudgetReached, Grower, StepSearchConfig


class BeamSearchConfig(StepSearchConfig):
    """Step-level beam search: ``width`` paths kept, each grown by ``expansions`` steps a round,
    for at most ``steps.max_depth`` rounds. Candidates: the finished solutions, best path score
    first (with none finished, the best unfinished paths)."""

    type: Literal["beam_search"] = "beam_search"
    width: int = Field(4, ge=1, le=256)
    expansions: int = Field(4, ge=1, le=64, description="Next steps drawn per kept path.")

    def expansion_width(self) -> int:
        return self.expansions

    def describe(self) -> str:
        return f"beam_search(width={self.width}, expansions={self.expansions})"


class DvtsConfig(StepSearchConfig):
    """Diverse verifier tree search: ``subtrees`` independent searches of width 1 from different
    first steps, each growing its path by ``expansions`` steps a round and keeping the best."""

    type: Literal["dvts"] = "dvts"
    subtrees: int = Field(4, ge=1, le=256)
    expansions: int = Field(4, ge=1, le=64)

    def expansion_width(self) -> int:
        return self.subtrees

    def describe(self) -> str:
        return f"dvts(subtrees={self.subtrees}, expansions={self.expansions})"


async def beam(grower: Grower, starts: list[int], width: int, expansions: int) -> list[int]:
    """Beam search from ``starts``; returns the finished leaves (and, if the search stops, the
    open paths kept last), in no particular order. Stops quietly when the budget is reached."""
    beams = [n for n in starts if not grower.node(n).terminal]
    finished = [n for n in starts if grower.node(n).terminal]
    round_ = 0
    while beams and len(finished) < width:
        round_ += 1
        active = [b for b in beams if grower.expandable(b)]
        if not active:
            break
        try:
            grown = await grower.expand([(b, expansions) for b in active], round_)
        except BudgetReached as exc:
            grower.ctx.note(f"stopped at round {round_}: the budget is reached ({exc})")
            break
        children = [c.id for group in grown for c in group]
        finished += [c for c in children if grower.node(c).terminal]
        open_ = [c for c in children if not grower.node(c).terminal]
        # A finished path frees its place: fewer paths go on (as in search-and-learn).
        beams = grower.best_first(open_)[: width - len(finished)]
    return finished if finished else beams


@register_component("beam_search")
class BeamSearch(Component[BeamSearchConfig]):
    config_type = BeamSearchConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        grower = Grower(cfg, state, ctx, "beam_search")
        leaves = await beam(grower, [0], cfg.width, cfg.expansions)
        done = [n for n in leaves if grower.node(n).terminal]
        note = None if done else "no path finished: returned the best open paths"
        return grower.delta(grower.best_first(leaves), note)


@register_component("dvts")
class Dvts(Component[DvtsConfig]):
    config_type = DvtsConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        grower = Grower(cfg, state, ctx, "dvts")
        try:
            (firsts,) = await grower.expand([(0, cfg.subtrees)], 0)
        except BudgetReached as exc:
            ctx.note(f"the budget is reached before the first steps ({exc})")
            return grower.delta([])
        results = await gather_all(beam(grower, [first.id], 1, cfg.expansions) for first in firsts)
        leaves = [leaf for found in results for leaf in found]
        done = [n for n in leaves if grower.node(n).terminal]
        note = None if done else "no subtree finished: returned the best open paths"
        return grower.delta(grower.best_first(leaves), note)
