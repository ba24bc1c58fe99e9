"""Components of composed systems, one by one, on the scripted backend (deterministic)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from ponder.backends import ScriptedBackend
from ponder.records import Message, Prompt, SamplingParams, Verdict
from ponder.systems import (
    Candidate,
    Delta,
    State,
    System,
    SystemResult,
    Unparseable,
)
from ponder.systems._layer import merge
from ponder.systems._parsing import (
    parse_critiques,
    parse_ranking,
    parse_score,
    parse_test_results,
    parse_unit_tests,
    parse_verdict,
    parse_winner,
    require_all_results,
)

# Words that identify which built-in prompt a call carries (from the prompt files).
CRITIQUE = "Strengths:"
RANK = "Ranking:"
PAIR = "Winner: A"
FUSE = "Treat them as material"
SCORE = "Score: <"
ACCEPT = '"Verdict: REJECT"'
UNIT_TESTS = "short checks"
UNIT_EVAL = '"<number>: PASS"'
CRITIC = '"Verdict: REVISE"'
REVISE = "feedback on it"
REPAIR = "could not read your reply"
COT = "step by step before answering"

Output = str | Callable[[str, int], str]


def last_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1].content


def scripted(
    *rules: tuple[str, Output], default: Output = "#### 0", **kwargs: Any
) -> ScriptedBackend:
    """A backend answering by the first rule whose marker is in the last message."""

    # A repair prompt quotes the expected format (e.g. "Ranking: ..."), so its rule goes first.
    ordered = sorted(rules, key=lambda rule: rule[0] != REPAIR)

    def fn(prompt: Prompt, i: int, params: SamplingParams) -> str:
        text = last_text(prompt)
        for marker, out in ordered:
            if marker in text:
                return out(text, i) if callable(out) else out
        return default(text, i) if callable(default) else default

    return ScriptedBackend(fn=fn, **kwargs)


def answers(*values: str) -> Output:
    """Generation outputs: sample i says '#### values[i]'."""
    return lambda _text, i: f"I worked it out. #### {values[i % len(values)]}"


def run(
    config: dict[str, Any], backend: ScriptedBackend, query: str = "What is 6*7?", **kw: Any
) -> SystemResult:
    with System.from_dict(config, default_backend=backend, **kw) as system:
        return system.run(query)


def purposes(backend: ScriptedBackend, marker: str) -> int:
    """How many calls carried ``marker`` in their last message."""
    return sum(marker in last_text(p) for p, _, _ in backend.calls)


# ----- parsers -------------------------------------------------------------------------------


class TestParsers:
    def test_ranking_line(self) -> None:
        assert parse_ranking("thinking...\nRanking: [2] > [1] > [3]", 3) == [1, 0, 2]

    def test_ranking_last_line_counts_and_markdown(self) -> None:
        text = "Ranking: [1] > [2] > [3]\nOn reflection:\n**Ranking:** [3] > [1] > [2]"
        assert parse_ranking(text, 3) == [2, 0, 1]

    def test_ranking_chain_without_prefix(self) -> None:
        assert parse_ranking("I'd say [3] > [2] > [1].", 3) == [2, 1, 0]

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("no ranking here", "no ranking line"),
            ("Ranking: [1] > [4] > [2]", "[4]"),
            ("Ranking: [1] > [1] > [2]", "more than once"),
            ("Ranking: [2] > [1]", "lists 2 of the 3"),
        ],
    )
    def test_ranking_problems(self, text: str, problem: str) -> None:
        with pytest.raises(Unparseable, match=problem.replace("[", r"\[").replace("]", r"\]")):
            parse_ranking(text, 3)

    def test_partial_ranking_enough_for_top_k(self) -> None:
        # The top 2 are named; the unlisted candidates follow in input order.
        assert parse_ranking("Ranking: [4] > [2]", 4, required=2) == [3, 1, 0, 2]

    def test_winner(self) -> None:
        assert parse_winner("A is wrong.\nWinner: B") == "B"
        assert parse_winner("**Winner:** Answer A") == "A"
        assert parse_winner("A") == "A"
        with pytest.raises(Unparseable):
            parse_winner("both are fine")

    def test_score(self) -> None:
        assert parse_score("Good.\nScore: 8") == 8
        assert parse_score("Score: 3\n...\n**Score:** 7/10") == 7
        assert parse_score("9") == 9
        with pytest.raises(Unparseable, match="outside"):
            parse_score("Score: 11")
        with pytest.raises(Unparseable, match="no line"):
            parse_score("great answer")

    def test_verdict(self) -> None:
        assert parse_verdict("fine\nVerdict: ACCEPT", ["ACCEPT"], ["REJECT"]) is True
        assert (
            parse_verdict("Verdict: accept\nVerdict: **REJECT**", ["ACCEPT"], ["REJECT"]) is False
        )
        with pytest.raises(Unparseable, match="Verdict"):
            parse_verdict("Verdict: maybe", ["ACCEPT"], ["REJECT"])

    def test_critiques(self) -> None:
        text = (
            "[1]\nStrengths: clear\nWeaknesses: wrong sum\n\n"
            "**Candidate 2:**\nStrengths: right\nWeaknesses: none found\n"
        )
        found = parse_critiques(text, 2)
        assert found[0].strengths == "clear" and found[0].weaknesses == "wrong sum"
        assert found[1].strengths == "right"
        with pytest.raises(Unparseable, match=r"\[3\]"):
            parse_critiques(text, 3)
        assert set(parse_critiques(text, 3, partial=True)) == {0, 1}

    def test_critique_blocks_numbered_by_bare_lines(self) -> None:
        # As the 0.5B model writes them: "[1]" then "#### 2", "#### 3"; a quoted answer line
        # ("#### 10") is no header because it does not continue the numbering.
        text = (
            "[1]\nStrengths: a\nIt ends with\n#### 10\n\n"
            "#### 2\nStrengths: b\nWeaknesses: c\n\n**3.**\nWeaknesses: d\n\n2\nStrengths: e"
        )
        found = parse_critiques(text, 3)
        assert found[0].text == "Strengths: a\nIt ends with\n#### 10"
        assert (found[1].strengths, found[1].weaknesses) == ("b", "c")
        assert found[2].weaknesses.startswith("d")
        with pytest.raises(Unparseable, match=r"\[2\], \[3\]"):
            parse_critiques("[1]\nStrengths: a\n\n#### 3\nStrengths: b", 3)

    def test_critique_block_without_headings_is_kept_whole(self) -> None:
        found = parse_critiques("[1]\nIt forgot the units.", 1)
        assert found[0].weaknesses == "It forgot the units."

    def test_unit_tests(self) -> None:
        assert parse_unit_tests("- States 42.\n- Shows work.\n", 5) == ["States 42.", "Shows work."]
        assert parse_unit_tests("1. One check\n2) Two check\n3. Three", 2) == [
            "One check",
            "Two check",
        ]
        assert parse_unit_tests('Sure: ["is short", "is polite"]', 5) == ["is short", "is polite"]
        with pytest.raises(Unparseable):
            parse_unit_tests("I would check the answer.", 5)

    def test_test_results(self) -> None:
        assert require_all_results("1: PASS\n2: FAIL - no units\nTest 3: passed", 3) == [
            True,
            False,
            True,
        ]
        assert parse_test_results("1: PASS", 3) == {0: True}
        with pytest.raises(Unparseable, match="2, 3"):
            require_all_results("1: PASS", 3)


# ----- generate --------------------------------------------------------------------------------


class TestGenerate:
    def test_n_samples_in_one_backend_call(self) -> None:
        backend = scripted(default=answers("1", "2", "3", "4", "5"))
        result = run({"layers": [{"type": "generate", "n": 5}]}, backend)
        assert len(backend.calls) == 1
        assert backend.calls[0][1] == 5
        assert [c.id for c in result.candidates] == [f"L0.0.{i}" for i in range(1, 6)]
        assert [c.answer for c in result.candidates] == ["1", "2", "3", "4", "5"]
        origin = result.candidates[0].origin
        assert origin is not None and origin.action == "generated"
        assert origin.model == "scripted:scripted"

    def test_n_above_max_batch_is_split(self) -> None:
        backend = scripted(batch=4)
        result = run({"layers": [{"type": "generate", "n": 10}]}, backend)
        assert [n for _, n, _ in backend.calls] == [4, 4, 2]
        assert len({p.seed for _, _, p in backend.calls}) == 3
        assert len(result.candidates) == 10

    def test_ensemble_members_in_member_order(self) -> None:
        small = scripted(default="small #### 1", name="small", delay_s=0.05)
        big = scripted(default="big #### 2", name="big")
        config = {
            "layers": [
                {
                    "type": "generate",
                    "models": [{"model": "small", "n": 2}, {"model": "big", "n": 3}],
                }
            ]
        }
        with System.from_dict(config, backends={"small": small, "big": big}) as system:
            result = system.run("q")
        # The slow member finishes last but its candidates still come first.
        assert [c.text.split()[0] for c in result.candidates] == ["small"] * 2 + ["big"] * 3
        assert len(small.calls) == len(big.calls) == 1
        assert result.trace.events[0].models == ["scripted:small", "scripted:big"]

    def test_sampling_params_and_defaults(self) -> None:
        backend = scripted()
        run({"layers": [{"type": "generate", "max_tokens": 33}]}, backend)
        params = backend.calls[0][2]
        assert params.temperature == 0.7 and params.max_tokens == 33

    def test_cot_system_prompt_and_unit_tests_in_prompt(self) -> None:
        backend = scripted((UNIT_TESTS, "- Gives 42."))
        config = {
            "layers": [
                {"type": "unit_tests"},
                {"type": "generate", "cot": True, "system_prompt": "Be brief."},
            ]
        }
        run(config, backend)
        prompt = backend.calls[1][0]
        assert isinstance(prompt, list)
        assert prompt[0] == Message(role="system", content="Be brief.")
        assert COT in prompt[-1].content and "- Gives 42." in prompt[-1].content

    def test_custom_template(self) -> None:
        backend = scripted()
        run({"layers": [{"type": "generate", "template": "Q: $query\nA:"}]}, backend, "2+2?")
        assert last_text(backend.calls[0][0]) == "Q: 2+2?\nA:"


# ----- critique ----------------------------------------------------------------------------------

GEN3 = {"type": "generate", "n": 3}


class TestCritique:
    def test_one_call_parsed_per_candidate(self) -> None:
        reviews = "\n".join(f"[{i}]\nStrengths: s{i}\nWeaknesses: w{i}" for i in (1, 2, 3))
        backend = scripted((CRITIQUE, reviews), default=answers("1", "2", "3"))
        with System.from_dict(
            {"layers": [GEN3, {"type": "critique"}]}, default_backend=backend
        ) as s:
            result = s.run("q")
        assert purposes(backend, CRITIQUE) == 1
        assert backend.calls[1][2].temperature == 0.3
        assert result.trace.events[1].calls[0].outputs == [reviews]
        critiques = result.trace.critiques
        assert [(c.candidate_id, c.strengths, c.weaknesses) for c in critiques] == [
            ("L0.0.1", "s1", "w1"),
            ("L0.0.2", "s2", "w2"),
            ("L0.0.3", "s3", "w3"),
        ]
        assert not result.trace.fallbacks

    def test_critiques_are_shown_to_rank(self) -> None:
        reviews = "\n".join(f"[{i}]\nStrengths: s{i}\nWeaknesses: w{i}" for i in (1, 2, 3))
        backend = scripted((CRITIQUE, reviews), (RANK, "Ranking: [1] > [2] > [3]"))
        run({"layers": [GEN3, {"type": "critique"}, {"type": "rank"}]}, backend)
        rank_prompt = last_text(backend.calls[2][0])
        assert "strengths: s2; weaknesses: w2" in rank_prompt

    def test_fallback_after_bounded_repairs_keeps_partial(self) -> None:
        # The first reply reviews one candidate of three; the repairs are worse.
        backend = scripted((CRITIQUE, "[1]\nStrengths: a\nWeaknesses: b"), (REPAIR, "sorry"))
        result = run({"layers": [GEN3, {"type": "critique"}]}, backend)
        event = result.trace.events[1]
        assert len(event.calls) == 3  # the call and 2 repairs (the default)
        assert [c.purpose for c in event.calls] == [
            "critique",
            "critique (repair 1)",
            "critique (repair 2)",
        ]
        (fallback,) = event.fallbacks
        assert fallback.candidate_ids == ["L0.0.2", "L0.0.3"]
        assert [c.candidate_id for c in result.trace.critiques] == ["L0.0.1"]
        assert "no critique" in fallback.action

    def test_repair_asks_only_for_missing_blocks_and_merges(self) -> None:
        # The first reply stops after [1]; the repair is asked for [2] and [3] alone and its
        # blocks join the first one's (a second "[1]" in the repair does not replace it).
        backend = scripted(
            (REPAIR, "[1]\nStrengths: other\n[2]\nStrengths: b\n[3]\nWeaknesses: c"),
            (CRITIQUE, "[1]\nStrengths: a\nWeaknesses: none found"),
        )
        result = run({"layers": [GEN3, {"type": "critique"}]}, backend)
        event = result.trace.events[1]
        assert [c.purpose for c in event.calls] == ["critique", "critique (repair 1)"]
        repair_prompt = last_text(backend.calls[2][0])
        assert "[2], [3]" in repair_prompt and "[1]," not in repair_prompt
        assert not event.fallbacks
        assert [(c.candidate_id, c.strengths, c.weaknesses) for c in result.trace.critiques] == [
            ("L0.0.1", "a", "none found"),
            ("L0.0.2", "b", ""),
            ("L0.0.3", "", "c"),
        ]


# ----- rank ---------------------------------------------------------------------------------------


class TestRank:
    def test_listwise_order_and_top_k(self) -> None:
        backend = scripted((RANK, "Ranking: [3] > [1] > [2]"), default=answers("1", "2", "3"))
        result = run({"layers": [GEN3, {"type": "rank", "top_k": 2}]}, backend)
        assert [c.id for c in result.candidates] == ["L0.0.3", "L0.0.1"]
        assert result.answer_id == "L0.0.3"
        assert result.candidates[0].scores == {"rank": 1.0}
        assert result.trace.events[1].dropped == ["L0.0.2"]
        assert purposes(backend, RANK) == 1

    def test_repair_then_success(self) -> None:
        backend = scripted((RANK, "they are all fine"), (REPAIR, "Ranking: [2] > [3] > [1]"))
        result = run({"layers": [GEN3, {"type": "rank"}]}, backend)
        assert [c.id for c in result.candidates] == ["L0.0.2", "L0.0.3", "L0.0.1"]
        assert len(result.trace.events[1].calls) == 2
        repair_prompt = backend.calls[2][0]
        assert isinstance(repair_prompt, list)
        # The repair prompt shows the model its own reply and what was wrong.
        assert repair_prompt[-2] == Message(role="assistant", content="they are all fine")
        assert "no ranking line" in repair_prompt[-1].content

    @pytest.mark.parametrize("retries", [0, 1, 3])
    def test_fallback_keeps_input_order_after_bounded_retries(self, retries: int) -> None:
        backend = scripted((RANK, "no idea"), (REPAIR, "still no idea"))
        config = {"repair_retries": retries, "layers": [GEN3, {"type": "rank", "top_k": 2}]}
        result = run(config, backend)
        assert len(result.trace.events[1].calls) == 1 + retries
        assert len(backend.calls) == 2 + retries
        assert [c.id for c in result.candidates] == ["L0.0.1", "L0.0.2"]
        (fallback,) = result.trace.fallbacks
        assert fallback.action == "kept the input order"
        assert fallback.output == ("still no idea" if retries else "no idea")

    def test_component_repair_retries_override(self) -> None:
        backend = scripted((RANK, "no idea"), (REPAIR, "no"))
        result = run({"layers": [GEN3, {"type": "rank", "repair_retries": 0}]}, backend)
        assert len(result.trace.events[1].calls) == 1

    def test_single_candidate_needs_no_call(self) -> None:
        backend = scripted()
        result = run({"layers": [{"type": "generate"}, {"type": "rank"}]}, backend)
        assert len(backend.calls) == 1
        assert result.trace.events[1].notes == ["1 candidate(s): nothing to rank"]

    def test_pairwise_aggregates_wins(self) -> None:
        def judge(text: str, _: int) -> str:
            # The answer saying "#### 3" beats everything; "#### 1" beats "#### 2".
            a = text.split("Answer A:")[1].split("Answer B:")[0]
            b = text.split("Answer B:")[1]
            if "#### 3" in a or ("#### 1" in a and "#### 2" in b):
                return "Winner: A"
            return "Winner: B"

        backend = scripted((PAIR, judge), default=answers("1", "2", "3"))
        result = run({"layers": [GEN3, {"type": "rank", "mode": "pairwise"}]}, backend)
        assert purposes(backend, PAIR) == 3
        assert [c.answer for c in result.candidates] == ["3", "1", "2"]
        assert result.trace.events[1].scores == {"L0.0.1": 1.0, "L0.0.2": 0.0, "L0.0.3": 2.0}

    def test_pairwise_both_orders_and_unparseable_pairs(self) -> None:
        backend = scripted((PAIR, "hmm"), (REPAIR, "hmm"), default=answers("1", "2", "3"))
        config = {
            "repair_retries": 1,
            "layers": [GEN3, {"type": "rank", "mode": "pairwise", "both_orders": True}],
        }
        result = run(config, backend)
        calls = [c.purpose for c in result.trace.events[1].calls]
        assert len(calls) == 12  # 6 comparisons, each repaired once
        assert sum("repair" not in p for p in calls) == 6
        assert len(result.trace.fallbacks) == 6
        # No pair decided: equal wins keep the input order.
        assert [c.answer for c in result.candidates] == ["1", "2", "3"]


# ----- fuse -----------------------------------------------------------------------------------------


class TestFuse:
    def test_fused_candidates_replace_inputs(self) -> None:
        backend = scripted((FUSE, "fused #### 7"))
        result = run({"layers": [GEN3, {"type": "fuse"}]}, backend)
        assert [c.id for c in result.candidates] == ["L1.0.1"]
        fused = result.candidates[0]
        assert fused.origin is not None and fused.origin.action == "fused"
        assert fused.origin.parents == ["L0.0.1", "L0.0.2", "L0.0.3"]
        assert result.extracted == "7"
        assert result.trace.events[1].dropped == ["L0.0.1", "L0.0.2", "L0.0.3"]

    def test_n_fused_in_one_call_and_keep_inputs(self) -> None:
        backend = scripted((FUSE, lambda _t, i: f"fused {i}"))
        result = run({"layers": [GEN3, {"type": "fuse", "n": 2, "keep_inputs": True}]}, backend)
        assert purposes(backend, FUSE) == 1 and backend.calls[1][1] == 2
        assert [c.id for c in result.candidates] == [
            "L1.0.1",
            "L1.0.2",
            "L0.0.1",
            "L0.0.2",
            "L0.0.3",
        ]


# ----- judge ----------------------------------------------------------------------------------------


def grade_by_answer(text: str, _: int) -> str:
    return f"Score: {text.split('####')[1].split()[0]}"


class TestJudge:
    def test_best_of_n(self) -> None:
        backend = scripted((SCORE, grade_by_answer), default=answers("3", "9", "5"))
        result = run({"layers": [GEN3, {"type": "judge", "top_k": 1}]}, backend)
        assert purposes(backend, SCORE) == 3
        assert result.extracted == "9"
        assert result.candidates[0].scores == {"judge": 9.0}

    def test_unscored_candidates_are_kept_last(self) -> None:
        def grade(text: str, i: int) -> str:
            return "no grade" if "#### 9" in text else grade_by_answer(text, i)

        backend = scripted((SCORE, grade), (REPAIR, "no"), default=answers("3", "9", "5"))
        result = run({"layers": [GEN3, {"type": "judge"}]}, backend)
        assert [c.answer for c in result.candidates] == ["5", "3", "9"]
        (fallback,) = result.trace.fallbacks
        assert fallback.candidate_ids == ["L0.0.2"] and fallback.action == "left unscored and kept"
        assert len(result.trace.events[1].calls) == 3 + 2

    def test_min_score_filter_keeps_all_when_none_pass(self) -> None:
        backend = scripted((SCORE, grade_by_answer), default=answers("3", "4", "5"))
        kept = run({"layers": [GEN3, {"type": "judge", "min_score": 4}]}, backend)
        assert [c.answer for c in kept.candidates] == ["5", "4"]
        backend = scripted((SCORE, grade_by_answer), default=answers("3", "4", "5"))
        none = run({"layers": [GEN3, {"type": "judge", "min_score": 8}]}, backend)
        assert [c.answer for c in none.candidates] == ["5", "4", "3"]
        assert "min_score" in none.trace.fallbacks[0].reason

    def test_accept_mode_filters(self) -> None:
        def verdict(text: str, _: int) -> str:
            return "Verdict: ACCEPT" if "#### 2" in text else "Verdict: REJECT"

        backend = scripted((ACCEPT, verdict), default=answers("1", "2", "3"))
        result = run({"layers": [GEN3, {"type": "judge", "mode": "accept"}]}, backend)
        assert [c.answer for c in result.candidates] == ["2"]

    def test_accept_mode_all_rejected_keeps_all(self) -> None:
        backend = scripted((ACCEPT, "Verdict: REJECT"), default=answers("1", "2", "3"))
        result = run({"layers": [GEN3, {"type": "judge", "mode": "accept"}]}, backend)
        assert len(result.candidates) == 3
        assert result.trace.fallbacks[0].reason == "the judge rejected every candidate"


# ----- unit tests ---------------------------------------------------------------------------------


class TestUnitTests:
    def test_write_then_evaluate(self) -> None:
        def evaluate(text: str, _: int) -> str:
            good = "#### 42" in text
            return f"1: PASS\n2: {'PASS' if good else 'FAIL'}\n3: {'PASS' if good else 'FAIL'}"

        backend = scripted(
            (UNIT_TESTS, "- States a number.\n- The number is 42.\n- Shows work.\n- Extra."),
            (UNIT_EVAL, evaluate),
            default=answers("41", "42", "40"),
        )
        config = {
            "layers": [
                {"type": "unit_tests", "max_tests": 3},
                GEN3,
                {"type": "unit_test_eval", "top_k": 2},
            ]
        }
        result = run(config, backend)
        assert result.trace.unit_tests == ["States a number.", "The number is 42.", "Shows work."]
        assert [c.answer for c in result.candidates] == ["42", "41"]
        assert result.candidates[0].scores["unit_test_eval"] == 1.0
        assert result.candidates[1].scores["unit_test_eval"] == pytest.approx(1 / 3)
        assert purposes(backend, UNIT_EVAL) == 3

    def test_missing_results_count_as_failed(self) -> None:
        backend = scripted(
            (UNIT_TESTS, "- a check\n- b check"), (UNIT_EVAL, "1: PASS"), (REPAIR, "1: PASS")
        )
        config = {"layers": [{"type": "unit_tests"}, GEN3, {"type": "unit_test_eval"}]}
        result = run(config, backend)
        assert result.candidates[0].scores["unit_test_eval"] == 0.5
        assert len(result.trace.fallbacks) == 3
        assert all(f.action == "those tests count as failed" for f in result.trace.fallbacks)

    def test_unit_tests_fallback_and_eval_without_tests(self) -> None:
        backend = scripted((UNIT_TESTS, "I cannot."), (REPAIR, "No."))
        config = {"layers": [{"type": "unit_tests"}, GEN3, {"type": "unit_test_eval"}]}
        result = run(config, backend)
        first, eval_fb = result.trace.fallbacks
        assert first.action == "no unit tests added"
        assert "no unit tests" in eval_fb.reason
        assert len(result.candidates) == 3


# ----- vote -----------------------------------------------------------------------------------------


class TestVote:
    def test_majority(self) -> None:
        backend = scripted(default=answers("5", "7", "7", "5", "7"))
        result = run({"layers": [{"type": "generate", "n": 5}, {"type": "vote"}]}, backend)
        assert [c.id for c in result.candidates] == ["L0.0.2", "L0.0.3", "L0.0.5"]
        assert result.extracted == "7"
        assert result.candidates[0].scores == {"vote": 0.6}

    def test_tie_goes_to_the_answer_seen_first(self) -> None:
        backend = scripted(default=answers("5", "7", "7", "5"))
        result = run({"layers": [{"type": "generate", "n": 4}, {"type": "vote"}]}, backend)
        assert result.extracted == "5"

    def test_random_tie_break_is_seeded(self) -> None:
        def winner(seed: int) -> str | None:
            backend = scripted(default=answers("1", "2", "3", "4"))
            config = {
                "seed": seed,
                "layers": [{"type": "generate", "n": 4}, {"type": "vote", "tie_break": "random"}],
            }
            return run(config, backend).extracted

        picks = [winner(seed) for seed in range(12)]
        assert picks == [winner(seed) for seed in range(12)]  # reruns agree
        assert len(set(picks)) > 1  # and the seed matters

    def test_keep_all_groups_and_no_answer_last(self) -> None:
        backend = scripted(default=lambda _t, i: ["#### 5", "no idea", "#### 7", "#### 7"][i])
        config = {"layers": [{"type": "generate", "n": 4}, {"type": "vote", "keep": "all"}]}
        result = run(config, backend)
        assert [c.id for c in result.candidates] == ["L0.0.3", "L0.0.4", "L0.0.1", "L0.0.2"]

    def test_no_answers_falls_back(self) -> None:
        backend = scripted(default="I don't know")
        config = {"extractor": "math", "layers": [GEN3, {"type": "vote"}]}
        result = run(config, backend)
        assert len(result.candidates) == 3
        assert result.trace.fallbacks[0].reason == "no candidate states an answer"

    def test_pluggable_extractor_and_math_equivalence(self) -> None:
        backend = scripted(default=lambda _t, i: ["x\nblue", "y\nred", "z\nred"][i])
        config = {"layers": [GEN3, {"type": "vote", "extractor": "last_line"}]}
        assert run(config, backend).answer == "y\nred"
        backend = scripted(default=lambda _t, i: ["#### 0.5", "#### 3", "#### 1/2"][i])
        config = {"layers": [GEN3, {"type": "vote", "equivalence": "math"}]}
        assert [c.id for c in run(config, backend).candidates] == ["L0.0.1", "L0.0.3"]

    def test_code_votes_count_the_program_the_code_verifier_runs(self) -> None:
        # ~~~ fences and a block cut off by the token limit hold programs too (issue 11).
        texts = [
            "```python\ndef f():\n    return 1\n```",
            "Here it is:\n~~~python\ndef f():\n    return 1\n~~~\n",
            "```python\ndef f():\n    return 2\n",
        ]
        backend = scripted(default=lambda _t, i: texts[i])
        config = {"layers": [GEN3, {"type": "vote", "extractor": "code"}]}
        assert [c.id for c in run(config, backend).candidates] == ["L0.0.1", "L0.0.2"]

    def test_a_failing_equivalence_check_keeps_answers_apart_and_says_why(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "math_verify", None)  # as if it were not installed
        backend = scripted(default=lambda _t, i: ["\\boxed{2}", "\\boxed{\\sqrt{4}}", "#### 2"][i])
        config = {"layers": [GEN3, {"type": "vote", "equivalence": "math"}]}
        result = run(config, backend)
        assert [c.id for c in result.candidates] == ["L0.0.1", "L0.0.3"]
        notes = [n for e in result.trace.events for n in e.notes]
        assert any("kept apart" in n and "math-verify is not available" in n for n in notes)


# ----- verify ---------------------------------------------------------------------------------------


class TestVerify:
    def test_callable_verifier_filters(self) -> None:
        backend = scripted(default=answers("41", "42", "42"))
        config = {"layers": [GEN3, {"type": "verify", "verifier": "ref"}]}
        seen: list[str | None] = []

        def check(reference: str | None, text: str) -> bool:
            seen.append(reference)
            return text.endswith(f"#### {reference}")

        with System.from_dict(config, default_backend=backend, verifiers={"ref": check}) as s:
            result = s.run("q", reference="42")
            unchecked = s.run("q")
        assert [c.id for c in result.candidates] == ["L0.0.2", "L0.0.3"]
        assert seen == ["42"] * 3
        assert unchecked.trace.fallbacks[0].reason == "the query has no reference to verify against"

    def test_none_pass_keeps_all(self) -> None:
        backend = scripted(default=answers("1", "2", "3"))
        config = {"layers": [GEN3, {"type": "verify", "verifier": "never"}]}
        with System.from_dict(
            config, default_backend=backend, verifiers={"never": lambda r, t: False}
        ) as s:
            result = s.run("q", reference="9")
        assert len(result.candidates) == 3
        assert result.trace.fallbacks[0].reason == "no candidate passed the verifier"
        assert result.trace.events[1].scores == {"L0.0.1": 0.0, "L0.0.2": 0.0, "L0.0.3": 0.0}


class ListVerifier:
    """A task verifier (the Verifier protocol) that passes answers in a set."""

    name = "list"

    def __init__(self, good: set[str]) -> None:
        self.good = good
        self.batches: list[int] = []

    def verify_many(self, items: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        self.batches.append(len(items))
        return [
            Verdict(status="correct" if text.split()[-1] in self.good else "incorrect")
            for _, text in items
        ]

    def close(self) -> None:
        return None

    def __enter__(self) -> ListVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_verify_with_a_task_verifier_checks_all_candidates_in_one_batch() -> None:
    verifier = ListVerifier({"2", "3"})
    backend = scripted(default=answers("1", "2", "3"))
    config = {"layers": [GEN3, {"type": "verify", "verifier": "list", "top_k": 1}]}
    with System.from_dict(config, default_backend=backend, verifiers={"list": verifier}) as s:
        result = s.run("q", reference="anything")
    assert verifier.batches == [3]
    assert [c.id for c in result.candidates] == ["L0.0.2"]
    assert result.candidates[0].scores == {"verify": 1.0}


# ----- refine ---------------------------------------------------------------------------------------


class TestRefine:
    def test_stops_when_the_critic_accepts(self) -> None:
        def critic(text: str, _: int) -> str:
            return "Verdict: ACCEPT" if "#### 42" in text else "Off by one.\nVerdict: REVISE"

        backend = scripted((CRITIC, critic), (REVISE, "Fixed. #### 42"), default="#### 41")
        config = {"layers": [{"type": "generate"}, {"type": "refine", "max_rounds": 3}]}
        result = run(config, backend)
        event = result.trace.events[1]
        assert [c.purpose for c in event.calls] == [
            "critic L0.0.1 round 1",
            "revise L0.0.1 round 1",
            "critic L0.0.1 round 2",
        ]
        (candidate,) = result.candidates
        assert candidate.id == "L0.0.1" and candidate.version == 1
        assert candidate.text == "Fixed. #### 42"
        assert candidate.history[-1].action == "refined"
        assert candidate.history[-1].previous_text == "#### 41"
        assert candidate.scores == {"refine": 1.0}
        assert event.changed == ["L0.0.1"]
        # The reviser saw the critic's feedback.
        assert "Off by one." in last_text(backend.calls[2][0])

    def test_gives_up_after_max_rounds(self) -> None:
        backend = scripted((CRITIC, "Verdict: REVISE"), (REVISE, "again"))
        config = {"layers": [{"type": "generate"}, {"type": "refine", "max_rounds": 2}]}
        result = run(config, backend)
        assert len(result.trace.events[1].calls) == 4
        assert result.candidates[0].version == 2
        assert result.candidates[0].scores == {"refine": 0.0}

    def test_unparseable_verdict_revises_with_the_reply(self) -> None:
        backend = scripted((CRITIC, "hmm, maybe"), (REPAIR, "still unsure"), (REVISE, "better"))
        config = {
            "repair_retries": 1,
            "layers": [{"type": "generate"}, {"type": "refine", "max_rounds": 1}],
        }
        result = run(config, backend)
        assert result.answer == "better"
        (fallback,) = result.trace.fallbacks
        assert fallback.action == "revised with the critic's whole reply as feedback"
        assert "still unsure" in last_text(backend.calls[-1][0])


# ----- layer merge rules ------------------------------------------------------------------------


def cand(cid: str) -> Candidate:
    return Candidate(id=cid, text=cid)


class TestMerge:
    def state(self, *ids: str) -> State:
        return State(
            messages=[Message(role="user", content="q")], candidates=[cand(i) for i in ids]
        )

    def test_generate_outputs_are_appended_in_config_order(self) -> None:
        out, _ = merge(
            self.state("a"),
            [("g1", Delta(new=[cand("x")])), ("g2", Delta(new=[cand("y"), cand("z")]))],
        )
        assert [c.id for c in out.candidates] == ["a", "x", "y", "z"]

    def test_selections_apply_in_config_order(self) -> None:
        out, _ = merge(
            self.state("a", "b", "c", "d"),
            [
                ("rank", Delta(keep=["c", "a", "b"], reorder=True, scores={"a": 2.0})),
                ("judge", Delta(keep=["a", "b", "d"], scores={"b": 1.0})),
            ],
        )
        # The filter keeps the ranker's order; "d" was already dropped by the ranker.
        assert [c.id for c in out.candidates] == ["a", "b"]
        assert out.candidates[0].scores == {"rank": 2.0}

    def test_replace_prepend_and_changes(self) -> None:
        changed = cand("b").model_copy(update={"text": "B", "version": 1})
        out, touched = merge(
            self.state("a", "b"),
            [
                ("fuse", Delta(new=[cand("f")], placement="replace")),
                ("refine", Delta(changed=[changed])),
                ("gen", Delta(new=[cand("g")])),
            ],
        )
        assert [c.id for c in out.candidates] == ["f", "g"]
        assert touched["b"].text == "B"
        out, _ = merge(self.state("a"), [("fuse", Delta(new=[cand("f")], placement="prepend"))])
        assert [c.id for c in out.candidates] == ["f", "a"]


def test_components_of_a_layer_see_the_same_input() -> None:
    backend = scripted(
        (RANK, "Ranking: [3] > [2] > [1]"), (SCORE, grade_by_answer), default=answers("1", "5", "3")
    )
    config = {"layers": [GEN3, [{"type": "rank"}, {"type": "judge", "top_k": 2}]]}
    result = run(config, backend)
    rank_event, judge_event = result.trace.layers[1].events
    assert rank_event.input_ids == judge_event.input_ids == ["L0.0.1", "L0.0.2", "L0.0.3"]
    # Rank reorders to 3,2,1; the judge's reordering (by score: 2,3,1, top 2) applies next.
    assert [c.id for c in result.candidates] == ["L0.0.2", "L0.0.3"]


def test_async_components_do_not_block_each_other() -> None:
    async def main() -> int:
        backend = scripted(delay_s=0.2)
        config = {"layers": [[{"type": "generate"} for _ in range(4)]]}
        async with System.from_dict(config, default_backend=backend) as system:
            await system.arun("q")
        return backend.max_in_flight

    assert asyncio.run(main()) == 4  # all four calls overlapped (no wall-clock bound)
