"""What every step-level strategy shares: its config fields, and growing, scoring and budgeting
one search tree for one query (:class:`Grower`)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from ponder._aio import gather_all
from ponder.errors import ConfigError, UserError
from ponder.records import Message
from ponder.systems._component import Delta, ModelComponentConfig
from ponder.systems._context import RunContext
from ponder.systems._state import Candidate, State
from ponder.systems._trace import SearchTree, TreeNode
from ponder.systems.tree._scorers import (
    AggregateRule,
    ScoreCache,
    ScoreInput,
    Scorer,
    aggregate,
    make_scorer,
    scorer_config,
)
from ponder.systems.tree._steps import (
    Step,
    StepsConfig,
    next_steps,
    rest_of_solution,
    step_prompt,
)

STEP_SYSTEM = (
    "Solve the problem step by step. Write each step as a short paragraph and separate the steps "
    "with a blank line. End with a step that states the final answer."
)


class StepSearchConfig(ModelComponentConfig):
    """Fields of every step-level search (beam search, DVTS, MCTS, particle filtering).

    ``model``/``temperature``/... are those of the model that writes the steps; ``system_prompt``
    replaces the built-in one that asks for steps separated by blank lines. ``scorer`` is a process
    scorer spec (``{kind: judge}``, ``{kind: python, function: ...}``, ...); ``aggregate`` makes a
    path's score from its step scores. ``budget_tokens`` (prompt + completion tokens of every call
    of the component, scoring included) and ``budget_calls`` stop the search before a call could
    pass them; a budget smaller than one expansion is an error.
    """

    steps: StepsConfig = Field(default_factory=StepsConfig)
    scorer: dict[str, Any] = Field(default_factory=lambda: {"kind": "judge"})
    aggregate: AggregateRule = "last"
    budget_tokens: int | None = Field(None, ge=1)
    budget_calls: int | None = Field(None, ge=1)
    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top: int | None = Field(
        None, ge=1, description="Candidates returned, best first (default: every one found)."
    )

    needs_candidates: ClassVar[bool] = False
    makes_candidates: ClassVar[bool] = True

    @field_validator("scorer")
    @classmethod
    def _valid_scorer(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            scorer_config(value)
        except UserError as exc:  # an invalid field, or no such scorer kind
            raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _budget_fits_one_expansion(self) -> StepSearchConfig:
        calls, tokens = self.expansion_floor()
        if self.budget_calls is not None and self.budget_calls < calls:
            raise ValueError(
                f"budget_calls {self.budget_calls} is less than one expansion ({calls} calls); "
                "raise it"
            )
        if self.budget_tokens is not None and self.budget_tokens < tokens:
            raise ValueError(
                f"budget_tokens {self.budget_tokens} is less than one expansion (up to {tokens} "
                f"completion tokens: {self.expansion_width()} steps of max_step_tokens "
                f"{self.steps.max_step_tokens}); raise it, or lower max_step_tokens or the steps "
                "drawn per expansion"
            )
        return self

    def expansion_width(self) -> int:
        """Steps the first expansion asks for (strategies say how many)."""
        return 1

    def expansion_floor(self) -> tuple[int, int]:
        """Calls and completion tokens of the smallest first expansion (without its prompt)."""
        return 1, self.expansion_width() * self.steps.max_step_tokens

    def model_refs(self) -> list[Any]:
        refs: list[Any] = [self.model]
        model = self.scorer.get("model")
        if model is not None:
            refs.append(model)
        return refs


class BudgetReached(Exception):
    """Raised inside a strategy when the next call could pass the budget: it stops growing."""


class Grower:
    """One query's search tree: expands nodes (one request each), scores the new steps, keeps
    the budget, and turns leaves into candidates.

    The budget is kept by reservation: before a round of requests, what they could cost at most
    (each prompt's token count, which never undercounts, plus ``k x max_step_tokens``) must fit in
    what is left, and before scoring the new steps, the scorer's bound for each
    (:meth:`Scorer.cost_bound`); otherwise :class:`BudgetReached`, and nothing more is sent.
    """

    def __init__(self, config: StepSearchConfig, state: State, ctx: RunContext, strategy: str):
        self.cfg = config
        self.ctx = ctx
        self.backend = ctx.backend(config.model)
        self.scorer: Scorer = make_scorer(config.scorer)
        self.cache = ScoreCache()
        system = config.system_prompt if config.system_prompt is not None else STEP_SYSTEM
        rest = [m for m in state.messages if m.role != "system" or config.system_prompt == ""]
        self.messages: list[Message] = (
            [Message(role="system", content=system), *[m for m in rest if m.role != "system"]]
            if system
            else rest
        )
        self.tree = SearchTree(
            strategy=strategy,
            scorer=self.scorer.name,
            aggregate=config.aggregate,
            delimiter=config.steps.delimiter,
            nodes=[TreeNode(id=0)],
        )
        self._held = (0, 0)  # calls and tokens reserved by rounds in flight, and kept back
        self._kept = (0, 0)  # kept back for a later call (see keep)
        ctx.event.tree = self.tree

    # ----- the tree ---------------------------------------------------------------------------------

    def steps_of(self, node_id: int) -> list[str]:
        return [n.text for n in self.tree.path(node_id)]

    def node(self, node_id: int) -> TreeNode:
        return self.tree.nodes[node_id]

    def children(self, node_id: int) -> list[TreeNode]:
        return self.tree.children(node_id)

    def expandable(self, node_id: int) -> bool:
        node = self.node(node_id)
        return not node.terminal and node.depth < self.cfg.steps.max_depth

    # ----- budget -----------------------------------------------------------------------------------

    def spent(self) -> tuple[int, int]:
        """Calls and tokens (prompt + completion) of this component so far."""
        calls = self.ctx.event.calls
        return len(calls), sum(c.prompt_tokens + c.completion_tokens for c in calls)

    @property
    def _budgeted(self) -> bool:
        return self.cfg.budget_calls is not None or self.cfg.budget_tokens is not None

    async def _steps_cost(self, requests: list[tuple[int, int]]) -> tuple[int, int]:
        """The most ``requests`` ((node id, k) each) may cost: calls and tokens."""
        calls = tokens = 0
        if self._budgeted:
            for node_id, k in requests:
                prompt, _ = step_prompt(self.messages, self.steps_of(node_id), self.cfg.steps)
                tokens += await self.ctx.prompt_bound(self.backend, prompt)
                tokens += k * self.cfg.steps.max_step_tokens
                calls += 1
        return calls, tokens

    async def _scores_cost(self, items: list[ScoreInput]) -> tuple[int, int]:
        calls = tokens = 0
        if not self._budgeted:
            return calls, tokens
        for item in items:
            more_calls, more_tokens = await self.scorer.cost_bound(item, self.ctx)
            calls, tokens = calls + more_calls, tokens + more_tokens
        return calls, tokens

    def _reserve(self, cost: tuple[int, int]) -> None:
        """Hold ``cost`` against the budget (released by :meth:`_release` once the calls are made
        and counted as spent), or raise :class:`BudgetReached`. Concurrent rounds (DVTS's subtrees)
        reserve one after the other: nothing awaits between the check and the hold."""
        if not self._budgeted:
            return
        spent_calls, spent_tokens = self.spent()
        calls = spent_calls + self._held[0] + cost[0]
        tokens = spent_tokens + self._held[1] + cost[1]
        try:
            self._check(calls, tokens)
        except BudgetReached as exc:
            if spent_calls == 0 and self._held == (0, 0):
                raise ConfigError(
                    f"layers[{self.ctx.layer}][{self.ctx.index}] ({self.ctx.label}): the budget "
                    f"does not cover the first expansion ({exc})",
                    hint="raise budget_tokens/budget_calls, or lower max_step_tokens or the "
                    "number of steps drawn per expansion",
                ) from None
            raise
        self._held = (self._held[0] + cost[0], self._held[1] + cost[1])

    def _release(self, cost: tuple[int, int]) -> None:
        if self._budgeted:
            self._held = (self._held[0] - cost[0], self._held[1] - cost[1])

    def keep(self, cost: tuple[int, int]) -> bool:
        """Keep ``cost`` back from the budget (replacing what was kept before), so that the
        search cannot spend it; False, keeping nothing, when it does not fit."""
        self._release(self._kept)
        self._kept = (0, 0)
        if not self._budgeted:
            return True
        spent_calls, spent_tokens = self.spent()
        try:
            self._check(
                spent_calls + self._held[0] + cost[0], spent_tokens + self._held[1] + cost[1]
            )
        except BudgetReached:
            return False
        self._held = (self._held[0] + cost[0], self._held[1] + cost[1])
        self._kept = cost
        return True

    async def finish_cost(self, node_id: int) -> tuple[int, int]:
        """The most :meth:`finish` of ``node_id`` may cost: calls and tokens."""
        if not self._budgeted:
            return 0, 0
        prompt, _ = step_prompt(self.messages, self.steps_of(node_id), self.cfg.steps, rest=True)
        return 1, await self.ctx.prompt_bound(self.backend, prompt) + self._rest_tokens(node_id)

    def _rest_tokens(self, node_id: int) -> int:
        steps = self.cfg.steps
        return max(1, steps.max_depth - self.node(node_id).depth) * steps.max_step_tokens

    async def finish(self, node_id: int, round_: int) -> TreeNode:
        """The rest of ``node_id``'s solution in one request (up to the steps it has left, each
        ``max_step_tokens``), added unscored as one child marked "finish"; what :meth:`keep` kept
        is released for it.

        Raises:
            BudgetReached: it could pass the budget (nothing was sent).
        """
        self.keep((0, 0))
        cost = await self.finish_cost(node_id)
        self._reserve(cost)
        try:
            step = await rest_of_solution(
                self.ctx,
                self.backend,
                self.messages,
                self.steps_of(node_id),
                self.cfg.sampling(self.ctx.seed_for("finish", node_id, round_)),
                self.cfg.steps,
                self._rest_tokens(node_id),
                f"rest of the solution after node {node_id}",
            )
        finally:
            self._release(cost)
        node = self._add(node_id, step)
        node.note = "finish"
        node.value = self.node(node_id).value
        return node

    def _check(self, calls: int, tokens: int) -> None:
        cfg = self.cfg
        over = []
        if cfg.budget_calls is not None and calls > cfg.budget_calls:
            over.append(f"calls {calls} > {cfg.budget_calls}")
        if cfg.budget_tokens is not None and tokens > cfg.budget_tokens:
            over.append(f"tokens up to {tokens} > {cfg.budget_tokens}")
        if over:
            raise BudgetReached("; ".join(over))

    # ----- growing ----------------------------------------------------------------------------------

    def _item(self, node_id: int, step: str | None = None, *, terminal: bool) -> ScoreInput:
        steps = self.steps_of(node_id) + ([step] if step is not None else [])
        return ScoreInput(
            messages=tuple(self.messages),
            steps=tuple(steps),
            delimiter=self.cfg.steps.delimiter,
            terminal=terminal,
        )

    async def expand(self, requests: list[tuple[int, int]], round_: int) -> list[list[TreeNode]]:
        """Grow each node of ``requests`` by ``k`` steps (one request per node, concurrently),
        score the new steps and give each its path value; returns the children per request.

        Raises:
            BudgetReached: the round could pass the budget (nothing was sent), or scoring its
                steps could (they were added to the tree unscored).
        """
        cost = await self._steps_cost(requests)
        self._reserve(cost)
        try:
            results = await self._draw(requests, round_)
        finally:
            self._release(cost)
        made: list[list[TreeNode]] = []
        for (node_id, _), steps in zip(requests, results, strict=True):
            made.append([self._add(node_id, s) for s in steps])
        await self.score([n for group in made for n in group])
        return made

    async def _draw(self, requests: list[tuple[int, int]], round_: int) -> list[list[Step]]:
        cfg = self.cfg
        return await gather_all(
            next_steps(
                self.ctx,
                self.backend,
                self.messages,
                self.steps_of(node_id),
                k,
                cfg.sampling(self.ctx.seed_for("step", node_id, round_)),
                cfg.steps,
                f"step after node {node_id}",
            )
            for node_id, k in requests
        )

    def _add(self, parent: int, step: Step) -> TreeNode:
        node = TreeNode(
            id=len(self.tree.nodes),
            parent=parent,
            depth=self.node(parent).depth + 1,
            text=step.text,
            finish_reason=step.finish_reason,
            terminal=step.terminal,
            truncated=step.truncated,
            completion_tokens=step.completion_tokens,
        )
        if node.depth >= self.cfg.steps.max_depth and not node.terminal:
            node.note = "depth limit"
        self.tree.nodes.append(node)
        return node

    async def score(self, nodes: list[TreeNode]) -> None:
        """Score each node's step (cached by text) and set its path value."""
        if not nodes:
            return
        items = [self._item(n.id, terminal=n.terminal) for n in nodes]
        fresh = [i for i in items if not self.cache.has(self.scorer, i)]
        cost = await self._scores_cost(fresh)
        self._reserve(cost)  # the steps stay unscored if their scoring could not fit
        try:
            scores = await self.cache.scores_of(self.scorer, items, self.ctx)
        finally:
            self._release(cost)
        for node, score in zip(nodes, scores, strict=True):
            node.score = score
            node.value = self.path_value(node.id)

    def path_value(self, node_id: int) -> float | None:
        return aggregate([n.score for n in self.tree.path(node_id)], self.cfg.aggregate)

    # ----- results ----------------------------------------------------------------------------------

    def delta(self, leaves: list[int], note: str | None = None) -> Delta:
        """Candidates of ``leaves`` (best first as given; cut to ``top``), recorded as chosen."""
        # The root is the empty solution, never a candidate.
        unique = [n for n in dict.fromkeys(leaves) if n != 0][: self.cfg.top]
        if not unique and len(self.tree.nodes) > 1:
            # Stopped before any path was kept (the budget): the best partial solution grown.
            unique = self.best_first([n.id for n in self.tree.nodes[1:]])[:1]
            note = "nothing finished or kept: returned the best partial solution grown"
        self.tree.chosen = unique
        if note:
            self.ctx.note(note)
        new: list[Candidate] = []
        scores: dict[str, float] = {}
        for leaf in unique:
            text = self.tree.solution(leaf)
            candidate = self.ctx.candidate(text, action="generated", model=self.backend.identity)
            new.append(candidate)
            value = self.node(leaf).value
            if value is not None:
                scores[candidate.id] = value
        if self.cache.hits:
            self.ctx.note(f"{self.cache.hits} score(s) served from the score cache")
        return Delta(new=new, scores=scores)

    def best_first(self, node_ids: list[int]) -> list[int]:
        """``node_ids`` by path value, best first (unscored last; ties keep their order)."""
        return sorted(
            node_ids,
            key=lambda i: (self.node(i).value is None, -(self.node(i).value or 0.0)),
        )
