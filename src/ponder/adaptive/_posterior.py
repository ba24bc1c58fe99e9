"""Posterior probabilities that the leading answer is the right one to stop on.

* :func:`beta_leader_prob`: with ``a`` votes for the leader and ``b`` for the runner-up, the
  probability that the leader's underlying share of the two exceeds one half, under a uniform
  prior: ``P(p > 1/2)`` for ``p ~ Beta(a + 1, b + 1)`` (the Beta rule of Adaptive-Consistency).
  Exact (the regularised incomplete beta function), vectorised.
* :func:`dirichlet_leader_prob`: with counts ``c_1 >= c_2 >= ...`` of the largest classes, the
  probability that class 1 has the largest underlying probability under ``Dirichlet(c_i + 1)``.
  No closed form: Monte Carlo with a seed derived from the counts themselves, so a count vector
  always gets the same value whatever else was computed before, memoised per count vector; exact
  pairwise bounds skip the Monte Carlo where the caller's thresholds cannot be affected (estimates
  are clipped to those bounds, so that skipping never changes a decision).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import betainc


def beta_leader_prob(leader: ArrayLike, runner_up: ArrayLike) -> NDArray[np.float64]:
    """``P(p > 1/2)`` for ``p ~ Beta(leader + 1, runner_up + 1)``, elementwise.

    ``P(p > 1/2) = 1 - I_{1/2}(a, b) = I_{1/2}(b, a)`` by the symmetry of the regularised
    incomplete beta function.
    """
    a = np.asarray(leader, dtype=np.float64) + 1.0
    b = np.asarray(runner_up, dtype=np.float64) + 1.0
    return np.asarray(betainc(b, a, 0.5), dtype=np.float64)


@lru_cache(maxsize=1 << 18)
def _dirichlet_mc(counts: tuple[int, ...], draws: int, seed: int) -> float:
    alpha = np.asarray(counts, dtype=np.float64) + 1.0
    rng = np.random.default_rng([seed, *counts])
    gammas = rng.standard_gamma(alpha, size=(draws, alpha.shape[0]))
    # Class 0 is largest when it beats every other class; ties have probability zero. (A chain
    # of maxima over the few columns: a reduction along rows this short is ~10x slower.)
    best_other = gammas[:, 1]
    for j in range(2, alpha.shape[0]):
        best_other = np.maximum(best_other, gammas[:, j])
    return np.count_nonzero(gammas[:, 0] > best_other) / draws


def dirichlet_leader_prob_one(
    counts: tuple[int, ...], *, draws: int = 2000, seed: int = 0
) -> float:
    """Monte Carlo ``P(class 0 has the largest probability)`` under ``Dirichlet(counts + 1)``.

    ``counts`` are the leader's count first, then the other classes considered (zeros are dropped:
    a class never seen is not a candidate answer). One class alone: 1; two: exact (a Beta).
    """
    kept = tuple(int(c) for c in counts[:1]) + tuple(int(c) for c in counts[1:] if c > 0)
    if len(kept) == 1:
        return 1.0
    if len(kept) == 2:
        # Two classes: the Dirichlet is a Beta, and the probability has a closed form.
        return float(beta_leader_prob(kept[0], kept[1]))
    lower, upper = _bounds(np.asarray([kept], dtype=np.int64))
    # Kept within the exact bounds, so that skipping the Monte Carlo where a bound decides
    # (dirichlet_leader_prob with lo/hi) never changes a decision.
    return float(np.clip(_dirichlet_mc(kept, draws, seed), lower[0], upper[0]))


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
        values = np.array(
            [dirichlet_leader_prob_one(tuple(row), draws=draws, seed=seed) for row in uniq.tolist()]
        )
        out[rest] = values[inverse.reshape(-1)]
    return out
