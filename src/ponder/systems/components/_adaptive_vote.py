"""``adaptive_vote``: sample in rounds until a stop rule says the vote is decided, then vote."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ponder.adaptive import DEFAULT_ROUND, Decision, Schedule, StopRule, answer_key, make_stop_rule
from ponder.errors import ConfigError
from ponder.records import SamplingParams
from ponder.systems._component import Component, Delta, ModelComponentConfig, register_component
from ponder.systems._context import RunContext
from ponder.systems._extract import get_extractor
from ponder.systems._state import Candidate, State
from ponder.systems.components._common import sample
from ponder.systems.components._generate import Generate, GenerateConfig


class AdaptiveVoteConfig(ModelComponentConfig):
    """Draw samples in rounds of ``round_size`` (one request each, so the prompt is evaluated once
    per round), ask the stop ``rule`` after each round, and stop once it fires or ``max_samples``
    are drawn; then vote over the extracted answers, as ``vote`` does.

    The rule is any registered stop rule (``beta``, ``dirichlet``, ``margin``, ``supermajority``,
    ``window``, ``fixed``; see :mod:`ponder.adaptive`) with ``params`` overriding its defaults. The
    winner is the leading answer where sampling stopped (among equal counts, the one that got there
    first). ``keep: majority`` keeps the winner's candidates; ``keep: all`` keeps every candidate,
    grouped by answer from the largest group down, those without an answer last. Each candidate's
    score is its answer's share of the votes. The component makes its own candidates: candidates
    of earlier layers are replaced. When no sample states an answer, all are kept in order.
    """

    type: Literal["adaptive_vote"] = "adaptive_vote"
    rule: str = Field("beta", description="Stop rule name (`ponder.adaptive`).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Stop rule parameters (defaults otherwise)."
    )
    round_size: int = Field(DEFAULT_ROUND, ge=1, le=1024, description="Samples per round.")
    max_samples: int = Field(16, ge=1, le=100_000, description="Never draw more than this.")
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    cot: bool = Field(False, description="Ask for step-by-step reasoning before the answer.")
    use_unit_tests: bool = Field(
        True, description="Show unit tests written by an earlier layer (if any) with the query."
    )
    extractor: str | None = Field(
        None, description="Answer extractor (default: the system's, usually 'math')."
    )
    keep: Literal["majority", "all"] = "majority"

    needs_candidates: ClassVar[bool] = False
    makes_candidates: ClassVar[bool] = True

    @field_validator("extractor")
    @classmethod
    def _known_extractor(cls, value: str | None) -> str | None:
        if value is not None:
            get_extractor(value)  # raises UnknownNameError naming the choices
        return value

    @model_validator(mode="after")
    def _valid_schedule(self) -> AdaptiveVoteConfig:
        try:
            self.schedule()
        except ConfigError as exc:
            # A ValueError, so the config loader names this component's field.
            raise ValueError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
        return self

    def stop_rule(self) -> StopRule:
        return make_stop_rule(self.rule, self.params)

    def schedule(self) -> Schedule:
        return Schedule(self.stop_rule(), self.max_samples, self.round_size)

    def describe(self) -> str:
        return f"adaptive_vote({self.rule}, max={self.max_samples}, round={self.round_size})"


@register_component("adaptive_vote")
class AdaptiveVote(Component[AdaptiveVoteConfig]):
    config_type = AdaptiveVoteConfig

    def _prompter(self) -> Generate:
        cfg = self.config
        return Generate(
            GenerateConfig(
                template=cfg.template,
                system_prompt=cfg.system_prompt,
                cot=cfg.cot,
                use_unit_tests=cfg.use_unit_tests,
            )
        )

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        schedule = cfg.schedule()
        extract = get_extractor(cfg.extractor) if cfg.extractor else None
        backend = ctx.backend(cfg.model)
        prompt = self._prompter().prompt(state)
        drawn: list[Candidate] = []
        answers: list[str | None] = []
        decision: Decision = schedule.replay(answers)
        while not decision.stopped:
            round_no = decision.rounds

            def params(chunk: int, r: int = round_no) -> SamplingParams:
                return cfg.sampling(ctx.seed_for("adaptive_vote", r, chunk))

            completions = await sample(
                ctx,
                backend,
                prompt,
                decision.next_checkpoint - len(drawn),
                params,
                f"adaptive round {round_no + 1}",
            )
            for c in completions:
                cand = ctx.candidate(
                    c.text, action="generated", model=backend.identity, completion=c
                )
                drawn.append(cand)
                answers.append(extract(cand.text) if extract is not None else cand.answer)
            decision = schedule.replay(answers)
        ctx.note(
            f"{schedule.rule.describe()}: stopped after {decision.samples} samples in "
            f"{decision.rounds} rounds ({decision.reason}); leader {decision.answer!r} "
            f"x{decision.votes}, statistic {decision.statistic:.4g}"
        )
        return Delta(new=self._vote(drawn, answers, decision, ctx), placement="replace")

    def _vote(
        self,
        drawn: list[Candidate],
        answers: list[str | None],
        decision: Decision,
        ctx: RunContext,
    ) -> list[Candidate]:
        groups: dict[str, list[Candidate]] = {}
        unanswered: list[Candidate] = []
        for cand, answer in zip(drawn, answers, strict=True):
            key = answer_key(answer)
            if key is None:
                unanswered.append(cand)
            else:
                groups.setdefault(key, []).append(cand)
        if decision.answer is None or not groups:
            ctx.fallback(
                "no sample states an answer", "kept all candidates in order", [c.id for c in drawn]
            )
            return drawn
        total = sum(len(m) for m in groups.values())
        label = self.config.name

        def scored(members: list[Candidate]) -> list[Candidate]:
            share = len(members) / total
            return [c.model_copy(update={"scores": {**c.scores, label: share}}) for c in members]

        winner = scored(groups.pop(decision.answer))
        if self.config.keep == "majority":
            return winner
        # Stable by size: equal groups stay in first-appearance order, after the winner.
        rest = sorted(groups.values(), key=len, reverse=True)
        return winner + [c for m in rest for c in scored(m)] + unanswered
