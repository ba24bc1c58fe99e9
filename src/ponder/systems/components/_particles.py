"""``particles``: particle filtering over reasoning steps.

``particles`` partial solutions advance together, one step each per round; the step scores weigh
them, and the open ones are resampled (with replacement, seeded) in proportion to their weights
``exp(path score / temperature)`` (a softmax over the path scores), so good paths multiply and
poor ones die out while a weak-looking path keeps a chance. Particles on the same node are grown
by one request for that many steps. Finished particles stay; the search ends when every particle
has finished, at the depth limit, or at the budget. Candidates: the finished solutions, best
path score first.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Literal

from pydantic import Field

from ponder.systems._component import Component, Delta, register_component
from ponder.systems._context import RunContext
from ponder.systems._state import State
from ponder.systems.tree._grow import BudgetReached, Grower, StepSearchConfig


class ParticlesConfig(StepSearchConfig):
    """Particle filtering (see the module's docs)."""

    type: Literal["particles"] = "particles"
    particles: int = Field(8, ge=1, le=1024)
    resample_temperature: float = Field(
        0.2, gt=0.0, le=100.0, description="Softmax temperature of the resampling weights."
    )

    def expansion_width(self) -> int:
        return self.particles

    def describe(self) -> str:
        return f"particles(n={self.particles})"


def resample(
    nodes: list[int], values: list[float | None], k: int, temperature: float, rng: random.Random
) -> list[int]:
    """``k`` draws from ``nodes`` with probabilities ``softmax(value / temperature)`` (an unscored
    node weighs as the lowest score, 0)."""
    logits = [(v or 0.0) / temperature for v in values]
    top = max(logits)
    weights = [math.exp(x - top) for x in logits]
    return rng.choices(nodes, weights=weights, k=k)


@register_component("particles")
class Particles(Component[ParticlesConfig]):
    config_type = ParticlesConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        grower = Grower(cfg, state, ctx, "particles")
        rng = random.Random(ctx.seed_for("resample"))
        alive = [0] * cfg.particles  # node ids, one per particle
        finished: list[int] = []
        round_ = 0
        while alive:
            round_ += 1
            counts = Counter(n for n in alive if grower.expandable(n))
            if not counts:
                break
            try:
                grown = await grower.expand(list(counts.items()), round_)
            except BudgetReached as exc:
                ctx.note(f"stopped at round {round_}: the budget is reached ({exc})")
                break
            children = [c.id for group in grown for c in group]
            finished += [c for c in children if grower.node(c).terminal]
            open_ = [c for c in children if not grower.node(c).terminal]
            if not open_:
                alive = []
                break
            k = cfg.particles - len(finished)
            if k <= 0:
                break
            values = [grower.node(c).value for c in open_]
            alive = resample(open_, values, k, cfg.resample_temperature, rng)
        leaves = finished or list(dict.fromkeys(alive))
        note = None if finished else "no particle finished: returned the open paths"
        return grower.delta(grower.best_first(list(dict.fromkeys(leaves))), note)
