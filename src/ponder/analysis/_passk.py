"""The unbiased pass@k estimator, coverage@k (its mean over problems) and the first-k share."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray


def pass_at_k(n: ArrayLike, c: ArrayLike, k: ArrayLike) -> NDArray[np.float64] | float:
    """Unbiased pass@k (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)``, vectorised.

    The estimate of the probability that at least one of k samples is correct, given c correct among
    n samples. Inputs broadcast against each other; distinct values of k are handled in groups, so
    a call over many problems and a few k costs about as much as a few cumulative sums.

    How it stays exact to ~1e-13 for n up to 10,000 and beyond: the failure probability is Chen et
    al.'s product ``prod_{i=n-c+1}^{n} (1 - k/i)``, taken in log space as a sum of ``log1p(-k/i)``
    (no factorials, nothing overflows or underflows before the final ``expm1``). For each distinct
    k the terms are prefix-summed once, ``S[j] = sum_{i<=j} log1p(-k/i)``, and an element's sum is
    ``S[n] - S[n-c]``. The prefix sums can be ~``log C(n, k)`` in size (thousands) while their
    difference is small; in plain doubles the subtraction would cancel most of the significant
    digits, so the prefix sums are kept in double-double arithmetic (an error-free, vectorised
    parallel scan) and the difference loses nothing. The only error left is that of the individual
    ``log1p`` terms, which is what the reference product has too. Where few elements share a k,
    their terms are summed directly instead, which is cheaper than a prefix sum over all of 1..n.

    Args:
        n: samples per problem.
        c: correct samples per problem (``0 <= c <= n``).
        k: the budget (``k >= 1``).

    Returns:
        A float for scalar inputs, else an array broadcast over the inputs. NaN where ``n < k``
        (undefined: there are not k samples; never reported as 0), 1.0 where ``n - c < k``.

    Raises:
        ValueError: a count is negative, not a whole number, ``c > n`` or ``k < 1``.
    """
    n_arr, c_arr, k_arr = np.broadcast_arrays(_counts(n, "n"), _counts(c, "c"), _counts(k, "k"))
    if np.any(c_arr < 0) or np.any(c_arr > n_arr) or np.any(k_arr < 1):
        raise ValueError("pass_at_k needs 0 <= c <= n and k >= 1")
    out = np.full(n_arr.shape, np.nan)
    defined = n_arr >= k_arr
    out[defined & (c_arr == 0)] = 0.0
    certain = defined & (n_arr - c_arr < k_arr)
    out[certain] = 1.0
    rest = defined & ~certain & (c_arr > 0)
    if rest.any():
        out[rest] = -np.expm1(_log_all_fail(n_arr[rest], n_arr[rest] - c_arr[rest], k_arr[rest]))
    if out.ndim == 0:
        return float(out)
    return out


def pass_at_k_matrix(n: ArrayLike, c: ArrayLike, ks: ArrayLike) -> NDArray[np.float64]:
    """pass@k for every problem and every k: an array ``[P, K]`` from ``n[P]``, ``c[P]``, ``ks[K]``.

    NaN where a problem has fewer than k samples; see :func:`pass_at_k`.
    """
    n_arr, c_arr, k_arr = (np.asarray(x) for x in (n, c, ks))
    if n_arr.ndim != 1 or c_arr.ndim != 1 or k_arr.ndim != 1 or n_arr.shape != c_arr.shape:
        raise ValueError("pass_at_k_matrix needs 1-D n and c of equal length and a 1-D ks")
    out = pass_at_k(n_arr[:, None], c_arr[:, None], k_arr[None, :])
    return np.asarray(out, dtype=np.float64).reshape(n_arr.shape[0], k_arr.shape[0])


def _counts(x: ArrayLike, name: str) -> NDArray[np.int64]:
    """Whole-number counts as int64; float input must hold whole numbers."""
    arr = np.asarray(x)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"pass_at_k needs whole-number counts, got {name}={x!r}")
        return arr.astype(np.int64)
    raise ValueError(f"pass_at_k needs numeric counts, got {name} of dtype {arr.dtype}")


def _log_all_fail(
    n: NDArray[np.int64], m: NDArray[np.int64], k: NDArray[np.int64]
) -> NDArray[np.float64]:
    """``log(C(m, k) / C(n, k)) = sum_{i=m+1}^{n} log1p(-k/i)`` per element, for ``k <= m < n``."""
    out = np.empty(n.shape, dtype=np.float64)
    direct = np.zeros(n.shape, dtype=np.bool_)
    uniq, inv = np.unique(k, return_inverse=True)
    for j, kk in enumerate(uniq.tolist()):
        sel = inv == j
        top = int(n[sel].max())
        length = top - kk + 1
        # A prefix sum over kk..top costs about length * log2(length) operations; summing each
        # element's own terms costs the sum of their c. Take the cheaper.
        scan_cost = 4 * length * max(1, math.ceil(math.log2(length)))
        if int((n[sel] - m[sel]).sum()) <= scan_cost:
            direct |= sel
            continue
        i = np.arange(kk + 1, top + 1, dtype=np.float64)
        terms = np.concatenate(([0.0], np.log1p(-kk / i)))  # index j <-> S[kk + j], S[kk] = 0
        hi, lo = _dd_cumsum(terms)
        a, b = n[sel] - kk, m[sel] - kk
        out[sel] = (hi[a] - hi[b]) + (lo[a] - lo[b])
    if direct.any():
        out[direct] = _direct_sums(n[direct], m[direct], k[direct])
    return out


def _direct_sums(
    n: NDArray[np.int64], m: NDArray[np.int64], k: NDArray[np.int64]
) -> NDArray[np.float64]:
    """``sum_{i=m+1}^{n} log1p(-k/i)`` per element, all terms in one flat array (requires m < n)."""
    lengths = n - m
    starts = np.cumsum(lengths) - lengths
    # i runs m+1..n within each element's segment of the flat array.
    i = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(m + 1 - starts, lengths)
    terms = np.log1p(-np.repeat(k, lengths) / i)
    return np.add.reduceat(terms, starts)


def _dd_cumsum(t: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Inclusive prefix sums of ``t`` in double-double arithmetic: ``hi + lo`` per position.

    A Hillis-Steele scan (log2(len) vectorised steps); each step adds two double-double numbers
    with Knuth's TwoSum, so the rounding error is ~1e-32 relative instead of ~1e-16.
    """
    hi = t.astype(np.float64, copy=True)
    lo = np.zeros_like(hi)
    d = 1
    while d < hi.shape[0]:
        a, b = hi[d:], hi[:-d]
        s = a + b
        bb = s - a
        err = (a - (s - bb)) + (b - bb) + (lo[d:] + lo[:-d])
        new_hi = s + err
        new_lo = err - (new_hi - s)
        hi[d:] = new_hi
        lo[d:] = new_lo
        d *= 2
    return hi, lo


def coverage_at_k(n: ArrayLike, c: ArrayLike, k: int) -> float:
    """Coverage@k: the mean over problems of the unbiased pass@k (:func:`pass_at_k`).

    The estimated share of problems that one of k fresh samples solves. This is the one meaning of
    coverage@k in Ponder (the report's curve, ``ponder sample`` and ``ponder show``); the share solved
    by the *first* k stored samples is :func:`solved_by_first_k`. NaN when there are no problems or
    some problem has fewer than k samples (undefined, not clipped).

    Args:
        n: samples per problem.
        c: correct samples per problem.
        k: the budget.
    """
    values = np.atleast_1d(np.asarray(pass_at_k(n, c, k), dtype=np.float64))
    return float(values.mean()) if values.size else float("nan")


def solved_by_first_k(first_correct: Sequence[int | None], n: Sequence[int], k: int) -> float:
    """The share of problems solved by one of their first ``k`` samples (an empirical count).

    Noisier than :func:`coverage_at_k`, which averages over every k-subset of the samples; at
    ``k = n`` the two agree. ``first_correct[i]`` is the position of problem i's first correct sample
    (None if none). NaN when there are no problems or some problem has fewer than k samples.
    """
    if not first_correct or any(m < k for m in n):
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
