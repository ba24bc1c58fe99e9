"""Adaptive stop rules simulated from a run's stored samples: what each rule would have spent and won.

Each problem's stored samples are put in many random orders (or, with ``exact``, every order); an
*ordering* is one row. Sampling in rounds of ``round_size`` is replayed on every row: after each
round (and at the maximum) every stop rule is asked, for every threshold of its sweep, whether to
stop. Where a rule stops (or at the maximum), the row's cost is the samples and completion tokens
drawn so far, its vote accuracy the expected correctness of the majority answer so far (ties
counted as the expectation of a uniform random pick, as majority@k counts them), and its coverage
whether any of those samples is correct. The same rows, cut at every checkpoint k, give the
fixed-N baseline: majority@k, coverage@k and tokens at k.

The simulation agrees with :meth:`ponder.adaptive.Schedule.replay` row by row: classes are the
extracted answers through :func:`ponder.adaptive.answer_key`, and the rules are asked through their
own ``statistic``.

How it is fast (1,000 problems x 1,000 samples x 100 orders: 10^8 sample draws): rows are
processed in chunks, one sample position at a time for all rows of a chunk at once. Each row keeps
its per-class counts, the four largest counts (updated in place: one count grows by one, so the
leftmost top entry equal to its old value takes the new one), the streak, and the sum and number of
the correctness values of the classes tied for the lead. At a checkpoint each rule's statistic is
asked once, for all its thresholds, and only for the rows that have not yet reached its most
cautious threshold; each row passes its lowest threshold not reached yet as ``lo``, so the
Dirichlet rule runs its Monte Carlo only where that threshold is within its exact bounds. A
threshold's stop is the first checkpoint where the running maximum of the statistic reaches it.

The Dirichlet rule stays the costly one: its seeded Monte Carlo (2,000 draws of 4 gammas per
count vector, memoised) is needed for every distinct count vector near a threshold, which on a
run with many split or hopeless problems is most of its time.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ponder.adaptive import Schedule, StopRule, Votes, answer_key, make_stop_rule
from ponder.analysis._data import ProblemSamples, RunData
from ponder.errors import ConfigError, UserError

DEFAULT_RULES = ("margin", "supermajority", "beta", "dirichlet", "window")
"""The rules simulated unless told otherwise (``fixed`` is the baseline itself)."""

EXACT_LIMIT = 40_320
"""Most orderings per problem ``exact=True`` enumerates (8!)."""

MATCH_TOLERANCE = 0.01
"""How close to majority@N a rule must come to count as reaching it (1 point of accuracy)."""

# Elements per chunk, counted per row as its order (one index per sample position), its count
# table (one per answer class) and its per-checkpoint trajectories (~8 bytes each): ~130 MB.
_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class Estimate:
    """A mean over problems and its standard error (std over problems / sqrt(problems))."""

    mean: float
    stderr: float


@dataclass(frozen=True)
class AdaptivePoint:
    """One rule at one threshold, averaged over problems (each problem over its orderings).

    Attributes:
        rule: the rule's registered name.
        label: the rule with every parameter, threshold included (``margin(min_samples=4, votes=3)``).
        threshold: the threshold (None for a rule without one, such as ``fixed``).
        samples: samples drawn per problem until the stop.
        tokens: completion tokens of those samples, per problem.
        accuracy: expected correctness of the majority answer at the stop.
        coverage: whether any sample drawn until the stop is correct.
        early: share of orderings stopped by the rule before the maximum.
    """

    rule: str
    label: str
    threshold: float | None
    samples: Estimate
    tokens: Estimate
    accuracy: Estimate
    coverage: Estimate
    early: float


@dataclass(frozen=True)
class BaselinePoint:
    """Fixed-N sampling at ``k`` samples per problem, on the same orderings: majority@k,
    coverage@k and the completion tokens of the first k samples."""

    k: int
    tokens: Estimate
    accuracy: Estimate
    coverage: Estimate


@dataclass(frozen=True)
class RuleVerdict:
    """How one rule's curve compares with the majority@k baseline.

    Attributes:
        rule: the rule's name.
        at_or_above: per point (in the order of :meth:`AdaptiveSimulation.curve`), whether its
            accuracy is at least the baseline's at the same mean samples (linear interpolation
            between checkpoints).
        dominates: every point is at or above the baseline.
        gaps: per point, its accuracy minus the baseline's.
        gap_stderr: per point, the standard error of that gap over problems, paired (the rule
            and the baseline on the same problems and orderings, so problem difficulty cancels).
        worst_gap: the least gap (negative: how far its worst point falls below majority@k).
        within_noise: no point is more than two paired standard errors below the baseline.
        samples_to_match: the fewest mean samples per problem among its points whose accuracy is
            within :data:`MATCH_TOLERANCE` of majority@N (None if no point is).
        ratio: ``samples_to_match / N``.
    """

    rule: str
    at_or_above: list[bool]
    dominates: bool
    gaps: list[float]
    gap_stderr: list[float]
    worst_gap: float
    within_noise: bool
    samples_to_match: float | None
    ratio: float | None


@dataclass(frozen=True)
class SimulatedRows:
    """Row by row (kept on request: ``keep_rows=True``): every ordering and where each rule stopped it.

    Attributes:
        labels: the points' labels, in the order of :attr:`AdaptiveSimulation.points`.
        problem_ids: the problems simulated (in the order used below).
        orders: per problem, ``[max_samples, orderings]`` sample indices: column r is row r's
            order.
        samples: per problem, ``[points, orderings]``: samples used at the stop.
    """

    labels: list[str]
    problem_ids: list[str]
    orders: list[NDArray[np.int32]]
    samples: list[NDArray[np.int64]]


@dataclass(frozen=True)
class AdaptiveSimulation:
    """Every rule's sweep and the fixed-N baseline, simulated on one run's stored samples.

    Attributes:
        run_id: the run.
        max_samples: N, the most samples a problem may use.
        round_size: samples per round.
        checkpoints: where rules are asked (and the baseline's k).
        orderings: orderings per problem (in ``exact`` mode, the most any problem has).
        exact: every ordering was enumerated (expectations are exact).
        seed: seed of the random orderings.
        problems: problems simulated.
        left_out: problems left out for having fewer than ``max_samples`` verified samples.
        points: per rule, per threshold (rules in the order asked, thresholds ascending).
        baseline: per checkpoint.
        rows: row-level detail, only when asked for.
        accuracy_by_problem: ``[problems, points]``, each problem's accuracy at each point.
        baseline_by_problem: ``[problems, checkpoints]``, each problem's majority@k.
    """

    run_id: str
    max_samples: int
    round_size: int
    checkpoints: list[int]
    orderings: int
    exact: bool
    seed: int
    problems: int
    left_out: int
    points: list[AdaptivePoint]
    baseline: list[BaselinePoint]
    rows: SimulatedRows | None = None
    accuracy_by_problem: NDArray[np.float64] = field(
        default_factory=lambda: np.zeros((0, 0)), compare=False, repr=False
    )
    baseline_by_problem: NDArray[np.float64] = field(
        default_factory=lambda: np.zeros((0, 0)), compare=False, repr=False
    )

    def rules(self) -> list[str]:
        """The rules simulated, in order."""
        return list(dict.fromkeys(p.rule for p in self.points))

    def curve(self, rule: str) -> list[AdaptivePoint]:
        """One rule's points, by mean samples (then threshold)."""
        pts = [p for p in self.points if p.rule == rule]
        return sorted(pts, key=lambda p: (p.samples.mean, p.threshold or 0.0))

    def baseline_shown(self) -> list[BaselinePoint]:
        """The baseline at a readable number of k for tables: the first round, doublings of it,
        and N (every checkpoint is in :attr:`baseline`)."""
        keep = {self.max_samples}
        k = self.checkpoints[0]
        while k < self.max_samples:
            keep.add(k)
            k *= 2
        return [b for b in self.baseline if b.k in keep]

    def baseline_accuracy_at(self, samples: float) -> float:
        """Majority@k interpolated linearly at ``samples`` mean samples per problem."""
        ks = [b.k for b in self.baseline]
        acc = [b.accuracy.mean for b in self.baseline]
        return float(np.interp(samples, ks, acc))

    def verdicts(self, tolerance: float = MATCH_TOLERANCE) -> list[RuleVerdict]:
        """Each rule against majority@k: where it is at or above, and what it needs to reach
        majority@N's accuracy (within ``tolerance``)."""
        target = self.baseline[-1].accuracy.mean - tolerance
        out = []
        for rule in self.rules():
            pts = self.curve(rule)
            # A hair of slack: a rule that stops every ordering at the same k as the baseline
            # computes the same mean in a different order of summation.
            gaps = [p.accuracy.mean - self.baseline_accuracy_at(p.samples.mean) for p in pts]
            above = [g >= -1e-9 for g in gaps]
            errors = [self._gap_stderr(p) for p in pts]
            reaching = [p.samples.mean for p in pts if p.accuracy.mean >= target - 1e-12]
            need = min(reaching) if reaching else None
            out.append(
                RuleVerdict(
                    rule=rule,
                    at_or_above=above,
                    dominates=all(above),
                    gaps=gaps,
                    gap_stderr=errors,
                    worst_gap=min(gaps),
                    within_noise=all(
                        a or g >= -2 * e for a, g, e in zip(above, gaps, errors, strict=True)
                    ),
                    samples_to_match=need,
                    ratio=None if need is None else need / self.max_samples,
                )
            )
        return out

    def _gap_stderr(self, point: AdaptivePoint) -> float:
        """Paired standard error over problems of the point's accuracy minus majority@k at the
        point's mean samples (NaN without per-problem values or with one problem)."""
        j = self.points.index(point)
        acc = self.accuracy_by_problem
        problems = acc.shape[0]
        if problems < 2 or acc.shape[1] <= j:
            return float("nan")
        base = np.array(
            [np.interp(point.samples.mean, self.checkpoints, b) for b in self.baseline_by_problem]
        )
        return float(np.std(acc[:, j] - base, ddof=1) / math.sqrt(problems))

    def best(self, tolerance: float = MATCH_TOLERANCE) -> RuleVerdict | None:
        """The best rule: among those whose curve is at or above majority@k everywhere, the one
        that reaches majority@N's accuracy with the fewest samples (None if no rule dominates)."""
        dominating = [v for v in self.verdicts(tolerance) if v.dominates]
        if not dominating:
            return None
        return min(dominating, key=lambda v: (v.ratio is None, v.ratio or 0.0))


# --- encoding -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    ids: NDArray[np.int32]
    """Answer class per sample (first-seen order), -1 where there is no answer."""
    classes: int
    class_correct: NDArray[np.float64]
    """Per sample: the share of correct samples in its class (0 without an answer)."""
    correct: NDArray[np.bool_]
    tokens: NDArray[np.int64]


def _encode(p: ProblemSamples) -> _Problem:
    seen: dict[str, int] = {}
    ids = np.fromiter(
        (-1 if (k := answer_key(a)) is None else seen.setdefault(k, len(seen)) for a in p.answers),
        dtype=np.int32,
        count=p.n,
    )
    parsed = ids >= 0
    size = np.bincount(ids[parsed], minlength=len(seen))
    right = np.bincount(ids[parsed], weights=p.correct[parsed], minlength=len(seen))
    share = right / np.maximum(size, 1)
    per_sample = np.where(parsed, share[np.maximum(ids, 0)] if len(seen) else 0.0, 0.0)
    return _Problem(
        ids=ids,
        classes=len(seen),
        class_correct=per_sample.astype(np.float64),
        correct=p.correct.astype(np.bool_),
        tokens=p.completion_tokens.astype(np.int64),
    )


def _orders(n: int, max_samples: int, orderings: int, exact: bool, seed: int, key: str) -> Any:
    """Sample indices, ``[max_samples, rows]`` (a column per row): random permutations of the
    problem's samples cut at the maximum, or every distinct ordered choice of ``max_samples``."""
    if exact:
        return np.array(list(permutations(range(n), max_samples)), dtype=np.int32).T.copy()
    # One stream per (seed, problem id): a problem's orderings do not depend on the other
    # problems, their order or the chunking.
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    rng = np.random.default_rng([seed, int.from_bytes(digest, "little")])
    base = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None], (n, orderings)).copy()
    return rng.permuted(base, axis=0, out=base)[:max_samples]


# --- the simulation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    rule: StopRule
    thresholds: NDArray[np.float64]
    """Ascending; ``inf`` alone for a rule without a threshold (it never fires)."""

    @property
    def asks(self) -> bool:
        return bool(np.isfinite(self.thresholds).any())


@dataclass
class _ChunkResult:
    """Per problem of a chunk (rows = problems): means over its orderings."""

    samples: NDArray[np.float64]  # [P, J]
    tokens: NDArray[np.float64]
    accuracy: NDArray[np.float64]
    coverage: NDArray[np.float64]
    early: NDArray[np.float64]
    base_tokens: NDArray[np.float64]  # [P, checkpoints]
    base_accuracy: NDArray[np.float64]
    base_coverage: NDArray[np.float64]
    row_samples: list[NDArray[np.int64]]  # per problem, [J, its rows]: samples used at the stop


def _first_reaching(traj: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    """Per column of ``traj`` (``[checkpoints, rows]``, nondecreasing down each column), the first
    index whose value is >= ``threshold``; ``checkpoints`` where none is (binary search)."""
    c, rows = traj.shape
    lo = np.zeros(rows, dtype=np.int64)
    hi = np.full(rows, c, dtype=np.int64)
    cols = np.arange(rows)
    for _ in range(max(1, c).bit_length()):
        mid = (lo + hi) // 2
        below = traj[np.minimum(mid, c - 1), cols] < threshold
        open_ = lo < hi
        lo = np.where(open_ & below, mid + 1, lo)
        hi = np.where(open_ & ~below, mid, hi)
    return lo


def _statistics(
    rules: list[_Rule],
    k: int,
    top: NDArray[np.signedinteger[Any]],
    run: NDArray[np.signedinteger[Any]],
    reached: NDArray[np.float64],
) -> list[tuple[NDArray[np.int64], NDArray[np.float64]] | None]:
    """Each rule's statistic at checkpoint ``k`` for the rows that still need it (those rows and
    their values; None where the rule is not asked yet), asked once per rule.

    ``reached`` (``[rules, rows]``): the largest statistic each row had so far. A row past a
    rule's top threshold needs nothing more from it; the others only need to know whether they
    reach their lowest threshold above ``reached``, which is passed as each row's ``lo``.
    """
    out: list[tuple[NDArray[np.int64], NDArray[np.float64]] | None] = []
    for i, r in enumerate(rules):
        if not r.asks or k < r.rule.min_samples:
            out.append(None)
            continue
        finite = r.thresholds[np.isfinite(r.thresholds)]
        need = np.flatnonzero(reached[i] < finite[-1])
        if not need.shape[0]:
            out.append(None)
            continue
        # Each row's lowest threshold not reached yet.
        lo = finite[np.searchsorted(finite, reached[i, need], side="right")]
        votes = Votes(
            n=np.full(need.shape[0], k, dtype=np.int64),
            top=np.ascontiguousarray(top[:, need].T, dtype=np.int64),
            run=run[need].astype(np.int64),
        )
        stat = r.rule.statistic(votes, lo=lo, hi=float(finite[-1]))
        out.append((need, np.asarray(stat, dtype=np.float64)))
    return out


def _simulate_chunk(
    problems: list[_Problem],
    orders: list[NDArray[np.int32]],
    rules: list[_Rule],
    checkpoints: list[int],
) -> _ChunkResult:
    counts_per = np.array([o.shape[1] for o in orders])
    rows = int(counts_per.sum())
    n_max = checkpoints[-1]
    classes = max(p.classes for p in problems)
    slots = classes + 1  # slot 0 of a row: samples without an answer

    # The chunk's samples end to end, and each row's order as indices into them: [positions, rows].
    ends = np.cumsum([p.ids.shape[0] for p in problems])
    index = np.concatenate(
        [o + int(end - p.ids.shape[0]) for p, o, end in zip(problems, orders, ends, strict=True)],
        axis=1,
    )

    def flat(field: str) -> NDArray[Any]:
        return np.concatenate([getattr(p, field) for p in problems])

    ids, cc, correct, tokens = flat("ids"), flat("class_correct"), flat("correct"), flat("tokens")

    base = np.arange(rows, dtype=np.int64) * slots + 1
    # Counts never exceed the maximum: the narrowest integers that hold it move the least memory.
    small: Any = np.int16 if n_max < 2**14 else np.int32
    counts = np.zeros(rows * slots, dtype=small)
    # A row's slot for samples without an answer starts so low that its count never equals a
    # top count nor beats the lead: such samples change neither, with no mask needed.
    counts[::slots] = np.iinfo(small).min // 2
    top = np.zeros((4, rows), dtype=small)
    run = np.zeros(rows, dtype=small)
    prev = np.full(rows, -1, dtype=np.int32)
    lead_sum = np.zeros(rows)
    lead_num = np.zeros(rows, dtype=small)
    covered = np.zeros(rows, dtype=np.bool_)
    tok = np.zeros(rows, dtype=np.int64)

    cps = len(checkpoints)
    traj_acc = np.empty((cps, rows))
    traj_cov = np.empty((cps, rows), dtype=np.bool_)
    traj_tok = np.empty((cps, rows), dtype=np.int64)
    runmax = np.full((len(rules), rows), -np.inf)
    traj_max = np.full((len(rules), cps, rows), -np.inf)
    at = dict(zip(checkpoints, range(cps), strict=True))

    for t in range(n_max):
        drawn = index[t]
        cid = ids[drawn]
        cc_t = cc[drawn]
        slot = base + cid
        v = counts[slot] + 1
        counts[slot] = v  # one slot per row: no repeated index
        lead = top[0].copy()
        # The class that grew held v - 1; in the descending top four, that value's leftmost
        # entry becomes v (the multiset of counts changes in exactly that one place).
        hit = top == v - 1
        hit[1:] &= ~hit[:-1]
        top += hit
        # The lead: the classes at the top count, their number and their summed correctness.
        join = v == lead
        lead_sum += cc_t * join
        lead_num += join
        new_lead = v > lead
        np.copyto(lead_sum, cc_t, where=new_lead)
        np.copyto(lead_num, 1, where=new_lead)
        # The streak: +1 on the same answer, 1 on another, 0 without one.
        run = (run * (cid == prev) + 1) * (cid >= 0)
        prev = cid
        covered |= correct[drawn]
        tok += tokens[drawn]
        c = at.get(t + 1)
        if c is None:
            continue
        traj_acc[c] = lead_sum / np.maximum(lead_num, 1)
        traj_cov[c] = covered
        traj_tok[c] = tok
        for i, asked in enumerate(_statistics(rules, t + 1, top, run, runmax)):
            if asked is not None:
                need, stat = asked
                runmax[i, need] = np.maximum(runmax[i, need], stat)
            traj_max[i, c] = runmax[i]

    starts = np.concatenate(([0], np.cumsum(counts_per)[:-1]))

    def per_problem(x: NDArray[Any]) -> NDArray[np.float64]:
        """Means over each problem's rows along the last axis: ``[..., rows] -> [P, ...]``."""
        sums = np.add.reduceat(np.asarray(x, dtype=np.float64), starts, axis=-1)
        return np.moveaxis(sums / counts_per, -1, 0)

    cp_arr = np.asarray(checkpoints, dtype=np.int64)
    cols = np.arange(rows)
    # [J, rows]: checkpoint index of each stop (the maximum where no threshold is reached).
    stop = np.stack(
        [
            np.minimum(_first_reaching(traj_max[i], th), cps - 1)
            for i, r in enumerate(rules)
            for th in r.thresholds.tolist()
        ]
    )
    used = cp_arr[stop]
    return _ChunkResult(
        samples=per_problem(used),
        tokens=per_problem(traj_tok[stop, cols]),
        accuracy=per_problem(traj_acc[stop, cols]),
        coverage=per_problem(traj_cov[stop, cols]),
        early=per_problem(used < n_max),
        base_tokens=per_problem(traj_tok),
        base_accuracy=per_problem(traj_acc),
        base_coverage=per_problem(traj_cov),
        row_samples=[used[:, a:b] for a, b in zip(starts, starts + counts_per, strict=True)],
    )


def _estimate(per_problem: NDArray[np.float64]) -> Estimate:
    p = per_problem.shape[0]
    mean = float(per_problem.mean())
    stderr = float(per_problem.std(ddof=1) / math.sqrt(p)) if p > 1 else float("nan")
    return Estimate(mean, stderr)


def _resolve_rules(
    rules: Sequence[str | StopRule],
    thresholds: Mapping[str, Sequence[float]] | None,
) -> list[_Rule]:
    out = []
    for item in rules:
        rule = make_stop_rule(item) if isinstance(item, str) else item
        if rule.threshold_field is None:
            values: Sequence[float] = [math.inf]
        elif thresholds is not None and rule.name in thresholds:
            values = thresholds[rule.name]
        else:
            values = rule.sweep
        # Every threshold must be a valid value of the rule's parameter (a ConfigError says why).
        field = rule.threshold_field
        checked = sorted(
            {
                make_stop_rule(rule.name, {**rule.params(), field: v}).threshold
                if field is not None and math.isfinite(v)
                else v
                for v in values
            }
        )
        if not checked:
            raise UserError(f"stop rule {rule.name!r}: no thresholds to simulate")
        out.append(_Rule(rule, np.asarray(checked, dtype=np.float64)))
    if not out:
        raise UserError("no stop rules to simulate", hint=f"name some: {', '.join(DEFAULT_RULES)}")
    return out


def simulate_adaptive(
    data: RunData,
    rules: Sequence[str | StopRule] = DEFAULT_RULES,
    thresholds: Mapping[str, Sequence[float]] | None = None,
    *,
    orderings: int = 100,
    round_size: int = 4,
    max_samples: int | None = None,
    seed: int = 0,
    exact: bool = False,
    keep_rows: bool = False,
) -> AdaptiveSimulation:
    """Replay stop rules over orderings of each problem's stored samples, beside fixed-N voting.

    Args:
        data: the run (its verified samples).
        rules: rule names (default parameters) or configured rules (their other parameters are
            kept, their threshold parameter is swept).
        thresholds: per rule name, the thresholds to sweep; default each rule's ``sweep``.
        orderings: random orderings per problem (ignored with ``exact``).
        round_size: samples per round; rules are asked at each round's end and at the maximum.
        max_samples: the most samples a problem may use; default the smallest number of verified
            samples of any problem. Problems with fewer are left out (and counted).
        seed: seeds the orderings, with each problem's id (a problem's orderings do not depend on
            the other problems).
        exact: enumerate every ordering of each problem's samples (at most :data:`EXACT_LIMIT`
            per problem): the results are exact expectations over a uniformly random order.

    Raises:
        UserError: bad sizes, no problem with enough samples, too many orderings for ``exact``.
        UnknownNameError: a rule name is not registered.
        ConfigError: a threshold or parameter is invalid for its rule, or the maximum is below a
            rule's minimum.
    """
    if orderings < 1:
        raise UserError(f"orderings must be >= 1, got {orderings}", hint="use 100 (the default)")
    n_all = data.n_per_problem()
    if n_all.shape[0] == 0 or int(n_all.max()) == 0:
        raise UserError(
            f"run {data.run_id} has no verified samples",
            hint=f"verify it first: ponder verify {data.run_id}",
        )
    limit = int(n_all[n_all > 0].min()) if max_samples is None else max_samples
    if limit < 1:
        raise UserError(f"max_samples must be >= 1, got {limit}")
    resolved = _resolve_rules(rules, thresholds)
    for r in resolved:
        if r.rule.min_samples > limit:
            raise ConfigError(
                f"stop rule {r.rule.name!r} needs a minimum of {r.rule.min_samples} samples per "
                f"problem, above the maximum simulated ({limit})",
                hint="simulate a run with more samples per problem, or give the rule a lower "
                "min_samples",
            )
    schedules = [Schedule(r.rule, limit, round_size) for r in resolved]  # validates sizes
    checkpoints = schedules[0].checkpoints()
    kept = [i for i, n in enumerate(n_all.tolist()) if n >= limit]
    if not kept:
        raise UserError(
            f"no problem of run {data.run_id} has {limit} verified samples (most: {int(n_all.max())})",
            hint="lower max_samples",
        )
    if exact:
        worst = max(math.perm(int(n_all[i]), limit) for i in kept)
        if worst > EXACT_LIMIT:
            raise UserError(
                f"exact enumeration needs {worst:,} orderings for a problem; the limit is "
                f"{EXACT_LIMIT:,} (e.g. 8 samples)",
                hint="use random orderings (exact=False), or lower max_samples",
            )
    encoded = {i: _encode(data.problems[i]) for i in kept}
    # Problems with similar numbers of classes share a chunk, so a chunk's count table is dense.
    kept.sort(key=lambda i: encoded[i].classes)
    results: list[_ChunkResult] = []
    kept_orders: list[NDArray[np.int32]] = []
    chunk: list[int] = []
    chunk_rows = 0
    for pos, i in enumerate(kept):
        rows = math.perm(int(n_all[i]), limit) if exact else orderings
        chunk.append(i)
        chunk_rows += rows
        last = pos == len(kept) - 1
        # Per row: its ordered samples, its trajectories and its count table (of the next problem,
        # which has the most classes so far).
        width = limit + (3 + len(resolved)) * len(checkpoints)
        if (
            last
            or (chunk_rows + rows) * (width + encoded[kept[pos + 1]].classes + 1) > _CHUNK_ELEMENTS
        ):
            orders = [
                _orders(int(n_all[j]), limit, orderings, exact, seed, data.problems[j].problem_id)
                for j in chunk
            ]
            results.append(
                _simulate_chunk([encoded[j] for j in chunk], orders, resolved, checkpoints)
            )
            if keep_rows:
                kept_orders += orders
            chunk, chunk_rows = [], 0

    def gather(field: str) -> NDArray[np.float64]:
        return np.concatenate([getattr(r, field) for r in results])

    samples, tokens = gather("samples"), gather("tokens")
    accuracy, coverage, early = gather("accuracy"), gather("coverage"), gather("early")
    points = []
    j = 0
    for r in resolved:
        for threshold in r.thresholds.tolist():
            finite = math.isfinite(threshold)
            rule = r.rule.with_threshold(threshold) if finite else r.rule
            points.append(
                AdaptivePoint(
                    rule=r.rule.name,
                    label=rule.describe(),
                    threshold=threshold if finite else None,
                    samples=_estimate(samples[:, j]),
                    tokens=_estimate(tokens[:, j]),
                    accuracy=_estimate(accuracy[:, j]),
                    coverage=_estimate(coverage[:, j]),
                    early=float(early[:, j].mean()),
                )
            )
            j += 1
    b_tok, b_acc, b_cov = gather("base_tokens"), gather("base_accuracy"), gather("base_coverage")
    baseline = [
        BaselinePoint(
            k=k,
            tokens=_estimate(b_tok[:, c]),
            accuracy=_estimate(b_acc[:, c]),
            coverage=_estimate(b_cov[:, c]),
        )
        for c, k in enumerate(checkpoints)
    ]
    detail = None
    if keep_rows:
        detail = SimulatedRows(
            labels=[p.label for p in points],
            problem_ids=[data.problems[i].problem_id for i in kept],
            orders=kept_orders,
            samples=[s for r in results for s in r.row_samples],
        )
    rows_per = [math.perm(int(n_all[i]), limit) for i in kept] if exact else [orderings]
    return AdaptiveSimulation(
        run_id=data.run_id,
        max_samples=limit,
        round_size=round_size,
        checkpoints=checkpoints,
        orderings=max(rows_per),
        exact=exact,
        seed=seed,
        problems=len(kept),
        left_out=int(n_all.shape[0]) - len(kept),
        points=points,
        baseline=baseline,
        rows=detail,
        accuracy_by_problem=accuracy,
        baseline_by_problem=b_acc,
    )


# --- output ---------------------------------------------------------------------------------------


def _est(e: Estimate) -> dict[str, float | None]:
    return {
        "mean": e.mean,
        "stderr": None if math.isnan(e.stderr) else e.stderr,
    }


def adaptive_json(sim: AdaptiveSimulation) -> dict[str, Any]:
    """A JSON-ready dict of a simulation: every point, the baseline and each rule's verdict."""
    verdicts = sim.verdicts()
    above = {v.rule: dict(zip((id(p) for p in sim.curve(v.rule)), v.at_or_above, strict=True))
             for v in verdicts}  # fmt: skip
    best = sim.best()
    return {
        "run": sim.run_id,
        "max_samples": sim.max_samples,
        "round_size": sim.round_size,
        "checkpoints": sim.checkpoints,
        "orderings": sim.orderings,
        "exact": sim.exact,
        "seed": sim.seed,
        "problems": sim.problems,
        "left_out": sim.left_out,
        "points": [
            {
                "rule": p.rule,
                "label": p.label,
                "threshold": p.threshold,
                "samples": _est(p.samples),
                "tokens": _est(p.tokens),
                "accuracy": _est(p.accuracy),
                "coverage": _est(p.coverage),
                "early": p.early,
                "at_or_above_majority": above[p.rule][id(p)],
            }
            for p in sim.points
        ],
        "baseline": [
            {
                "k": b.k,
                "tokens": _est(b.tokens),
                "accuracy": _est(b.accuracy),
                "coverage": _est(b.coverage),
            }
            for b in sim.baseline
        ],
        "verdicts": [
            {
                "rule": v.rule,
                "dominates": v.dominates,
                "points_at_or_above": sum(v.at_or_above),
                "worst_gap": v.worst_gap,
                "gaps": v.gaps,
                "gap_stderr": [None if math.isnan(e) else e for e in v.gap_stderr],
                "within_noise": v.within_noise,
                "samples_to_match": v.samples_to_match,
                "ratio": v.ratio,
            }
            for v in verdicts
        ],
        "best": None if best is None else best.rule,
    }
