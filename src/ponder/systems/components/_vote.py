"""``vote``: majority vote over the candidates' extracted answers (no model calls)."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field, field_validator

from ponder.errors import VerifyError
from ponder.systems._component import Component, ComponentConfig, Delta, register_component
from ponder.systems._context import RunContext
from ponder.systems._extract import get_extractor
from ponder.systems._state import Candidate, State
from ponder.verify.math import is_equivalent


class VoteConfig(ComponentConfig):
    """Group candidates by their extracted answer; the largest group wins.

    Tie rule: ``first`` (default) — among equally large groups, the answer that appears first in
    the current candidate order wins; ``random`` — a random one, drawn from a generator seeded by
    the system seed and the query, so reruns agree.

    ``keep: majority`` keeps the winning group's candidates (in their order); ``keep: all`` keeps
    every candidate, grouped by answer from the largest group down, candidates without an answer
    last. Each candidate's score is its answer's share of the votes.
    Fallback: when no candidate states an answer, all are kept in order.
    """

    type: Literal["vote"] = "vote"
    extractor: str | None = Field(
        None, description="Answer extractor (default: the system's, usually 'math')."
    )
    equivalence: Literal["exact", "math"] = Field(
        "exact",
        description=(
            "exact: equal extracted strings; math: mathematically equal (numbers exactly, other "
            "expressions with math-verify, which is slower and runs on the event loop)."
        ),
    )
    tie_break: Literal["first", "random"] = "first"
    keep: Literal["majority", "all"] = "majority"

    @field_validator("extractor")
    @classmethod
    def _known_extractor(cls, value: str | None) -> str | None:
        if value is not None:
            get_extractor(value)  # raises UnknownNameError naming the choices
        return value

    def describe(self) -> str:
        return "vote" if self.keep == "majority" else "vote(keep=all)"


@register_component("vote")
class Vote(Component[VoteConfig]):
    config_type = VoteConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        candidates = state.candidates
        extract = get_extractor(cfg.extractor) if cfg.extractor else None
        groups: list[tuple[str, list[Candidate]]] = []
        unanswered: list[Candidate] = []
        failures: list[str] = []

        def same(rep: str, answer: str) -> bool:
            if rep == answer or cfg.equivalence != "math":
                return rep == answer
            try:
                return is_equivalent(rep, answer)
            except VerifyError as exc:
                # Not known to be equal: the answers stay apart, and the trace says why.
                failures.append(exc.message)
                return False

        for c in candidates:
            answer = extract(c.text) if extract is not None else c.answer
            if answer is None:
                unanswered.append(c)
                continue
            for rep, members in groups:
                if same(rep, answer):
                    members.append(c)
                    break
            else:
                groups.append((answer, [c]))
        for failure in failures:
            ctx.note(f"kept apart: {failure}")
        if not groups:
            ctx.fallback(
                "no candidate states an answer",
                "kept all candidates in order",
                [c.id for c in candidates],
            )
            return Delta()
        if cfg.tie_break == "random":
            random.Random(ctx.seed_for("vote")).shuffle(groups)
        # Stable sort by size: equal groups stay in first-appearance order (or the shuffled one).
        groups.sort(key=lambda g: -len(g[1]))
        total = sum(len(m) for _, m in groups)
        scores = {c.id: len(m) / total for _, m in groups for c in m}
        tally = ", ".join(f"{rep!r} x{len(m)}" for rep, m in groups)
        ctx.note(f"votes: {tally}; {len(unanswered)} without an answer")
        if cfg.keep == "majority":
            kept = [c.id for c in groups[0][1]]
        else:
            kept = [c.id for _, m in groups for c in m] + [c.id for c in unanswered]
        return Delta(keep=kept, reorder=True, scores=scores)
