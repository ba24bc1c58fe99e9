"""Selection@k: how often a way of picking one answer from k samples picks a correct one.

For each k and problem the methods are applied to ``subsets`` random k-subsets of the problem's n
samples (drawn without replacement, never "the first k") and the success indicator is averaged;
the curve is the mean over problems. Methods:

* ``majority``: the most frequent extracted answer in the subset wins; unparsed answers (None)
  never win; ties are broken uniformly at random. No parsed answer in the subset is a failure.
* ``weighted``: like majority, but each sample votes with weight ``exp(score)`` (for mean token
  log-probabilities: the geometric-mean token probability). A sample without a score (NaN) votes
  with the weight of the problem's lowest real score; if a problem has no scores at all, every
  sample votes with weight 1 and this is plain majority.
* ``best_of``: the sample with the highest score is picked; ties at random (counted as the tied
  samples' mean correctness, the expectation of the random pick); NaN scores rank below every real
  score (if all are NaN the pick is random).
* ``oracle``: success if any sample in the subset is correct; its expectation is pass@k.

Answers are grouped by exact string equality of the extracted answer. An answer's correctness is
the share of correct samples among those carrying it (0 or 1 when, as expected, equal answers get
equal verdicts), so a success "indicator" can be fractional. Turning answers into class ids is a
Python-level pass over every sample; it is done once per :class:`RunData` object and reused.

How it is fast enough for 1,000 problems x 10,000 samples: a subset never gets materialised
sample by sample. For the voting methods and the oracle, each problem's samples are put in a
random order once (a few independent orders when n is small) and a k-subset is the window of k
consecutive positions, cyclically, starting at a uniformly random offset. For any fixed window a
uniformly random order makes its samples a uniformly random k-subset, so every subset has exactly
the right distribution; per-class vote counts and vote weights in a window are differences of
prefix sums. The subsets of one problem share an order, so they are not independent of each
other, only exchangeable: the estimate is unbiased, its Monte Carlo error at large k somewhat
larger than with independent subsets. ``best_of`` needs no windows: with the samples ranked by
score, the best of a random k-subset is the first chosen rank, whose distribution,
``P(rank >= r) = C(n-r, k) / C(n, k)``, is sampled exactly by inversion.

Majority, weighted and oracle use the same subsets for the same seed, so per subset (and hence
per problem) majority and weighted never exceed the oracle.
"""

from __future__ import annotations

import itertools
import math
import weakref
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ponder.analysis._curves import Curve, as_k_array, default_k_grid, mean_with_band
from ponder.analysis._data import ProblemSamples, RunData

Method = Literal["majority", "weighted", "best_of", "oracle"]
METHODS: tuple[Method, ...] = get_args(Method)

# Elements of the largest working array per batch of problems (prefix sums, windows, sort keys).
_BATCH_ELEMENTS = 1 << 22
# With n samples, use enough independent random orders that they hold ~this many positions in all,
# so that small problems (where a few orders give few distinct windows) get independent subsets.
_ORDER_POSITIONS = 4096
# Relative cost of one prefix-sum element against reading one sample of a window, in the choice
# between the two ways of answering window queries (0 always picks prefix sums, inf never).
_PREFIX_COST = 1.0


def selection_curve(
    data: RunData,
    method: Method,
    ks: ArrayLike | None = None,
    *,
    subsets: int = 100,
    seed: int = 0,
    bootstrap: int = 0,
    confidence: float = 0.95,
) -> Curve:
    """Selection@k for one method: the mean over problems of its success rate on random k-subsets.

    Args:
        data: the run.
        method: ``"majority"``, ``"weighted"``, ``"best_of"`` or ``"oracle"`` (see the module doc).
        ks: the grid of k; default :func:`ponder.analysis._curves.default_k_grid`.
        subsets: random k-subsets per problem and k.
        seed: seeds the subsets, the tie-breaks and the bootstrap; same seed, same curve.
        bootstrap: resamples of the problems for a confidence band; 0 (default) for none, and then
            ``lo`` and ``hi`` are NaN.
        confidence: the band's coverage probability.

    Returns:
        A :class:`Curve` named after the method; NaN at any k where a problem has fewer than k
        verified samples (undefined, not clipped).
    """
    k = default_k_grid(data) if ks is None else as_k_array(ks)
    values = per_problem_selection(data, method, k, subsets=subsets, seed=seed)
    mean, lo, hi = mean_with_band(values, bootstrap, confidence, seed)
    return Curve(name=method, k=k, mean=mean, lo=lo, hi=hi)


def per_problem_selection(
    data: RunData, method: Method, ks: ArrayLike, *, subsets: int = 100, seed: int = 0
) -> NDArray[np.float64]:
    """Per problem and k, ``[P, K]``: the method's mean success over ``subsets`` random k-subsets.

    NaN where the problem has fewer than k samples.
    """
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; choose one of {', '.join(METHODS)}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    k = as_k_array(ks)
    if method == "best_of":
        return _best_of(data, k, subsets, seed)
    return _windowed(data, method, k, subsets, seed)


def gap_to_coverage(selection: Curve, coverage: Curve) -> NDArray[np.float64]:
    """``coverage.mean - selection.mean`` per k: how much a perfect verifier would add.

    Raises:
        ValueError: the curves are on different grids of k.
    """
    if not np.array_equal(selection.k, coverage.k):
        raise ValueError("gap_to_coverage needs two curves on the same grid of k")
    return coverage.mean - selection.mean


# --- encoding -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    """One problem's samples as arrays: what the voting methods need."""

    ids: NDArray[np.int32]
    """Answer class per sample, 0..classes-1; -1 for unparsed (None) answers, which never vote."""
    class_correct: NDArray[np.float64]
    """Per class, the share of its samples that are correct."""
    weights: NDArray[np.float64]
    """Per sample, its weight in weighted voting (> 0, or 0 for a score of -inf)."""

    @property
    def classes(self) -> int:
        return int(self.class_correct.shape[0])


# Turning answer strings into class ids is a Python-level pass over every sample, the slowest step
# for large runs; keep it per RunData (which is immutable) for as long as the RunData lives.
_encoded_cache: dict[int, tuple[weakref.ref[RunData], list[_Encoded]]] = {}


def _encoded(data: RunData) -> list[_Encoded]:
    key = id(data)
    hit = _encoded_cache.get(key)
    if hit is not None and hit[0]() is data:
        return hit[1]
    encoded = [_encode(p) for p in data.problems]
    try:
        ref = weakref.ref(data)
    except TypeError:  # not weak-referenceable (e.g. a slotted subclass): no caching
        return encoded
    _encoded_cache[key] = (ref, encoded)
    weakref.finalize(data, _encoded_cache.pop, key, None)
    return encoded


def _encode(p: ProblemSamples) -> _Encoded:
    # One pass in C: each sample gets the index of its answer's first occurrence; then a lookup
    # table turns those into dense class ids in order of first occurrence (None -> -1).
    first_seen: dict[str | None, int] = {}
    first = np.fromiter(
        map(first_seen.setdefault, p.answers, itertools.count()), dtype=np.int64, count=p.n
    )
    first_seen.pop(None, None)
    classes = len(first_seen)
    lookup = np.full(p.n, -1, dtype=np.int32)
    lookup[np.fromiter(first_seen.values(), dtype=np.int64, count=classes)] = np.arange(
        classes, dtype=np.int32
    )
    ids = lookup[first]
    parsed = ids >= 0
    sizes = np.bincount(ids[parsed], minlength=classes)
    right = np.bincount(
        ids[parsed], weights=p.correct[parsed].astype(np.float64), minlength=classes
    )
    class_correct = right / np.maximum(sizes, 1)
    return _Encoded(ids=ids, class_correct=class_correct, weights=_vote_weights(p.scores))


def _vote_weights(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """``exp(score)``, scaled by the problem's top weight (argmax of sums is scale-free)."""
    real = ~np.isnan(scores)
    if not real.any():
        return np.ones(scores.shape[0])
    s = np.clip(scores, -1e300, 1e300)  # keep +-inf out of the subtraction below
    top, floor = s[real].max(), s[real].min()
    return np.exp(np.where(real, s, floor) - top)


# --- voting and oracle: windows of random orders ------------------------------------------------


def _windowed(
    data: RunData, method: Method, ks: NDArray[np.int64], subsets: int, seed: int
) -> NDArray[np.float64]:
    n_all = data.n_per_problem()
    out = np.full((n_all.shape[0], ks.shape[0]), np.nan)
    voting = method != "oracle"
    encoded = _encoded(data) if voting else []
    for n in np.unique(n_all[n_all > 0]).tolist():
        members = np.flatnonzero(n_all == n)
        cols = [j for j, k in enumerate(ks.tolist()) if k <= n]
        if not cols:
            continue
        orders = min(subsets, max(1, math.ceil(_ORDER_POSITIONS / n)))
        classes = max([1, *(encoded[i].classes for i in members)]) if voting else 1
        # Prefix sums cost orders*(n+1)*classes per problem once; reading windows element by
        # element costs subsets*k per problem and k. Many answer classes favour the latter.
        window_cost = subsets * sum(int(ks[j]) for j in cols)
        dense = _PREFIX_COST * orders * (n + 1) * classes <= window_cost
        per_problem = (
            orders * (n + 1) * classes if dense else subsets * max(int(ks[j]) for j in cols)
        )
        batch = max(1, _BATCH_ELEMENTS // per_problem)
        # Streams depend on (seed, n, k) only, not on the method or on how problems are batched,
        # so majority, weighted and oracle see the same subsets.
        order_rng = np.random.default_rng([seed, 0, n])
        k_rngs = {j: np.random.default_rng([seed, 1, n, int(ks[j])]) for j in cols}
        offsets = {j: k_rngs[j].integers(0, n, size=(members.shape[0], subsets)) for j in cols}
        for start in range(0, members.shape[0], batch):
            chunk = members[start : start + batch]
            windows = _Windows(
                n=n,
                orders=orders,
                subsets=subsets,
                perm=_random_orders(order_rng, chunk.shape[0] * orders, n),
                problems=[data.problems[i] for i in chunk],
                encoded=[encoded[i] for i in chunk] if voting else None,
                classes=classes,
                weighted=method == "weighted",
                dense=dense,
            )
            for j in cols:
                off = offsets[j][start : start + batch]
                k = int(ks[j])
                if not voting:
                    success = (windows.correct_in(off, k) > 0).astype(np.float64)
                else:
                    present, votes = windows.votes(off, k)
                    # Drawn window-major, so the stream does not depend on the batching.
                    tie_keys = k_rngs[j].random((*off.shape, classes)).transpose(2, 0, 1)
                    # Weight sums come from differences of prefix sums (<= n, as weights are
                    # <= 1): equal up to their rounding error counts as a tie.
                    tol = 16 * np.finfo(np.float64).eps * n if method == "weighted" else 0.0
                    success = _pick(votes, present, windows.class_correct, tie_keys, tol)
                out[chunk, j] = success.mean(axis=1)
    return out


def _random_orders(rng: np.random.Generator, rows: int, n: int) -> NDArray[np.int32]:
    """``rows`` independent uniformly random permutations of ``range(n)``."""
    perm = np.broadcast_to(np.arange(n, dtype=np.int32), (rows, n)).copy()
    return rng.permuted(perm, axis=1, out=perm)


class _Windows:
    """A batch of problems with equal n, their samples in random orders, ready for window queries.

    Row ``g * orders + r`` holds order r of problem g; subset s of problem g uses order
    ``s % orders``. With ``dense``, windows are answered from prefix sums; else by reading the
    window's samples. Per-class arrays put the class first, ``[classes, ...]``, so that each
    class's prefix sums run along contiguous memory.
    """

    def __init__(
        self,
        *,
        n: int,
        orders: int,
        subsets: int,
        perm: NDArray[np.int32],
        problems: list[ProblemSamples],
        encoded: list[_Encoded] | None,
        classes: int,
        weighted: bool,
        dense: bool,
    ) -> None:
        g = len(problems)
        self.n, self.classes, self.dense = n, classes, dense
        self.row = np.arange(g)[:, None] * orders + (np.arange(subsets) % orders)[None, :]
        # Flat index of (row, position 0) in a [rows, n + 1] prefix-sum array.
        self.base = self.row * (n + 1)

        def ordered(per_problem: list[NDArray]) -> NDArray:
            return np.take_along_axis(np.repeat(np.stack(per_problem), orders, axis=0), perm, 1)

        self.correct: NDArray[np.bool_] | None = None
        self.ids: NDArray[np.int32] | None = None
        self.weights: NDArray[np.float64] | None = None
        self.class_correct = np.zeros((g, classes))
        # Weighted voting can tell whether a class is in a window from its weight sum alone (an
        # absent class sums to exactly 0.0) as long as every weight is well above the rounding
        # error of the prefix sums, ~1e-16 * n (weights are <= 1); else it also counts votes.
        self.presence_by_weight = False
        if encoded is None:
            self.correct = ordered([p.correct for p in problems])
        else:
            self.ids = ordered([e.ids for e in encoded])
            if weighted:
                self.weights = ordered([e.weights for e in encoded])
                self.presence_by_weight = bool(self.weights.min() > 1e-12 * n)
            for i, e in enumerate(encoded):
                self.class_correct[i, : e.classes] = e.class_correct
        if dense:
            self._build_prefix_sums()

    def _build_prefix_sums(self) -> None:
        if self.correct is not None:
            rows = self.correct.shape[0]
            self.pre_correct = np.zeros((rows, self.n + 1), dtype=np.int32)
            np.cumsum(self.correct, axis=1, dtype=np.int32, out=self.pre_correct[:, 1:])
            return
        assert self.ids is not None
        rows = self.ids.shape[0]
        if not self.presence_by_weight:
            self.pre_counts = np.zeros((self.classes, rows, self.n + 1), dtype=np.int32)
        if self.weights is not None:
            self.pre_weights = np.zeros((self.classes, rows, self.n + 1))
        # One class at a time: the temporaries stay small.
        for c in range(self.classes):
            member = self.ids == c
            if not self.presence_by_weight:
                np.cumsum(member, axis=1, dtype=np.int32, out=self.pre_counts[c, :, 1:])
            if self.weights is not None:
                np.cumsum(
                    np.where(member, self.weights, 0.0), axis=1, out=self.pre_weights[c, :, 1:]
                )

    def _window_sum(self, pre: NDArray, off: NDArray[np.int64], k: int) -> NDArray:
        """Sum over the cyclic window [off, off + k) of what ``pre`` (``[..., rows, n + 1]``) holds
        prefix sums of; ``[..., G, subsets]``."""
        flat = pre.reshape(*pre.shape[:-2], -1)
        end = off + k
        whole = np.take(flat, self.base + np.minimum(end, self.n), axis=-1)
        whole -= np.take(flat, self.base + off, axis=-1)
        whole += np.take(flat, self.base + np.maximum(end - self.n, 0), axis=-1)  # wrapped part
        return whole

    def _window_positions(self, off: NDArray[np.int64], k: int) -> NDArray[np.int64]:
        return (off[:, :, None] + np.arange(k)) % self.n

    def correct_in(self, off: NDArray[np.int64], k: int) -> NDArray[np.int64]:
        """Correct samples per window, ``[G, subsets]``."""
        if self.dense:
            return self._window_sum(self.pre_correct, off, k)
        assert self.correct is not None
        return self.correct[self.row[:, :, None], self._window_positions(off, k)].sum(axis=-1)

    def votes(self, off: NDArray[np.int64], k: int) -> tuple[NDArray[np.bool_], NDArray]:
        """Per answer class and window, ``[classes, G, subsets]``: whether the class is in the
        window, and its votes (a count, or a weight sum if weighted)."""
        if self.dense:
            if self.weights is None:
                counts = self._window_sum(self.pre_counts, off, k)
                return counts > 0, counts
            weights = self._window_sum(self.pre_weights, off, k)
            if self.presence_by_weight:
                return weights > 0.0, weights
            return self._window_sum(self.pre_counts, off, k) > 0, weights
        assert self.ids is not None
        g, s = off.shape
        pos = self._window_positions(off, k)
        # Cell (class + 1, window): unparsed (-1) lands in class row 0, dropped afterwards.
        window = np.arange(g * s).reshape(g, s, 1)
        cell = ((self.ids[self.row[:, :, None], pos] + 1) * (g * s) + window).ravel()
        size = (self.classes + 1) * g * s
        counts = np.bincount(cell, minlength=size).reshape(-1, g, s)[1:]
        if self.weights is None:
            return counts > 0, counts
        w = self.weights[self.row[:, :, None], pos].ravel()
        weights = np.bincount(cell, weights=w, minlength=size).reshape(-1, g, s)[1:]
        return counts > 0, weights


def _pick(
    votes: NDArray,
    present: NDArray[np.bool_],
    class_correct: NDArray[np.float64],
    tie_keys: NDArray[np.float64],
    tol: float = 0.0,
) -> NDArray[np.float64]:
    """Correctness of the winning class per window, ``[G, subsets]``, from votes ``[classes, G,
    subsets]``; a window with no parsed answer fails.

    Among classes tied for the most votes (within ``tol``) the one with the largest random key
    wins: uniform.
    """
    masked = np.where(present, votes, -np.inf)
    tied = present & (masked >= masked.max(axis=0) - tol)
    winner = np.where(tied, tie_keys, -1.0).argmax(axis=0)
    value = class_correct[np.arange(class_correct.shape[0])[:, None], winner]
    return np.where(present.any(axis=0), value, 0.0)


# --- best-of-k: exact sampling of the best rank -------------------------------------------------


def _best_of(data: RunData, ks: NDArray[np.int64], subsets: int, seed: int) -> NDArray[np.float64]:
    n_all = data.n_per_problem()
    out = np.full((n_all.shape[0], ks.shape[0]), np.nan)
    for n in np.unique(n_all[n_all > 0]).tolist():
        members = np.flatnonzero(n_all == n)
        cols = [j for j, k in enumerate(ks.tolist()) if k <= n]
        if not cols:
            continue
        value = np.empty((members.shape[0], n))
        batch = max(1, _BATCH_ELEMENTS // n)
        for start in range(0, members.shape[0], batch):
            chunk = [data.problems[i] for i in members[start : start + batch]]
            value[start : start + batch] = _value_by_rank(
                np.stack([p.scores for p in chunk]), np.stack([p.correct for p in chunk])
            )
        rows = np.arange(members.shape[0])[:, None]
        for j in cols:
            k = int(ks[j])
            # h[r] = -log P(best rank >= r) = -log(C(n-r, k) / C(n, k)), r = 0..n-k, increasing.
            terms = np.log1p(-k / np.arange(k + 1, n + 1, dtype=np.float64))
            tail = np.concatenate(([0.0], np.cumsum(terms)))
            h = tail[::-1] - tail[-1]
            rng = np.random.default_rng([seed, 2, n, k])
            # -log(U) for U uniform on (0, 1]: rank = max{r : P(rank >= r) >= U}.
            rank = np.searchsorted(
                h, rng.standard_exponential((members.shape[0], subsets)), "right"
            )
            out[members, j] = value[rows, rank - 1].mean(axis=1)
    return out


def _value_by_rank(scores: NDArray[np.float64], correct: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Per problem (row), samples ranked by score (highest first, NaN last): the mean correctness of
    each rank's tie group, i.e. the chance that a uniformly random pick among the tied is correct.

    The rank order and the correctness are packed into one int64 per sample and sorted with a plain
    (SIMD) sort, which is several times faster than an argsort: the key is the order-preserving
    integer image of ``-score`` with its lowest bit replaced by the verdict. Scores equal but for
    the last bit of the mantissa therefore count as tied.
    """
    key = np.negative(scores)
    key += 0.0  # turns -0.0 into 0.0, which must tie with it
    key = key.view(np.int64)
    # Negative doubles order backwards as integers: flip their magnitude bits.
    key ^= (key >> 63) & np.int64(0x7FFF_FFFF_FFFF_FFFF)
    key[np.isnan(scores)] = np.iinfo(np.int64).max
    key >>= 1
    key <<= 1
    key |= correct
    key.sort(axis=1)
    right = (key & 1).astype(np.float64)
    group = key >> 1
    tie = group[:, 1:] == group[:, :-1]
    if not tie.any():
        return right
    rows, n = key.shape
    starts = np.ones((rows, n), dtype=np.bool_)
    starts[:, 1:] = ~tie
    gid = np.cumsum(starts.ravel()) - 1
    return (np.bincount(gid, weights=right.ravel()) / np.bincount(gid))[gid].reshape(rows, n)
