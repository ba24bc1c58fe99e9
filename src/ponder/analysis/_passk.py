"""The unbiased pass@k estimator and empirical coverage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray


def pass_at_k(n: ArrayLike, c: ArrayLike, k: ArrayLike) -> NDArray[np.float64] | float:
    """Unbiased pass@k (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)``, vectorised.

    Computed as a sum of ``log1p`` terms, stable for n up to 10,000 and beyond. Where fewer than
    k samples exist (``n < k``) the estimate is undefined and NaN is returned, never 0.

    Args:
        n: samples per problem.
        c: correct samples per problem (``0 <= c <= n``).
        k: the budget.

    Returns:
        A float for scalar inputs, else an array broadcast over the inputs.
    """
    n_arr, c_arr, k_arr = np.broadcast_arrays(
        np.asarray(n, dtype=np.float64),
        np.asarray(c, dtype=np.float64),
        np.asarray(k, dtype=np.float64),
    )
    if np.any(c_arr < 0) or np.any(c_arr > n_arr) or np.any(k_arr < 1):
        raise ValueError("pass_at_k needs 0 <= c <= n and k >= 1")
    out = np.full(n_arr.shape, np.nan)
    defined = n_arr >= k_arr
    certain = defined & (n_arr - c_arr < k_arr)
    out[certain] = 1.0
    rest = defined & ~certain
    # Chen et al.'s product form, 1 - prod_{i=n-c+1}^{n} (1 - k/i): no factorials, no overflow, and the
    # same arithmetic as the reference implementation. Summing log1p terms keeps it stable for large n.
    for idx in np.argwhere(rest):
        t = tuple(idx)
        nn, cc, kk = n_arr[t], c_arr[t], k_arr[t]
        i = np.arange(nn - cc + 1, nn + 1)
        out[t] = 0.0 - np.expm1(np.sum(np.log1p(-kk / i)))
    if out.ndim == 0:
        return float(out)
    return out


def coverage_at_k(first_correct: Sequence[int | None], n: Sequence[int], k: int) -> float:
    """Empirical coverage: the share of problems solved by one of their first ``k`` samples.

    ``first_correct[i]`` is the index of problem i's first correct sample (None if none). Problems with fewer
    than k samples make coverage undefined (NaN).
    """
    if any(m < k for m in n):
        return float("nan")
    if not first_correct:
        return float("nan")
    return sum(1 for f in first_correct if f is not None and f < k) / len(first_correct)


def k_grid(n: int) -> list[int]:
    """k = 1, 2, 4, ... up to n, always ending at n."""
    ks = []
    k = 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks
