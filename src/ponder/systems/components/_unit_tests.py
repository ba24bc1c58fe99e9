"""``unit_tests`` writes checks an answer should pass; ``unit_test_eval`` scores candidates by them."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ponder._aio import gather_all
from ponder.systems._component import Component, Delta, ModelComponentConfig, register_component
from ponder.systems._context import Asked, RunContext
from ponder.systems._parsing import parse_test_results, parse_unit_tests, require_all_results
from ponder.systems._prompts import render
from ponder.systems._state import Candidate, State, query_text
from ponder.systems.components._common import chat, system_text, user_template
from ponder.text import strip_think

TESTS_EXPECTED = "only the checks, each on its own line starting with '- '"
RESULTS_EXPECTED = (
    "one line per check, in order, of the form '<number>: PASS' or '<number>: FAIL' "
    "(for example '1: PASS')"
)


class UnitTestsConfig(ModelComponentConfig):
    """Ask the model for up to ``max_tests`` short natural-language checks of a good answer.

    Later ``generate`` components show them with the query (``use_unit_tests``), and
    ``unit_test_eval`` scores candidates against them. Fallback: no checks (recorded).
    """

    type: Literal["unit_tests"] = "unit_tests"
    max_tests: int = Field(5, ge=1, le=50)
    temperature: float = Field(0.3, ge=0.0, le=5.0)
    max_tokens: int = Field(384, ge=1, le=131072)

    needs_candidates: ClassVar[bool] = False
    makes_unit_tests: ClassVar[bool] = True
    template_placeholders: ClassVar[frozenset[str]] = frozenset({"query", "max_tests"})

    def describe(self) -> str:
        return f"unit_tests(max={self.max_tests})"


@register_component("unit_tests")
class UnitTests(Component[UnitTestsConfig]):
    config_type = UnitTestsConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        user = render(
            user_template(cfg, "unit_tests"),
            query=query_text(state.messages),
            max_tests=cfg.max_tests,
        )
        asked = await ctx.ask(
            ctx.backend(cfg.model),
            chat(system_text(cfg, "unit_tests.system"), user),
            cfg.sampling(ctx.seed_for("unit_tests")),
            lambda text: parse_unit_tests(text, cfg.max_tests),
            purpose="unit_tests",
            expected=TESTS_EXPECTED,
        )
        if asked.value is None:
            ctx.fallback(
                f"no checks could be read after {ctx.repair_retries} repair(s): {asked.problem}",
                "no unit tests added",
                output=asked.output,
            )
            return Delta()
        return Delta(unit_tests=asked.value)


class UnitTestEvalConfig(ModelComponentConfig):
    """Score each candidate by the share of unit tests the model says it passes; keep the best.

    One call per candidate judges all tests. Candidates are sorted by score (stable: ties keep the
    input order, so the first candidates that pass everything come first) and cut to ``top_k``.
    Fallback: a test without a readable PASS/FAIL after the repair prompts counts as failed (score
    0 for that test); with no unit tests in the state, all candidates are kept unscored.
    """

    type: Literal["unit_test_eval"] = "unit_test_eval"
    top_k: int | None = Field(1, ge=1, description="Keep this many (None: all, sorted).")
    temperature: float = Field(0.2, ge=0.0, le=5.0)
    max_tokens: int = Field(384, ge=1, le=131072)

    needs_unit_tests: ClassVar[bool] = True
    template_placeholders: ClassVar[frozenset[str]] = frozenset(
        {"query", "candidate", "tests", "count"}
    )

    def describe(self) -> str:
        return f"unit_test_eval(top_k={self.top_k})"


@register_component("unit_test_eval")
class UnitTestEval(Component[UnitTestEvalConfig]):
    config_type = UnitTestEvalConfig

    async def run(self, state: State, ctx: RunContext) -> Delta:
        cfg = self.config
        candidates = state.candidates
        tests = state.unit_tests
        if not tests:
            ctx.fallback(
                "there are no unit tests to evaluate against",
                "kept all candidates unscored, in order",
                [c.id for c in candidates],
            )
            return Delta()
        if not candidates:
            ctx.note("no candidates to evaluate")
            return Delta()
        backend = ctx.backend(cfg.model)
        listed = "\n".join(f"{i}. {t}" for i, t in enumerate(tests, 1))
        query = query_text(state.messages)

        async def evaluate(candidate: Candidate) -> Asked[list[bool]]:
            user = render(
                user_template(cfg, "unit_test_eval"),
                query=query,
                candidate=strip_think(candidate.text).strip(),
                tests=listed,
                count=len(tests),
            )
            return await ctx.ask(
                backend,
                chat(system_text(cfg, "unit_test_eval.system"), user),
                cfg.sampling(ctx.seed_for("unit_test_eval", candidate.id)),
                lambda text: require_all_results(text, len(tests)),
                purpose=f"unit tests {candidate.id}",
                expected=RESULTS_EXPECTED,
            )

        outcomes = await gather_all(evaluate(c) for c in candidates)
        scores: dict[str, float] = {}
        for candidate, asked in zip(candidates, outcomes, strict=True):
            if asked.value is not None:
                passed = asked.value
            else:
                # Keep the results of the most complete reply.
                partial = max(
                    (parse_test_results(reply, len(tests)) for reply in asked.outputs), key=len
                )
                passed = [partial.get(i, False) for i in range(len(tests))]
                missing = [str(i + 1) for i in range(len(tests)) if i not in partial]
                ctx.fallback(
                    f"no readable result for test(s) {', '.join(missing)} after "
                    f"{ctx.repair_retries} repair(s): {asked.problem}",
                    "those tests count as failed",
                    [candidate.id],
                    asked.output,
                )
            scores[candidate.id] = sum(passed) / len(tests)
        ranked = sorted(candidates, key=lambda c: -scores[c.id])
        return Delta(keep=[c.id for c in ranked][: cfg.top_k], reorder=True, scores=scores)
