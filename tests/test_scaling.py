"""The exponentiated power-law fit of coverage against k (Large Language Monkeys)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ponder.analysis import fit_scaling_law
from ponder.errors import UserError

A, B = -1.2, -0.35
K = np.unique(np.round(np.logspace(0, 3, 12)))


def clean(k: np.ndarray, a: float = A, b: float = B) -> np.ndarray:
    return np.exp(a * k**b)


def noisy(seed: int, problems: int = 500) -> np.ndarray:
    # Coverage over P problems, each solved with probability exp(a k^b): what a real run would measure.
    rng = np.random.default_rng(seed)
    return rng.binomial(problems, clean(K)) / problems


def test_recovers_parameters_exactly_on_clean_data() -> None:
    fit = fit_scaling_law(K, clean(K))
    assert fit.a == pytest.approx(A, abs=1e-6)
    assert fit.b == pytest.approx(B, abs=1e-6)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.holdout == 2
    assert fit.holdout_k.tolist() == K[-2:].tolist()
    assert fit.holdout_error < 1e-6
    assert fit.extrapolate_k == 10 * int(K.max())
    assert fit.extrapolated == pytest.approx(float(clean(np.array([10_000.0]))[0]), abs=1e-6)
    assert fit.notes == []


@pytest.mark.parametrize("weighted", [True, False])
def test_recovers_parameters_under_binomial_noise(weighted: bool) -> None:
    covered = {"a": 0, "b": 0}
    seeds = range(10)
    for seed in seeds:
        fit = fit_scaling_law(K, noisy(seed), weighted=weighted)
        assert fit.weighted is weighted
        assert fit.a == pytest.approx(A, abs=0.1)
        assert fit.b == pytest.approx(B, abs=0.06)
        assert fit.r2 > 0.97
        assert fit.holdout_error < 0.05
        assert fit.a_ci[0] < fit.a < fit.a_ci[1]
        covered["a"] += fit.a_ci[0] <= A <= fit.a_ci[1]
        covered["b"] += fit.b_ci[0] <= B <= fit.b_ci[1]
    assert covered["a"] >= 7 and covered["b"] >= 7, covered


def test_predict_is_monotone_increasing_and_bounded() -> None:
    fit = fit_scaling_law(K, noisy(3))
    grid = np.logspace(0, 5, 200)
    p = fit.predict(grid)
    assert p.shape == grid.shape
    assert np.all(np.diff(p) > 0)
    assert np.all((p > 0) & (p < 1))
    assert fit.predict(K[:3]) == pytest.approx(np.exp(fit.a * K[:3] ** fit.b))


def test_zero_and_nan_points_are_dropped_with_notes() -> None:
    k = np.concatenate([[0.5, 0.7], K, [5000.0]])
    c = np.concatenate([[0.0, 0.0], clean(K), [np.nan]])
    fit = fit_scaling_law(k, c)
    assert fit.a == pytest.approx(A, abs=1e-6)
    assert len(fit.notes) == 2
    assert any("NaN" in n for n in fit.notes)
    assert any("coverage 0" in n for n in fit.notes)
    assert 0.5 not in fit.k_fit


def test_holdout_is_reduced_when_points_are_few() -> None:
    k = K[:5]
    fit = fit_scaling_law(k, clean(k), holdout=3)
    assert fit.holdout == 1
    assert fit.k_fit.size == 4
    assert any("held out 1" in n for n in fit.notes)
    none = fit_scaling_law(K[:4], clean(K[:4]))
    assert none.holdout == 0 and none.holdout_k.size == 0
    assert math.isnan(none.holdout_error)


def test_saturated_points_stay_in_the_fit() -> None:
    # Coverage measured on 100 problems rounds to exactly 1 at the three largest k; log 1 = 0 is a valid
    # point of the law's approach, and the weighted fit must cope with its zero binomial variance.
    c = np.round(clean(K, -3.0, -1.2) * 100) / 100
    assert np.sum(c == 1.0) == 3
    for weighted in (True, False):
        fit = fit_scaling_law(K, c, holdout=0, weighted=weighted)
        assert fit.a == pytest.approx(-3.0, abs=0.05) and fit.b == pytest.approx(-1.2, abs=0.02)
        assert fit.a_ci[0] < -3.0 < fit.a_ci[1]
        assert fit.r2 > 0.999


@pytest.mark.parametrize(
    ("k", "c", "match"),
    [
        ([1, 2, 4], [0.1, 0.2, 0.3], "distinct k"),
        ([1, 2, 4, 8, 16], [0.0, 0.0, 0.1, 0.2, 0.3], "coverage > 0"),
        ([1, 2, 4, np.nan], [0.1, 0.2, 0.3, 0.4], "distinct k"),
        ([1, 2, 4, 8, 16], [0.0] * 5, "coverage is 0 at every k"),
        ([1, 2, 4, 8, 16], [1.0] * 5, "coverage is 1 at every fitted k"),
        ([1, 2, 4, 8, 16], [0.1, 0.2, 1.2, 0.4, 0.5], r"\[0, 1\]"),
        ([0, 2, 4, 8, 16], [0.1, 0.2, 0.3, 0.4, 0.5], "> 0"),
        ([1, 2, 4], [0.1, 0.2], "equal length"),
    ],
)
def test_refusals(k: list[float], c: list[float], match: str) -> None:
    with pytest.raises(UserError, match=match):
        fit_scaling_law(k, c)


def test_refuses_bad_arguments() -> None:
    with pytest.raises(UserError, match="holdout"):
        fit_scaling_law(K, clean(K), holdout=-1)
    with pytest.raises(UserError, match="confidence"):
        fit_scaling_law(K, clean(K), confidence=1.0)


def test_wider_confidence_gives_wider_intervals() -> None:
    c = noisy(1)
    narrow = fit_scaling_law(K, c, confidence=0.5)
    wide = fit_scaling_law(K, c, confidence=0.99)
    assert wide.a_ci[0] < narrow.a_ci[0] < narrow.a_ci[1] < wide.a_ci[1]
    assert wide.b_ci[0] < narrow.b_ci[0] < narrow.b_ci[1] < wide.b_ci[1]
