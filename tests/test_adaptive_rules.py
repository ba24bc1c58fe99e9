"""Stop rules, their posteriors and Schedule.replay, against hand-computed values and brute force."""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import integrate, stats

from ponder._registry import isolated
from ponder.adaptive import (
    Schedule,
    StopRule,
    Votes,
    answer_key,
    beta_leader_prob,
    dirichlet_leader_prob,
    dirichlet_leader_prob_one,
    leading_answer,
    make_stop_rule,
    register_stop_rule,
    stop_rule_names,
    votes_of,
)
from ponder.errors import ConfigError, UnknownNameError

RULES = ("fixed", "margin", "supermajority", "beta", "dirichlet", "window")


def test_built_in_rules_are_registered_with_defaults() -> None:
    assert set(RULES) <= set(stop_rule_names())
    assert make_stop_rule("beta").describe() == "beta(min_samples=4, confidence=0.95)"
    assert make_stop_rule("margin").votes == 4  # type: ignore[attr-defined]
    assert make_stop_rule("supermajority").share == 0.75  # type: ignore[attr-defined]
    assert make_stop_rule("window").size == 4  # type: ignore[attr-defined]
    assert make_stop_rule("dirichlet").confidence == 0.95  # type: ignore[attr-defined]
    # Command-line strings are converted.
    assert make_stop_rule("beta", {"confidence": "0.9", "min_samples": "8"}).threshold == 0.9


def test_bad_names_and_params_say_what_and_how() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'beta'"):
        make_stop_rule("bta")
    with pytest.raises(ConfigError, match="confidence") as info:
        make_stop_rule("beta", {"confidence": 1.5})
    assert "confidence=0.95" in str(info.value.hint)
    with pytest.raises(ConfigError, match="colour"):
        make_stop_rule("margin", {"colour": 3})
    with pytest.raises(ConfigError, match="min_samples"):
        make_stop_rule("window", {"min_samples": 0})


def test_max_below_the_minimum_is_an_error_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match="below the minimum") as info:
        Schedule(make_stop_rule("beta", {"min_samples": 8}), max_samples=6)
    assert "--n" in str(info.value.hint)
    with pytest.raises(ConfigError, match="round size"):
        Schedule(make_stop_rule("beta"), max_samples=8, round_size=0)


# ----- posteriors ---------------------------------------------------------------------------------


def test_beta_posterior_by_hand() -> None:
    # P(p > 1/2), p ~ Beta(a + 1, b + 1), for integers = P(Binomial(a + b + 1, 1/2) <= a).
    assert beta_leader_prob(0, 0) == pytest.approx(0.5)
    assert beta_leader_prob(1, 0) == pytest.approx(3 / 4)  # density 2x on [0, 1]
    assert beta_leader_prob(3, 0) == pytest.approx(15 / 16)
    assert beta_leader_prob(2, 1) == pytest.approx(11 / 16)
    assert beta_leader_prob(5, 1) == pytest.approx(1 - 8 / 128)
    a, b = np.array([7, 12, 30]), np.array([3, 12, 29])
    expected = [stats.binom.cdf(x, x + y + 1, 0.5) for x, y in zip(a, b, strict=True)]
    assert beta_leader_prob(a, b) == pytest.approx(expected)


def _dirichlet_exact(counts: tuple[int, ...]) -> float:
    """P(G_0 > max_j G_j) for independent Gammas with shapes counts + 1: one-dimensional integral."""
    shapes = [c + 1 for c in counts]
    first, rest = shapes[0], shapes[1:]

    def integrand(x: float) -> float:
        return float(stats.gamma.pdf(x, first) * math.prod(stats.gamma.cdf(x, a) for a in rest))

    return float(integrate.quad(integrand, 0, np.inf)[0])


@pytest.mark.parametrize("counts", [(2, 1, 1), (3, 2, 1), (5, 4, 4, 1), (6, 1, 1, 1)])
def test_dirichlet_monte_carlo_matches_the_exact_integral(counts: tuple[int, ...]) -> None:
    exact = _dirichlet_exact(counts)
    assert dirichlet_leader_prob_one(counts, draws=100_000) == pytest.approx(exact, abs=0.006)
    # The default 2,000 draws: within 4 standard errors.
    se = math.sqrt(exact * (1 - exact) / 2000)
    assert abs(dirichlet_leader_prob_one(counts) - exact) < 4 * se + 1e-9


def test_dirichlet_special_cases_are_exact_and_reproducible() -> None:
    assert dirichlet_leader_prob_one((5, 0, 0, 0)) == 1.0  # one class seen
    assert dirichlet_leader_prob_one((4, 2, 0)) == pytest.approx(float(beta_leader_prob(4, 2)))
    first = dirichlet_leader_prob_one((4, 3, 2), seed=7)
    dirichlet_leader_prob_one((9, 1, 1), seed=7)  # other work in between changes nothing
    assert dirichlet_leader_prob_one((4, 3, 2), seed=7) == first
    assert dirichlet_leader_prob_one((4, 3, 2), seed=8) != first


def test_dirichlet_bounds_never_change_a_decision() -> None:
    rng = np.random.default_rng(3)
    top = -np.sort(-rng.integers(0, 12, size=(300, 4)), axis=1)
    exact = dirichlet_leader_prob(top)
    for t in (0.6, 0.9, 0.99):
        fast = dirichlet_leader_prob(top, lo=t, hi=t)
        assert ((fast >= t) == (exact >= t)).all()


# ----- votes and rules ----------------------------------------------------------------------------


def test_votes_of_counts_classes_streak_and_skips_unanswered() -> None:
    v = votes_of(["7", " 7 ", None, "5", "7", "7"])
    assert v.n.tolist() == [6] and v.top.tolist() == [[4, 1, 0, 0]] and v.run.tolist() == [2]
    assert votes_of(["1", "2", None]).run.tolist() == [0]
    assert answer_key("  ") is None and answer_key(None) is None
    # Ties go to the answer that reached the top count first.
    assert leading_answer(["5", "7", "7", "5"]) == ("7", 2)
    assert leading_answer([None, None]) == (None, 0)


def _votes(n: int, *top: int, run: int = 0) -> Votes:
    padded = [*top, *[0] * (4 - len(top))]
    return Votes(np.array([n]), np.array([padded]), np.array([run]))


@pytest.mark.parametrize(
    ("rule", "params", "votes", "fires"),
    [
        ("margin", {"votes": 3}, _votes(5, 4, 1), True),
        ("margin", {"votes": 3}, _votes(5, 3, 1), False),
        ("supermajority", {"share": 0.75}, _votes(8, 6, 1), True),
        ("supermajority", {"share": 0.75}, _votes(8, 5, 1), False),  # unanswered count in n
        ("beta", {"confidence": 0.95}, _votes(4, 4), True),  # 31/32
        ("beta", {"confidence": 0.95}, _votes(4, 3, 1), False),  # 26/32
        ("window", {"size": 3}, _votes(6, 3, 3, run=3), True),
        ("window", {"size": 3}, _votes(6, 4, 2, run=2), False),
        ("beta", {"min_samples": 8}, _votes(4, 4), False),  # before the minimum
        ("fixed", {}, _votes(100, 100), False),
    ],
)
def test_each_rule_fires_by_hand(
    rule: str, params: dict[str, float], votes: Votes, fires: bool
) -> None:
    assert bool(make_stop_rule(rule, params).fires(votes)[0]) is fires


def _replay_by_hand(rule: StopRule, answers: list[str | None], b: int, top: int) -> int:
    """Samples used: the first checkpoint (b, 2b, ..., top) where the rule fires, else top."""
    for n in [*range(b, top, b), top]:
        if n > len(answers):
            break
        if n >= rule.min_samples and rule.fires(votes_of(answers[:n]))[0]:
            return n
    return top


@settings(max_examples=150, deadline=None)
@given(
    answers=st.lists(st.sampled_from(["A", "B", "C", None]), min_size=1, max_size=24),
    rule=st.sampled_from(RULES),
    min_samples=st.integers(1, 9),
    b=st.integers(1, 6),
)
def test_replay_never_stops_before_the_minimum_or_after_the_maximum(
    answers: list[str | None], rule: str, min_samples: int, b: int
) -> None:
    top = max(len(answers), min_samples)
    the_rule = make_stop_rule(rule, {"min_samples": min_samples})
    schedule = Schedule(the_rule, max_samples=top, round_size=b)
    full = answers + ["A"] * (top - len(answers))
    d = schedule.replay(full)
    assert d.stopped and min_samples <= d.samples <= top
    assert d.samples in schedule.checkpoints()
    fired = bool(the_rule.fires(votes_of(full[: d.samples]))[0])
    assert d.reason == ("rule" if fired else "max")
    assert d.samples == _replay_by_hand(the_rule, full, b, top)
    assert (d.answer, d.votes) == leading_answer(full[: d.samples])
    # A prefix that reaches no stop yet says what to draw next, and never past the maximum.
    partial = schedule.replay(full[: d.samples - 1])
    assert not partial.stopped
    assert partial.samples < d.samples <= partial.next_checkpoint <= top


def test_replay_ignores_samples_past_the_stop_and_resumes_mid_round() -> None:
    schedule = Schedule(make_stop_rule("beta"), max_samples=16)
    assert schedule.checkpoints() == [4, 8, 12, 16]
    d = schedule.replay(["1"] * 4 + ["2"] * 12)  # decided after one round
    assert (d.stopped, d.samples, d.rounds, d.reason, d.answer) == (True, 4, 1, "rule", "1")
    d = schedule.replay(["1", "2", "1", "2", "1", "2"])  # a round and a half stored
    assert (d.stopped, d.samples, d.rounds, d.next_checkpoint) == (False, 4, 1, 8)
    d = schedule.replay(["1", "2"] * 8)
    assert (d.stopped, d.samples, d.reason) == (True, 16, "max")
    uneven = Schedule(make_stop_rule("window", {"size": 10}), max_samples=10, round_size=4)
    assert uneven.checkpoints() == [4, 8, 10]


def test_replay_agrees_with_brute_force_over_every_sequence() -> None:
    # Every sequence of 8 answers over {A, B, none}: the stop point and the answer at the stop.
    schedule = Schedule(make_stop_rule("margin", {"votes": 2, "min_samples": 2}), 8, round_size=2)
    for seq in itertools.product(["A", "B", None], repeat=8):
        answers = list(seq)
        d = schedule.replay(answers)
        expected = 8
        for n in (2, 4, 6):
            counts = sorted((answers[:n].count(x) for x in ("A", "B")), reverse=True)
            if counts[0] - counts[1] >= 2:
                expected = n
                break
        assert d.samples == expected


# ----- plugins ------------------------------------------------------------------------------------


def test_a_plugin_rule_registers_and_is_checked() -> None:
    with isolated():

        @register_stop_rule("always")
        class Always(StopRule):
            name: ClassVar[str] = "always"
            threshold_field: ClassVar[str | None] = None
            sweep: ClassVar[tuple[float, ...]] = ()
            summary: ClassVar[str] = "stop at the minimum"

            def statistic(
                self, votes: Votes, *, lo: float = -np.inf, hi: float = np.inf
            ) -> NDArray[np.float64]:
                return np.ones(votes.rows)

            @property
            def threshold(self) -> float:
                return 1.0

        assert "always" in stop_rule_names()
        d = Schedule(make_stop_rule("always", {"min_samples": 2}), 10, round_size=2).replay(
            ["x", "y"]
        )
        assert (d.stopped, d.samples, d.reason) == (True, 2, "rule")
        with pytest.raises(ConfigError, match="not a StopRule"):
            register_stop_rule("nope")(int)  # type: ignore[type-var]
        with pytest.raises(ConfigError, match="registered as 'other'"):
            register_stop_rule("other")(Always)
