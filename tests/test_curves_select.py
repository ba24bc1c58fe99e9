"""Coverage curves and selection@k (majority, weighted, best-of, oracle) on hand-made runs."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import get_args

import numpy as np
import pytest

from ponder.analysis import (
    Curve,
    Method,
    ProblemSamples,
    RunData,
    coverage_curve,
    gap_to_coverage,
    k_grid_log,
    pass_at_k,
    per_problem_pass_at_k,
    per_problem_selection,
    samples_to_reach,
    selection_curve,
)
from ponder.records import SamplingParams
from ponder.store import RunSpec

# White-box tests switch the estimator's internal strategies (_ORDER_POSITIONS, _PREFIX_COST) to
# check that its code paths agree; only the private module has those knobs.
from ponder.analysis import _select  # isort: skip

METHODS: tuple[Method, ...] = get_args(Method)


def problem(
    answers: list[str | None],
    correct: list[bool] | None = None,
    scores: list[float] | None = None,
    *,
    reference: str = "a",
) -> ProblemSamples:
    """A problem whose samples are right exactly when they answer ``reference`` (unless given)."""
    n = len(answers)
    return ProblemSamples(
        problem_id=f"p{id(answers)}",
        reference=reference,
        correct=np.array(correct if correct is not None else [a == reference for a in answers]),
        answers=answers,
        scores=np.array(scores if scores is not None else [np.nan] * n, dtype=np.float64),
        completion_tokens=np.full(n, 10, dtype=np.int64),
        prompt_tokens=np.full(n, 5, dtype=np.int64),
        latency_s=np.zeros(n),
    )


def run(*problems: ProblemSamples) -> RunData:
    spec = RunSpec(model="x", task={"name": "t"}, params=SamplingParams())
    return RunData(run_id="r" * 12, spec=spec, verifier="v", problems=list(problems))


def random_run(problems: int, n: int, seed: int, *, wrong: int = 3) -> RunData:
    """Random difficulty, a few wrong answers, some unparsed, random scores."""
    rng = np.random.default_rng(seed)
    out = []
    for p in rng.beta(0.7, 0.7, size=problems):
        right = rng.random(n) < p
        names = rng.integers(0, wrong, size=n)
        answers: list[str | None] = [
            "a" if r else (None if x == 0 else f"w{x}") for r, x in zip(right, names, strict=True)
        ]
        out.append(problem(answers, scores=rng.normal(size=n).tolist()))
    return run(*out)


def one(data: RunData, method: Method, k: int, **kw: int) -> float:
    return float(selection_curve(data, method, [k], **kw).mean[0])


# --- k grids and coverage ------------------------------------------------------------------------


def test_k_grid_log() -> None:
    grid = k_grid_log(10_000)
    assert grid[0] == 1 and grid[-1] == 10_000 and np.all(np.diff(grid) > 0)
    assert 15 <= len(grid) <= 20
    assert k_grid_log(1).tolist() == [1]
    assert k_grid_log(7, 3).tolist() == [1, 3, 7]
    with pytest.raises(ValueError):
        k_grid_log(0)


def test_coverage_is_mean_unbiased_pass_at_k_and_undefined_past_the_smallest_n() -> None:
    data = run(problem(["a", "b", "a", "c"]), problem(["b", "b", "a", "b", "b", "b"]))
    curve = coverage_curve(data, [1, 2, 4, 5], bootstrap=200)
    expected = [(pass_at_k(4, 2, k) + pass_at_k(6, 1, k)) / 2 for k in (1, 2, 4)]
    np.testing.assert_allclose(curve.mean[:3], expected)
    assert math.isnan(curve.mean[3]) and math.isnan(curve.lo[3]) and math.isnan(curve.hi[3])
    assert np.all(curve.lo[:3] <= curve.mean[:3] + 1e-12)
    assert np.all(curve.mean[:3] <= curve.hi[:3] + 1e-12)
    per = per_problem_pass_at_k(data, [1, 5])
    assert per.shape == (2, 2) and math.isnan(per[0, 1]) and not math.isnan(per[1, 1])
    assert coverage_curve(data).k.tolist() == [1, 2, 3, 4]  # the default grid
    assert coverage_curve(data).k.tolist() == [1, 2, 3, 4]


def test_coverage_band_is_seeded_and_optional() -> None:
    data = random_run(40, 30, seed=1)
    a, b = coverage_curve(data, seed=3), coverage_curve(data, seed=3)
    np.testing.assert_array_equal(a.lo, b.lo)
    assert np.all(a.hi - a.lo > 0)
    bare = coverage_curve(data, bootstrap=0)
    assert np.all(np.isnan(bare.lo)) and np.all(np.isnan(bare.hi))
    np.testing.assert_array_equal(bare.mean, a.mean)


def test_empty_run_is_undefined() -> None:
    curve = coverage_curve(run(), [1, 2])
    assert np.all(np.isnan(curve.mean))
    assert np.all(np.isnan(selection_curve(run(), "majority", [1]).mean))


def test_samples_to_reach() -> None:
    nan = np.full(4, np.nan)
    curve = Curve("c", np.array([1, 2, 4, 8]), np.array([0.2, 0.5, np.nan, 0.9]), nan, nan)
    assert samples_to_reach(curve, 0.5) == 2
    assert samples_to_reach(curve, 0.6) == 8
    assert samples_to_reach(curve, 0.95) is None


# --- selection: behaviour on hand-made problems ----------------------------------------------------


def test_majority_picks_the_plurality_answer() -> None:
    assert one(run(problem(["a", "a", "a", "b", "b"])), "majority", 5) == 1.0
    assert one(run(problem(["b", "b", "b", "a", "a"])), "majority", 5) == 0.0


def test_unparsed_answers_never_win() -> None:
    assert one(run(problem([None, None, None, None, "a"])), "majority", 5) == 1.0
    assert one(run(problem([None, None, None, None, "a"])), "weighted", 5) == 1.0
    assert one(run(problem([None, None], correct=[True, True])), "majority", 2) == 0.0


def test_majority_ties_are_broken_at_random() -> None:
    data = run(problem(["a", "b"]))
    wins = [one(data, "majority", 2, subsets=1, seed=s) for s in range(200)]
    assert set(wins) == {0.0, 1.0}
    assert 0.35 < np.mean(wins) < 0.65
    assert abs(one(data, "majority", 2, subsets=4000) - 0.5) < 0.05


def test_weighted_voting_weights_by_score_and_falls_back_to_majority() -> None:
    data = run(problem(["a", "a", "b"], scores=[-5.0, -5.0, 0.0]))
    assert one(data, "majority", 3) == 1.0
    assert one(data, "weighted", 3) == 0.0  # exp(0) > 2 exp(-5)
    unscored = run(problem(["a", "a", "b"]))
    assert one(unscored, "weighted", 3) == 1.0
    # A sample without a score votes like the lowest-scored one.
    partly = run(problem(["a", "b", "b"], scores=[1.0, -1.0, np.nan]))
    assert one(partly, "weighted", 3) == 1.0  # e > 2 / e


def test_best_of_picks_the_highest_score() -> None:
    data = run(problem(["x", "a", "y"], scores=[0.1, 0.9, 0.5]))
    assert one(data, "best_of", 3) == 1.0
    assert one(data, "best_of", 1, subsets=3000) == pytest.approx(1 / 3, abs=0.04)
    # NaN never beats a real score; with only NaN the pick is at random.
    assert one(run(problem(["a", "b"], scores=[np.nan, 0.1])), "best_of", 2) == 0.0
    assert one(run(problem(["a", "b"])), "best_of", 2) == 0.5
    assert one(run(problem(["a", "b"], scores=[-np.inf, 0.0])), "best_of", 2) == 0.0


def test_undefined_where_a_problem_has_fewer_than_k_samples() -> None:
    data = run(problem(["a", "b", "a", "b", "a"]), problem(["a", "b", "b"]))
    for method in METHODS:
        per = per_problem_selection(data, method, [1, 3, 5])
        assert not np.isnan(per[:, :2]).any()
        assert math.isnan(per[1, 2]) and not math.isnan(per[0, 2])
        curve = selection_curve(data, method, [1, 3, 5])
        assert math.isnan(curve.mean[2]) and not np.isnan(curve.mean[:2]).any()


def test_deterministic_for_a_seed() -> None:
    data = random_run(20, 50, seed=2)
    for method in METHODS:
        a = selection_curve(data, method, [1, 4, 16], seed=7).mean
        np.testing.assert_array_equal(a, selection_curve(data, method, [1, 4, 16], seed=7).mean)
        assert not np.array_equal(a, selection_curve(data, method, [1, 4, 16], seed=8).mean)


def test_bad_arguments() -> None:
    data = run(problem(["a"]))
    with pytest.raises(ValueError):
        selection_curve(data, "vote", [1])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        selection_curve(data, "majority", [1], subsets=0)
    with pytest.raises(ValueError):
        selection_curve(data, "majority", [0])


# --- selection: right in expectation ----------------------------------------------------------------


def exact_selection(p: ProblemSamples, method: str, k: int) -> float:
    """The method's success averaged over every k-subset, ties averaged: the exact expectation."""
    n = p.n
    real = ~np.isnan(p.scores)
    floor = p.scores[real].min() if real.any() else 0.0
    weight = np.exp(np.where(real, p.scores, floor)) if real.any() else np.ones(n)
    total = 0.0
    subsets = list(itertools.combinations(range(n), k))
    for sub in subsets:
        if method == "oracle":
            total += float(p.correct[list(sub)].any())
        elif method == "best_of":
            # NaN ranks below every real score, -inf included.
            rank = {i: (bool(real[i]), float(p.scores[i]) if real[i] else 0.0) for i in sub}
            top = [i for i in sub if rank[i] == max(rank.values())]
            total += float(np.mean(p.correct[top]))
        else:
            votes: Counter[str] = Counter()
            for i in sub:
                if p.answers[i] is not None:
                    votes[p.answers[i]] += weight[i] if method == "weighted" else 1  # type: ignore[index]
            if not votes:
                continue
            best = max(votes.values())
            winners = [a for a, v in votes.items() if v == best]
            total += np.mean([a == p.reference for a in winners])
    return total / len(subsets)


@pytest.mark.parametrize("method", METHODS)
def test_monte_carlo_matches_exact_enumeration(
    method: Method, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One random order per subset (independent subsets) for a tight tolerance.
    monkeypatch.setattr(_select, "_ORDER_POSITIONS", 10**9)
    answers: list[str | None] = ["a", "a", "b", "b", "b", None, "c", "a"]
    # Ties between right and wrong samples at 0.5, -1.0 and NaN.
    p = problem(answers, scores=[0.5, -1.0, 0.5, 2.0, np.nan, 0.5, -1.0, np.nan])
    ks = [1, 2, 3, 5, 8]
    got = per_problem_selection(run(p), method, ks, subsets=20_000, seed=1)[0]
    want = [exact_selection(p, method, k) for k in ks]
    np.testing.assert_allclose(got, want, atol=0.015)


@pytest.mark.parametrize("method", ["majority", "weighted", "oracle"])
def test_prefix_sums_and_window_reading_agree(
    method: Method, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_run(6, 40, seed=3, wrong=6)
    monkeypatch.setattr(_select, "_PREFIX_COST", 0.0)
    dense = per_problem_selection(data, method, [1, 3, 17, 40], subsets=50)
    monkeypatch.setattr(_select, "_PREFIX_COST", math.inf)
    reading = per_problem_selection(data, method, [1, 3, 17, 40], subsets=50)
    np.testing.assert_allclose(dense, reading, rtol=0, atol=1e-12)


def test_oracle_matches_pass_at_k_and_bounds_the_voting_methods() -> None:
    # n = 5,000 uses one random order per problem, n = 40 many.
    data = run(*random_run(12, 5_000, seed=4).problems, *random_run(12, 40, seed=5).problems)
    ks = [1, 3, 10, 40]
    coverage = coverage_curve(data, ks, bootstrap=0)
    oracle_per = per_problem_selection(data, "oracle", ks, subsets=500)
    np.testing.assert_allclose(oracle_per.mean(axis=0), coverage.mean, atol=0.02)
    for method in ("majority", "weighted"):
        # Same seed, same subsets: per subset a vote can only be right if some sample is.
        per = per_problem_selection(data, method, ks, subsets=500)
        assert np.all(per <= oracle_per + 1e-12)
    for method in METHODS:
        curve = selection_curve(data, method, ks, subsets=200)
        assert np.all(curve.mean <= coverage.mean + 0.02)
        gap = gap_to_coverage(curve, coverage)
        np.testing.assert_array_equal(gap, coverage.mean - curve.mean)


def test_selection_band_and_gap_grid_check() -> None:
    data = random_run(30, 20, seed=6)
    curve = selection_curve(data, "majority", [1, 5], bootstrap=300)
    assert np.all(curve.lo <= curve.mean) and np.all(curve.mean <= curve.hi)
    with pytest.raises(ValueError):
        gap_to_coverage(curve, coverage_curve(data, [1, 4]))
