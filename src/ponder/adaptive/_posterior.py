"""Posterior probabilities that the leading answer is the right one to stop on.

* :func:`beta_leader_prob`: with ``a`` votes for the leader and ``b`` for the runner-up, the
  probability that the leader's underlying share of the two exceeds one half, under a uniform
  prior: ``P(p > 1/2)`` for ``p ~ Beta(a + 1, b + 1)`` (the Beta rule of Adaptive-Consistency).
  Exact (the regularised incomplete beta function), vectorised.
* :func:`dirichlet_leader_prob`: with counts ``c_1 >= c_2 >= ...`` of the largest classes, the
  probability that class 1 has the largest underlying probability under ``Dirichlet(c_i + 1)``.
  No closed form: Monte Carlo over seeded Gamma draws that every count vector shares per (count,
  class position) (common random numbers), so a count vector always gets the same value whatever
  else was computed before or beside it, and many vectors are estimated together at the cost of
  array gathers (single count vectors, as online sampling asks, are memoised); exact
  pairwise bounds skip the Monte Carlo where the caller's thresholds cannot be affected (estimates
  are clipped to those bounds, so that skipping never changes a decision).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

_TABLE_LIMIT = 2048
_table: NDArray[np.float64] = np.empty((0, 0))


def _betainc(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    # Imported on first use: scipy.special is most of the time a CLI start would spend importing.
    from scipy.special import betainc

    return np.asarray(betainc(a, b, 0.5), dtype=np.float64)


def _beta_table(size: int) -> NDArray[np.float64]:
    """``P(p > 1/2)`` for every pair of counts below ``size`` (grown by doubling, kept)."""
    global _table
    if _table.shape[0] < size:
        side = max(64, 1 << (size - 1).bit_length())
        a = np.arange(side, dtype=np.float64) + 1.0
        _table = _betainc(a[None, :], a[:, None])
    return _table


def beta_leader_prob(leader: ArrayLike, runner_up: ArrayLike) -> NDArray[np.float64]:
    """``P(p > 1/2)`` for ``p ~ Beta(leader + 1, runner_up + 1)``, elementwise.

    ``P(p > 1/2) = 1 - I_{1/2}(a, b) = I_{1/2}(b, a)`` by the symmetry of the regularised
    incomplete beta function. Vote counts (integers below 2,048) are looked up in a table of
    that function, built once: replays ask it for millions of count pairs.
    """
    a = np.asarray(leader)
    b = np.asarray(runner_up)
    if a.dtype.kind in "iu" and b.dtype.kind in "iu" and a.size and b.size:
        top = int(max(a.max(), b.max()))
        if top < _TABLE_LIMIT and int(min(a.min(), b.min())) >= 0:
            return _beta_table(top + 1)[a, b]
    af = a.astype(np.float64) + 1.0
    bf = b.astype(np.float64) + 1.0
    return _betainc(bf, af)


@lru_cache(maxsize=8192)
def _gamma_draws(shape: int, position: int, draws: int, seed: int) -> NDArray[np.float32]:
    """``draws`` seeded Gamma(shape) variates for the class at ``position`` (0 = the leader).

    Every count vector reuses the same draws for the same (shape, position): common random numbers.
    A vector's estimate thus depends only on itself and the seed, whatever was computed before or
    in the same batch, and many vectors are estimated together at the cost of array lookups.
    """
    rng = np.random.default_rng([seed, position, shape])
    return rng.standard_gamma(float(shape), size=draws).astype(np.float32)


def _dirichlet_mc(counts: NDArray[np.int64], draws: int, seed: int) -> NDArray[np.float64]:
    """Monte Carlo P(class 0 has the largest Gamma) per row of ``counts`` (leader first, zero
    where a row has fewer classes; every row has at least three classes)."""
    out = np.empty(counts.shape[0], dtype=np.float64)
    # Per class position, the draws of each count that occurs there, gathered once.
    tables = []
    for j in range(counts.shape[1]):
        values, index = np.unique(counts[:, j], return_inverse=True)
        draws_of = np.stack(
            [
                _gamma_draws(int(v) + 1, j, draws, seed) if (v > 0 or j == 0) else _NONE_ROW(draws)
                for v in values.tolist()
            ]
        )
        tables.append((draws_of, index.reshape(-1)))
    for start in range(0, counts.shape[0], 256):
        stop = min(start + 256, counts.shape[0])
        lead_table, lead_index = tables[0]
        lead = lead_table[lead_index[start:stop]]
        best_other = np.zeros_like(lead)
        for table, index in tables[1:]:
            # A chain of maxima over the few classes (a reduction over a short axis is slower).
            np.maximum(best_other, table[index[start:stop]], out=best_other)
        out[start:stop] = np.count_nonzero(lead > best_other, axis=1) / draws
    return out


@lru_cache(maxsize=16)
def _NONE_ROW(draws: int) -> NDArray[np.float32]:
    """A class that is not there: never beats a Gamma draw (> 0)."""
    return np.zeros(draws, dtype=np.float32)


@lru_cache(maxsize=1 << 16)
def _one(kept: tuple[int, ...], draws: int, seed: int) -> float:
    return float(_estimate(np.array([kept], dtype=np.int64), draws, seed)[0])


def dirichlet_leader_prob_one(
    counts: tuple[int, ...], *, draws: int = 2000, seed: int = 0
) -> float:
    """Monte Carlo ``P(class 0 has the largest probability)`` under ``Dirichlet(counts + 1)``.

    ``counts`` are the leader's count first, then the other classes considered (zeros are dropped:
    a class never seen is not a candidate answer). One class alone: 1; two: exact (a Beta).
    Memoised per count vector.
    """
    kept = tuple(int(c) for c in counts[:1]) + tuple(int(c) for c in counts[1:] if c > 0)
    if len(kept) == 1:
        return 1.0
    if len(kept) == 2:
        # Two classes: the Dirichlet is a Beta, and the probability has a closed form.
        return float(beta_leader_prob(kept[0], kept[1]))
    return _one(kept, draws, seed)


def _estimate(counts: NDArray[np.int64], draws: int, seed: int) -> NDArray[np.float64]:
    """Monte Carlo estimates for rows of three or more classes, clipped to the exact bounds, so
    that skipping the Monte Carlo where a bound decides (:func:`dirichlet_leader_prob` with
    lo/hi) never changes a decision."""
    lower, upper = _bounds(counts)
    return np.clip(_dirichlet_mc(counts, draws, seed), lower, upper)


def _bounds(top: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Exact (lower, upper) bounds of P(class 0 is largest) per row of counts."""
    upper = beta_leader_prob(top[:, 0], top[:, 1])
    others = top[:, 1:]
    lose = np.where(others > 0, beta_leader_prob(others, top[:, :1]), 0.0)
    return np.maximum(1.0 - lose.sum(axis=1), 0.0), upper


def dirichlet_leader_prob(
    top: NDArray[np.int64],
    *,
    draws: int = 2000,
    seed: int = 0,
    lo: float | NDArray[np.float64] = -np.inf,
    hi: float = np.inf,
) -> NDArray[np.float64]:
    """:func:`dirichlet_leader_prob_one` per row of ``top`` (rows of counts, leader first).

    Values below ``lo`` may be returned as any value below ``lo``, values at or above ``hi`` as any
    value at or above ``hi``: a caller that only compares with thresholds in ``[lo, hi]`` gets exact
    decisions while rows that are far from every threshold skip the Monte Carlo (``lo`` may be
    one bound per row). The bounds used are exact: the probability is at most ``P(p_1 > p_2)`` (a
    Beta marginal of the Dirichlet) and at least ``1 - sum_j P(p_j > p_1)`` (the union bound).
    """
    top = np.asarray(top, dtype=np.int64)
    out = np.empty(top.shape[0], dtype=np.float64)
    if top.shape[0] == 0:
        return out
    lower, upper = _bounds(top)
    single = top[:, 1] == 0
    out[single] = 1.0
    below = ~single & (upper < lo)
    out[below] = upper[below]
    above = ~single & ~below & (lower >= hi)
    out[above] = lower[above]
    rest = np.flatnonzero(~single & ~below & ~above)
    if rest.size:
        # Many rows share a count vector (orderings of one problem, problems alike): one MC each.
        uniq, inverse = np.unique(top[rest], axis=0, return_inverse=True)
        values = np.empty(uniq.shape[0], dtype=np.float64)
        two = (uniq[:, 2] == 0) if uniq.shape[1] > 2 else np.ones(uniq.shape[0], dtype=bool)
        # Two classes: a Beta, exact; more: Monte Carlo.
        values[two] = beta_leader_prob(uniq[two, 0], uniq[two, 1])
        if (~two).any():
            values[~two] = _estimate(uniq[~two], draws, seed)
        out[rest] = values[inverse.reshape(-1)]
    return out
