"""pass@k, coverage@k, the first-k share, per-problem tallies and the run summary."""

from __future__ import annotations

import math
from fractions import Fraction
from math import comb

import numpy as np
import pytest

from ponder.analysis import coverage_at_k, k_grid, pass_at_k, solved_by_first_k, summarize, tally
from ponder.records import Sample, Verdict


def exact(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


@pytest.mark.parametrize(
    ("n", "c", "k"), [(10, 0, 1), (10, 3, 1), (10, 3, 5), (10, 10, 3), (100, 1, 50), (7, 6, 2)]
)
def test_pass_at_k_matches_exact_rational(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(exact(n, c, k), abs=1e-12)


def test_pass_at_k_is_undefined_not_zero_when_too_few_samples() -> None:
    assert math.isnan(pass_at_k(4, 1, 8))
    out = pass_at_k(np.array([10, 3, 10]), np.array([0, 1, 10]), 4)
    assert out[0] == 0.0 and math.isnan(out[1]) and out[2] == 1.0


def test_pass_at_k_large_n_is_stable() -> None:
    v = pass_at_k(10_000, 3, 100)
    assert v == pytest.approx(exact(10_000, 3, 100), rel=1e-10)


def test_pass_at_k_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


def test_k_grid() -> None:
    assert k_grid(1) == [1]
    assert k_grid(8) == [1, 2, 4, 8]
    assert k_grid(10) == [1, 2, 4, 8, 10]


def test_solved_by_first_k_counts_the_first_k_samples() -> None:
    assert solved_by_first_k([0, 3, None], [4, 4, 4], 1) == pytest.approx(1 / 3)
    assert solved_by_first_k([0, 3, None], [4, 4, 4], 4) == pytest.approx(2 / 3)
    assert math.isnan(solved_by_first_k([0], [2], 4))
    assert math.isnan(solved_by_first_k([], [], 1))


def test_coverage_at_k_is_the_mean_unbiased_pass_at_k() -> None:
    # Problem a: 1 correct of 4; b: 0 of 4; c: 4 of 4. At k=2: (1 - C(3,2)/C(4,2) + 0 + 1) / 3.
    assert coverage_at_k([4, 4, 4], [1, 0, 4], 2) == pytest.approx((1 - 3 / 6 + 0 + 1) / 3)
    # It does not depend on where the correct samples sit, unlike the first-k share.
    assert coverage_at_k([4], [1], 1) == pytest.approx(0.25)
    assert solved_by_first_k([0], [4], 1) == 1.0 and solved_by_first_k([3], [4], 1) == 0.0
    assert math.isnan(coverage_at_k([4, 1], [1, 1], 2))  # undefined, not clipped
    assert math.isnan(coverage_at_k([], [], 1))


def test_summarize_counts_only_verified_samples() -> None:
    def s(i: int, pid: str, idx: int) -> Sample:
        return Sample(
            id=i,
            run_id="r",
            problem_id=pid,
            index=idx,
            text="",
            finish_reason="stop",
            completion_tokens=10,
            prompt_tokens=5,
            latency_s=0.1,
            seed=0,
        )

    samples = [s(1, "a", 0), s(2, "a", 1), s(3, "b", 0), s(4, "b", 1), s(5, "b", 2)]
    verdicts = {
        1: Verdict(status="incorrect"),
        2: Verdict(status="correct"),
        3: Verdict(status="unparsed"),
        4: Verdict(status="incorrect"),
    }  # sample 5 unverified
    stats = summarize(["a", "b"], samples, verdicts)
    assert (stats.verified, stats.correct, stats.unparsed, stats.min_samples) == (4, 1, 1, 2)
    assert [p.k for p in stats.points] == [1, 2]
    # coverage@k is the mean unbiased pass@k: a has 1 correct of 2 verified, b 0 of 2.
    assert stats.points[0].coverage == pytest.approx((0.5 + 0.0) / 2)
    assert stats.points[1].coverage == pytest.approx((1.0 + 0.0) / 2)
    # a's correct sample is its second: the first sample alone solves nothing.
    assert stats.points[0].solved_by_first_k == 0.0 and stats.points[1].solved_by_first_k == 0.5
    assert stats.completion_tokens == 50

    rows = tally(["a", "b"], samples, verdicts)
    assert [(r.samples, r.verified, r.correct, r.unparsed) for r in rows] == [
        (2, 2, 1, 0),
        (3, 2, 0, 1),
    ]
    assert rows[0].first_correct_position == 1 and rows[1].first_correct_position is None
