"""The inference-time scaling law of coverage: ``coverage(k) = exp(a * k**b)``.

Brown et al. 2024 ("Large Language Monkeys") observe that coverage over k repeated samples follows an
exponentiated power law, ``log coverage(k) ≈ a * k**b`` with ``a < 0`` and ``b < 0``. Fitting it to the
coverage curve of a run gives a compact description of how fast extra samples pay off, and an (honestly
labelled) extrapolation to budgets that were never drawn.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ponder.errors import UserError

_MIN_POINTS = 4
"""Distinct k values the fit needs: two parameters plus at least two degrees of freedom for the CIs."""


@dataclass(frozen=True, eq=False)
class ScalingFit:
    """A fitted ``coverage(k) = exp(a * k**b)`` with its uncertainty and an out-of-sample check.

    ``eq=False``: the array fields make element-wise ``==`` meaningless for a whole fit.
    """

    a: float
    b: float
    a_ci: tuple[float, float]
    """Confidence interval of ``a`` (Wald, t distribution; see :func:`fit_scaling_law`)."""
    b_ci: tuple[float, float]
    r2: float
    """Coefficient of determination of the fit on log coverage of the fitted points (NaN if they are constant)."""
    k_fit: NDArray[np.float64]
    coverage_fit: NDArray[np.float64]
    """The observed coverage at ``k_fit``: the values the fit used."""
    holdout_k: NDArray[np.float64]
    holdout_observed: NDArray[np.float64]
    holdout_predicted: NDArray[np.float64]
    holdout_error: float
    """Mean absolute error, in coverage units, on the held-out k (NaN if nothing was held out)."""
    extrapolate_k: int
    """Ten times the largest observed k."""
    extrapolated: float
    """Predicted coverage at ``extrapolate_k``: an extrapolation, not a measurement."""
    holdout: int = 0
    """How many of the largest distinct k were held out (may be fewer than asked; see ``notes``)."""
    confidence: float = 0.95
    weighted: bool = True
    """Whether points were weighted by the binomial variance of log coverage."""
    notes: list[str] = field(default_factory=list)
    """What was dropped or adjusted on the way, in words."""

    def predict(self, k: ArrayLike) -> NDArray[np.float64]:
        """Coverage the fitted law predicts at ``k`` (``k > 0``), as an array."""
        return _law(np.asarray(k, dtype=np.float64), self.a, self.b)


def _law(k: NDArray[np.float64], a: float, b: float) -> NDArray[np.float64]:
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return np.asarray(np.exp(a * np.power(k, b)), dtype=np.float64)


def _log_law(k: NDArray[np.float64], a: float, b: float) -> NDArray[np.float64]:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(a * np.power(k, b), dtype=np.float64)


def _initial_guess(k: NDArray[np.float64], c: NDArray[np.float64]) -> tuple[float, float]:
    """Start values from the linearised law: ``log(-log c) = log(-a) + b log k`` (exact for clean data).

    Only points with ``0 < c < 1`` linearise; with fewer than two distinct such k, fall back to a typical
    curve (coverage 37% at k=1, decaying like ``k**-0.5``).
    """
    inner = (c > 0) & (c < 1)
    if np.unique(k[inner]).size < 2:
        return -1.0, -0.5
    slope, intercept = np.polyfit(np.log(k[inner]), np.log(-np.log(c[inner])), 1)
    return -math.exp(float(intercept)), float(slope)


def fit_scaling_law(
    k: ArrayLike,
    coverage: ArrayLike,
    *,
    holdout: int = 2,
    confidence: float = 0.95,
    weighted: bool = True,
) -> ScalingFit:
    """Fit ``log coverage(k) = a * k**b`` to a coverage curve, holding out the largest k to test it.

    Method: non-linear least squares (``scipy.optimize.curve_fit``, Levenberg-Marquardt) of ``log coverage``
    against ``a * k**b``, started from the linear fit of ``log(-log c)`` on ``log k``. Coverage is a share of
    problems, so its noise in log space is far from constant: by the delta method a binomial proportion has
    ``Var(log c) ∝ (1 - c) / c``, large at small k and vanishing near saturation. With ``weighted`` (the
    default) each point gets that relative variance (only relative: the scale is estimated from the
    residuals); points with coverage exactly 1, whose estimate would be 0, get half the smallest non-zero
    ``1 - c`` among the fitted points, so they count as the surest but cannot pin the curve. On simulated
    binomial coverage this brings the 95% intervals' coverage of the true parameters from about 77% (for
    ``a``, unweighted) to about 93%, and tightens the estimates. ``weighted=False`` is the plain fit.

    Confidence intervals are Wald intervals: ``estimate ± t_{(1+confidence)/2, m-2} * se``, with standard
    errors from the covariance matrix ``curve_fit`` returns (the inverse Gauss-Newton Hessian scaled by the
    weighted residual variance, ``absolute_sigma=False``; m the number of fitted points). They assume
    independent errors; the points of one real coverage curve are correlated (the same samples count at
    every k), so read them as indicative. R² is computed, unweighted, on log coverage of the fitted points.

    Input handling, recorded in ``notes``: points with NaN k or coverage (e.g. coverage undefined for
    k > n) are dropped; points with coverage 0 are dropped (``log 0`` is not finite). Holdout counts distinct
    k values; when holding out ``holdout`` of them would leave fewer than 4 to fit, fewer are held out.

    Args:
        k: sample budgets (> 0).
        coverage: observed coverage at each k, in [0, 1].
        holdout: how many of the largest distinct k to leave out of the fit and predict instead.
        confidence: level of the parameter confidence intervals, in (0, 1).
        weighted: weight points by the binomial variance of log coverage (see above).

    Raises:
        UserError: malformed input, or too little to fit: fewer than 4 distinct k with coverage > 0,
            coverage 0 everywhere, or coverage 1 at every fitted point.
    """
    k_arr = np.asarray(k, dtype=np.float64)
    c_arr = np.asarray(coverage, dtype=np.float64)
    if k_arr.ndim != 1 or c_arr.shape != k_arr.shape:
        raise UserError(
            f"k and coverage must be 1-D arrays of equal length (got shapes {k_arr.shape} and {c_arr.shape})"
        )
    if holdout < 0:
        raise UserError(f"holdout must be >= 0 (got {holdout})")
    if not 0.0 < confidence < 1.0:
        raise UserError(f"confidence must be in (0, 1) (got {confidence})")
    notes: list[str] = []

    undefined = np.isnan(k_arr) | np.isnan(c_arr)
    if undefined.any():
        notes.append(f"dropped {int(undefined.sum())} point(s) with undefined (NaN) k or coverage")
        k_arr, c_arr = k_arr[~undefined], c_arr[~undefined]
    if k_arr.size and (not np.all(np.isfinite(k_arr)) or np.any(k_arr <= 0)):
        raise UserError("every k must be a finite number > 0")
    if np.any(c_arr < 0) or np.any(c_arr > 1):
        raise UserError("coverage values must lie in [0, 1]")
    hint = "sample more per problem (ponder sample -n ...) so coverage is defined at more k"
    if np.unique(k_arr).size < _MIN_POINTS:
        raise UserError(
            f"a scaling law needs coverage at >= {_MIN_POINTS} distinct k; "
            f"{np.unique(k_arr).size} with defined coverage given",
            hint=hint,
        )
    if np.all(c_arr == 0):
        raise UserError(
            "coverage is 0 at every k: no problem was ever solved, so there is no curve to fit",
            hint="use an easier task or a stronger model, or draw more samples per problem",
        )
    zero = c_arr == 0
    if zero.any():
        notes.append(
            f"dropped {int(zero.sum())} point(s) with coverage 0 (k = "
            f"{', '.join(f'{v:g}' for v in k_arr[zero])}): log 0 is not finite"
        )
        k_arr, c_arr = k_arr[~zero], c_arr[~zero]
    distinct = np.unique(k_arr)
    if distinct.size < _MIN_POINTS:
        raise UserError(
            f"a scaling law needs >= {_MIN_POINTS} distinct k with coverage > 0; only {distinct.size} remain",
            hint=hint,
        )
    used_holdout = min(holdout, distinct.size - _MIN_POINTS)
    if used_holdout < holdout:
        notes.append(
            f"held out {used_holdout} k value(s) instead of {holdout}, "
            f"to keep {_MIN_POINTS} distinct k for fitting"
        )
    cut = distinct[distinct.size - used_holdout] if used_holdout else np.inf
    fit_mask = k_arr < cut
    order = np.argsort(k_arr, kind="stable")
    k_arr, c_arr, fit_mask = k_arr[order], c_arr[order], fit_mask[order]
    k_fit, c_fit = k_arr[fit_mask], c_arr[fit_mask]
    k_hold, c_hold = k_arr[~fit_mask], c_arr[~fit_mask]
    if np.all(c_fit == 1):
        raise UserError(
            "coverage is 1 at every fitted k: log coverage is 0 throughout, which the law reaches only as "
            "a -> 0, so a and b are not identifiable",
            hint="the task is saturated at these k; fit over smaller k, or use a harder task",
        )

    # Imported here: only a fit needs scipy, not every CLI start. scipy.special's t quantile
    # instead of scipy.stats, which alone takes ~0.9 s to import.
    from scipy import optimize, special

    y = np.log(c_fit)
    p0 = _initial_guess(k_fit, c_fit)
    sigma: NDArray[np.float64] | None = None
    if weighted:
        miss = 1.0 - c_fit
        miss = np.where(miss > 0, miss, miss[miss > 0].min() / 2)
        sigma = np.sqrt(miss / c_fit)
    with warnings.catch_warnings():
        # An un-estimable covariance is reported through NaN intervals (and a note) instead.
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        try:
            popt, pcov = optimize.curve_fit(_log_law, k_fit, y, p0=p0, sigma=sigma, maxfev=20_000)
        except RuntimeError as exc:
            raise UserError(
                f"the scaling law did not converge on these points ({exc})",
                hint="check that coverage rises with k; the law cannot describe a falling or flat curve",
            ) from None
    a, b = float(popt[0]), float(popt[1])

    m = k_fit.size
    se = np.sqrt(np.diag(pcov)) if np.all(np.isfinite(pcov)) else np.full(2, np.nan)
    if m <= 2 or np.any(np.isnan(se)):
        notes.append("parameter covariance could not be estimated; confidence intervals are NaN")
        a_ci = b_ci = (math.nan, math.nan)
    else:
        t = float(special.stdtrit(m - 2, 0.5 + confidence / 2))
        a_ci = (a - t * float(se[0]), a + t * float(se[0]))
        b_ci = (b - t * float(se[1]), b + t * float(se[1]))

    resid = y - _log_law(k_fit, a, b)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else math.nan

    predicted = _law(k_hold, a, b)
    holdout_error = float(np.mean(np.abs(predicted - c_hold))) if k_hold.size else math.nan
    extrapolate_k = round(10 * float(k_arr.max()))
    return ScalingFit(
        a=a,
        b=b,
        a_ci=a_ci,
        b_ci=b_ci,
        r2=r2,
        k_fit=k_fit,
        coverage_fit=c_fit,
        holdout_k=k_hold,
        holdout_observed=c_hold,
        holdout_predicted=predicted,
        holdout_error=holdout_error,
        extrapolate_k=extrapolate_k,
        extrapolated=float(_law(np.array([extrapolate_k], dtype=np.float64), a, b)[0]),
        holdout=used_holdout,
        confidence=confidence,
        weighted=weighted,
        notes=notes,
    )
