"""Coverage curves: the unbiased coverage@k over a grid of k, with a bootstrap confidence band."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ponder.analysis._data import RunData
from ponder.analysis._passk import pass_at_k_matrix


@dataclass(frozen=True, eq=False)
class Curve:
    """A metric over a grid of k, e.g. coverage@k or majority@k.

    ``eq=False``: the fields are arrays, so equality and hashing are by identity.
    """

    name: str
    k: NDArray[np.int64]
    mean: NDArray[np.float64]
    """The estimate per k; NaN where undefined (some problem has fewer than k samples)."""
    lo: NDArray[np.float64]
    """Lower end of the confidence band per k; NaN where undefined or when no band was computed."""
    hi: NDArray[np.float64]
    """Upper end of the confidence band per k; NaN where undefined or when no band was computed."""


def k_grid_log(n_max: int, points: int = 20) -> NDArray[np.int64]:
    """About ``points`` log-spaced whole numbers from 1 to ``n_max``, both ends included.

    Rounding merges neighbours at the low end, so fewer than ``points`` values can come back.
    """
    if n_max < 1:
        raise ValueError(f"k_grid_log needs n_max >= 1, got {n_max}")
    if points < 1:
        raise ValueError(f"k_grid_log needs points >= 1, got {points}")
    grid = np.rint(np.geomspace(1, n_max, max(points, 2))).astype(np.int64)
    return np.union1d(grid, np.array([1, n_max], dtype=np.int64))


def default_k_grid(data: RunData, points: int = 20) -> NDArray[np.int64]:
    """A log grid up to the smallest per-problem sample count, where every curve is defined.

    A run with no problems, or with a problem that has no verified samples, gets ``[1]`` (and its
    curves are NaN there: undefined, not zero).
    """
    n = data.n_per_problem()
    return k_grid_log(max(1, int(n.min())) if n.size else 1, points)


def as_k_array(ks: ArrayLike) -> NDArray[np.int64]:
    """Validate a grid of k: a 1-D array of whole numbers >= 1."""
    arr = np.atleast_1d(np.asarray(ks))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("ks must be a non-empty 1-D sequence of integers")
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise ValueError(f"ks must be whole numbers, got {arr!r}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"ks must be integers, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if np.any(out < 1):
        raise ValueError(f"ks must be >= 1, got {out!r}")
    return out


def per_problem_pass_at_k(data: RunData, ks: ArrayLike) -> NDArray[np.float64]:
    """Unbiased pass@k per problem and k, ``[P, K]``; NaN where a problem has fewer than k samples."""
    return pass_at_k_matrix(data.n_per_problem(), data.c_per_problem(), as_k_array(ks))


def coverage_curve(
    data: RunData,
    ks: ArrayLike | None = None,
    *,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Curve:
    """Coverage@k: the mean over problems of the unbiased pass@k.

    It estimates the probability that one of k fresh samples is correct, averaged over the run's
    problems; it is not the share solved by the first k stored samples (which is noisier). At any k
    where some problem has fewer than k verified samples the curve is NaN: undefined, not clipped.

    Args:
        data: the run.
        ks: the grid of k; default :func:`default_k_grid`.
        bootstrap: resamples of the problems (with replacement) for the band; 0 for no band
            (``lo`` and ``hi`` are then NaN).
        confidence: the band's coverage probability, a percentile interval.
        seed: seeds the bootstrap.
    """
    k = default_k_grid(data) if ks is None else as_k_array(ks)
    mean, lo, hi = mean_with_band(per_problem_pass_at_k(data, k), bootstrap, confidence, seed)
    return Curve(name="coverage", k=k, mean=mean, lo=lo, hi=hi)


def samples_to_reach(curve: Curve, target: float) -> int | None:
    """The smallest k on the curve's grid whose estimate reaches ``target``; None if none does."""
    hit = np.flatnonzero(np.nan_to_num(curve.mean, nan=-np.inf) >= target)
    return int(curve.k[hit[0]]) if hit.size else None


def mean_with_band(
    values: NDArray[np.float64], bootstrap: int, confidence: float, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Mean over problems (axis 0) of ``values [P, K]`` and a percentile bootstrap band.

    The bootstrap resamples problems with replacement, all at once: a ``[B, P]`` matrix of how often
    each problem was drawn, times the ``[P, K]`` values. A column with any NaN (undefined at that k)
    stays NaN in mean, lo and hi.
    """
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    p, kk = values.shape
    nan = np.full(kk, np.nan)
    if p == 0:
        return nan, nan.copy(), nan.copy()
    mean = values.mean(axis=0)
    lo, hi = nan.copy(), nan.copy()
    defined = ~np.isnan(mean)
    if bootstrap and defined.any():
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, p, size=(bootstrap, p))
        rows = np.repeat(np.arange(bootstrap), p)
        weights = np.bincount(rows * p + draws.ravel(), minlength=bootstrap * p)
        boot = weights.reshape(bootstrap, p).astype(np.float64) @ values[:, defined] / p
        alpha = (1.0 - confidence) / 2.0
        lo[defined], hi[defined] = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    return mean, lo, hi
