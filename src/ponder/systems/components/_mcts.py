"""``mcts``: Monte Carlo tree search over reasoning steps.

Each iteration walks from the root to a leaf, at each node taking the child with the best
selection value: UCT, ``Q + c * sqrt(ln N / n)`` (an unvisited child first, in the order drawn),
or PUCT, ``Q + c * P * sqrt(N) / (1 + n)`` with the prior ``P`` the children's step scores
normalised to sum to 1 (Q: the child's mean backed-up value; N, n: the visits of the node and
of the child). The leaf, unless terminal, is grown by ``width`` next steps (one request), which
are scored. Its value is its own step score (``value: scorer``; the root: its best child's), or the
score of a complete solution rolled out from it one greedy step at a time (``value: rollout``;
the rollout's steps are not added to the tree, its solution is kept as a candidate). The value is
added along the path (each node's value becomes the mean of what went through it).

After ``iterations``, the answer follows the most visited child from the root (ties: the higher
value) down to a terminal node; candidates are that path, then the other terminal nodes and
rollouts, best first. With ``finish`` (the default), a most visited path that does not end (few
iterations, or a budget) is finished: the model writes the rest of it in one request, unscored,
and the search keeps back what that request may cost from its budget (it stops early rather than
spend it). An unfinished path has no answer to give; without ``finish`` it is returned as is.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from ponder.systems._component import Component, Delta, register_component
from ponder.systems._context import RunContext
from ponder.systems._state import State
from ponder.systems.tree._grow import BudgetReached, Grower, StepSearchConfig


class MctsConfig(StepSearchConfig):
    """Monte Carlo tree search (see the module's docs)."""

    type: Literal["mcts"] = "mcts"
    iterations: int = Field(16, ge=1, le=10_000)
    width: int = Field(3, ge=1, le=64, description="Next steps drawn when a leaf is grown.")
    selection: Literal["uct", "puct"] = "uct"
    exploration: float = Field(1.4, ge=0.0, le=100.0, description="c in UCT/PUCT.")
    value: Literal["scorer", "rollout"] = Field(
        "scorer", description="A new leaf's value: its step score, or a greedy rollout's score."
    )
    finish: bool = Field(
        True,
        description="Finish a most visited path that does not end, in one request (its cost is "
        "kept back from the budget); false: return it unfinished.",
    )

    def expansion_width(self) -> int:
        return self.width

    def describe(self) -> str:
        return f"mcts(iterations={self.iterations}, width={self.width}, {self.selection})"


class _Stats:
    """Visits and summed values per node id."""

    def __init__(self) -> None:
        self.visits: dict[int, int] = {}
        self.total: dict[int, float] = {}

    def q(self, node_id: int) -> float:
        n = self.visits.get(node_id, 0)
        return self.total.get(node_id, 0.0) / n if n else 0.0


def select_child(
    children: list[tuple[int, float | None]],
    stats: _Stats,
    parent_visits: int,
    rule: Literal["uct", "puct"],
    c: float,
) -> int:
    """The child (id, step score) to walk to from a node visited ``parent_visits`` times."""
    if rule == "uct":
        for child_id, _ in children:
            if stats.visits.get(child_id, 0) == 0:
                return child_id

        def uct(item: tuple[int, float | None]) -> float:
            n = stats.visits[item[0]]
            return stats.q(item[0]) + c * math.sqrt(math.log(parent_visits) / n)

        return max(children, key=uct)[0]
    raw = [max(score or 0.0, 0.0) for _, score in children]
    total = sum(raw)
    priors = [r / total if total else 1.0 / len(children) for r in raw]

    def puct(index: int) -> float:
        child_id = children[index][0]
        n = stats.visits.get(child_id, 0)
        return stats.q(child_id) + c * priors[index] * math.sqrt(parent_visits) / (1 + n)

    return children[max(range(len(children)), key=puct)][0]


@register_component("mcts")
class Mcts(Component[MctsConfig]):
    config_type = MctsConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        grower = Grower(cfg, state, ctx, "mcts")
        stats = _Stats()
        rollouts: list[int] = []
        stopped = None
        for iteration in range(1, cfg.iterations + 1):
            if cfg.finish and not await self._keep_finish(grower, stats):
                stopped = (
                    f"stopped before iteration {iteration}: the rest of the budget finishes the "
                    "most visited path"
                )
                break
            path = self._select(grower, stats)
            leaf = path[-1]
            try:
                value = await self._evaluate(grower, leaf, iteration, rollouts)
            except BudgetReached as exc:
                stopped = f"stopped in iteration {iteration}: the budget is reached ({exc})"
                break
            for node_id in path:
                stats.visits[node_id] = stats.visits.get(node_id, 0) + 1
                stats.total[node_id] = stats.total.get(node_id, 0.0) + value
                node = grower.node(node_id)
                node.visits = stats.visits[node_id]
                node.value = stats.q(node_id)
        if stopped:
            ctx.note(stopped)
        answer = self._answer(grower, stats)
        note = None
        if answer is not None and cfg.finish and grower.expandable(answer):
            try:
                answer = (await grower.finish(answer, cfg.iterations + 1)).id
            except BudgetReached as exc:
                note = f"the most visited path could not be finished: {exc}"
        others = [n.id for n in grower.tree.nodes if n.terminal and n.id != answer] + [
            r for r in rollouts if r != answer
        ]
        leaves = ([answer] if answer else []) + grower.best_first(others)
        if answer is not None and not grower.node(answer).terminal:
            note = note or "the most visited path does not finish: returned it unfinished"
        return grower.delta(leaves, note)

    async def _keep_finish(self, grower: Grower, stats: _Stats) -> bool:
        """Keep back from the budget what finishing the most visited path may cost; False when
        that no longer fits."""
        answer = self._answer(grower, stats)
        if answer is None or not grower.expandable(answer):
            return grower.keep((0, 0))
        return grower.keep(await grower.finish_cost(answer))

    def _select(self, grower: Grower, stats: _Stats) -> list[int]:
        """The path from the root to the leaf this iteration evaluates."""
        cfg = self.config
        path = [0]
        while True:
            node_id = path[-1]
            children = [c for c in grower.children(node_id) if c.note != "rollout"]
            if not children or grower.node(node_id).terminal:
                return path
            parent_visits = max(1, stats.visits.get(node_id, 0))
            pairs = [(c.id, c.score) for c in children]
            path.append(select_child(pairs, stats, parent_visits, cfg.selection, cfg.exploration))

    async def _evaluate(
        self, grower: Grower, leaf: int, iteration: int, rollouts: list[int]
    ) -> float:
        """Grow ``leaf`` (unless it ends) and return its value."""
        cfg = self.config
        node = grower.node(leaf)
        if grower.expandable(leaf):
            (children,) = await grower.expand([(leaf, cfg.width)], iteration)
            if leaf == 0:
                scores = [c.score for c in children if c.score is not None]
                return max(scores, default=0.0)
        if leaf == 0:
            return 0.0
        if cfg.value == "scorer" or node.terminal:
            return node.score or 0.0
        return await self._rollout(grower, leaf, iteration, rollouts)

    async def _rollout(
        self, grower: Grower, start: int, iteration: int, rollouts: list[int]
    ) -> float:
        """Complete the solution from ``start`` one step at a time (1 step per request); the
        steps are kept in the tree, marked "rollout", out of the selection's way."""
        current = start
        round_ = 0
        while grower.expandable(current):
            round_ += 1
            (children,) = await grower.expand([(current, 1)], iteration * 1000 + round_)
            child = children[0]
            child.note = "rollout"
            current = child.id
        if current != start:
            rollouts.append(current)
        return grower.node(current).score or 0.0

    def _answer(self, grower: Grower, stats: _Stats) -> int | None:
        """The most visited path's last node (None: nothing was grown)."""
        node_id = 0
        while True:
            children = [c for c in grower.children(node_id) if stats.visits.get(c.id, 0) > 0]
            if not children:
                return None if node_id == 0 else node_id
            node_id = max(children, key=lambda c: (stats.visits[c.id], stats.q(c.id))).id
