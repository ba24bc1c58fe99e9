"""Where does picking one answer stop improving while coverage keeps growing?

On the same runs as scaling_law (same defaults, so nothing is drawn twice): coverage@k, majority@k and
best-of-k by mean token log-probability (the model's own confidence; never the verifier's score) at
k = 1, 2, 4, ..., K, and the k where each curve stops improving.

"Stops improving at k": the first k on the doubling grid from which no further doubling up to K gains
--min-gain points or more (default 1 point of problems solved): curve(2j) - curve(j) < min-gain for every
j >= k with 2j <= K. "not by K" when the last doubling still gains that much.
"""

from __future__ import annotations

import _common as c
import numpy as np
from numpy.typing import NDArray

from ponder.analysis import coverage_curve, selection_curve

NAME = "plateau"


def plateau_k(ks: list[int], curve: NDArray[np.float64], min_gain: float) -> str:
    """The first k from which every doubling gains < ``min_gain`` (see the module doc)."""
    pairs = [(i, ks.index(2 * k)) for i, k in enumerate(ks) if 2 * k in ks]
    if not pairs or np.isnan(curve).all():
        return "–"
    stop = None
    for i, j in reversed(pairs):
        if curve[j] - curve[i] >= min_gain:
            break
        stop = ks[i]
    if stop is None:
        return f"not by {ks[pairs[-1][1]]}"
    return str(stop)


def run() -> None:
    from scaling_law import DEFAULT_TASKS

    p = c.parser(NAME, __doc__, problems=40, n=256, tasks=DEFAULT_TASKS)
    p.add_argument(
        "--min-gain",
        type=float,
        default=1.0,
        help="points (percent of problems) a doubling of k must gain to count as improving",
    )
    args = c.parse_args(p)
    cells = c.task_model_cells(args)
    summary = []
    per_run = []
    reports = []
    with c.opened(args) as store:
        drawn = c.draw(args, store, cells)
        for d in drawn:
            data = c.run_data(store, d, scores="logprob")
            n_min = int(data.n_per_problem().min())
            ks = [k for k in c.doubling_grid(d.cell.n) if k <= n_min] or [1]
            cov = coverage_curve(data, ks, bootstrap=0).mean
            maj = selection_curve(data, "majority", ks, subsets=args.subsets).mean
            has_logprobs = any(np.isfinite(pr.scores).any() for pr in data.problems)
            best = (
                selection_curve(data, "best_of", ks, subsets=args.subsets).mean
                if has_logprobs
                else np.full(len(ks), np.nan)
            )
            gain = args.min_gain / 100
            summary.append(
                [
                    d.cell.label,
                    len(data.problems),
                    ks[-1],
                    c.pct(cov[-1]),
                    c.pct(maj[-1]),
                    c.pct(best[-1]) if has_logprobs else "no log-probabilities",
                    plateau_k(ks, cov, gain),
                    plateau_k(ks, maj, gain),
                    plateau_k(ks, best, gain) if has_logprobs else "–",
                ]
            )
            rows = [
                [k, c.pct(cv), c.pct(mj), c.pct(bo), c.pct(cv - mj)]
                for k, cv, mj, bo in zip(ks, cov, maj, best, strict=True)
            ]
            per_run.append(
                (
                    f"{d.cell.label} (run {d.run_id[:12]}), in %",
                    c.md_table(
                        ["k", "coverage", "majority", "best-of (logprob)", "coverage - majority"],
                        rows,
                    ),
                )
            )
            reports.append((d.cell.task, c.report(args, store, d, scores="logprob")))
    c.write_results(
        args,
        NAME,
        "The plateau: selection against coverage",
        [
            (
                f"Where each curve stops improving (gain < {args.min_gain:g} point per doubling of k)",
                c.md_table(
                    [
                        "run",
                        "problems",
                        "K",
                        "coverage@K",
                        "majority@K",
                        "best-of@K (logprob)",
                        "coverage stops at k",
                        "majority stops at k",
                        "best-of stops at k",
                    ],
                    summary,
                )
                + "\n\nMajority: the most frequent extracted answer of k random samples (ties at "
                "random). Best-of: the sample with the highest mean token log-probability. Both are "
                "averaged over random k-subsets (ponder.analysis.selection_curve).",
            ),
            *per_run,
        ],
    )
    for task, group in c.by_task(reports).items():
        c.write_html(args, f"{NAME}-{c.slug(task)}.html", group)


if __name__ == "__main__":
    c.main(run)
