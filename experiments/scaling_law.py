"""Does coverage follow the exponentiated power law, and does a fit on small k predict large k?

For each task x model: draw K samples per problem, compute coverage@k (mean unbiased pass@k) from k = 1 to K,
fit ``coverage(k) = exp(a * k**b)`` on the k <= --fit-max-k only, and report the law's error at every
held-out k (above --fit-max-k), with a and b and their 95% intervals. Resumable: rerun the same command,
or raise --n / --problems to extend the same runs.

The issue's sizes: 2 tasks x 40 problems x 256 samples with smollm2-135m (the default), and one task with
``--model qwen2.5-coder-0.5b --problems 20 --n 128 --fit-max-k 32``.
"""

from __future__ import annotations

import _common as c

from ponder.analysis import RunReport, ScalingFit, coverage_at_k, fit_scaling_law, k_grid_log
from ponder.errors import UserError

NAME = "scaling_law"
DEFAULT_TASKS = ("gym:chain_sum", "gym:products")
"""Chosen by the probe of qwen2.5-coder-0.5b (docs/results.md); replace them with the full probe's choice."""


def fit_row(label: str, r: RunReport, fit_max_k: int) -> tuple[list[object], ScalingFit | None]:
    ks, cov = r.ks, r.coverage.mean
    held = int((ks > fit_max_k).sum())
    head: list[object] = [label, len(r.data.problems), int(ks.max()), c.pct(cov[0]), c.pct(cov[-1])]
    try:
        fit = fit_scaling_law(ks, cov, holdout=held)
    except UserError as exc:
        return [
            *head,
            f"not fitted: {exc.message}",
            "",
            "",
            "",
            "",
            "",
        ], None
    errors = ", ".join(
        f"k={int(k)}: {c.pct(p)} vs {c.pct(o)}"
        for k, o, p in zip(fit.holdout_k, fit.holdout_observed, fit.holdout_predicted, strict=True)
    )
    at_max = (
        f"{100 * abs(fit.holdout_predicted[-1] - fit.holdout_observed[-1]):.1f}"
        if len(fit.holdout_k)
        else "– (nothing held out)"
    )
    return [
        *head,
        f"{fit.a:.3f} [{fit.a_ci[0]:.3f}, {fit.a_ci[1]:.3f}]",
        f"{fit.b:.3f} [{fit.b_ci[0]:.3f}, {fit.b_ci[1]:.3f}]",
        f"{fit.r2:.3f}",
        f"{len(fit.k_fit)} k in [{int(fit.k_fit.min())}, {int(fit.k_fit.max())}]",
        at_max,
        errors or "–",
    ], fit


def run() -> None:
    p = c.parser(NAME, __doc__, problems=40, n=256, tasks=DEFAULT_TASKS)
    p.add_argument(
        "--fit-max-k",
        type=int,
        default=64,
        help="fit the law on k <= this; every larger k is held out and predicted (default 64)",
    )
    args = c.parse_args(p)
    cells = c.task_model_cells(args)
    with c.opened(args) as store:
        drawn = c.draw(args, store, cells)
        # The HTML report's own fit holds out the same k as the table's.
        reports = [
            (
                d,
                c.report(
                    args, store, d, holdout=int((k_grid_log(d.cell.n) > args.fit_max_k).sum())
                ),
            )
            for d in drawn
        ]
    rows = [fit_row(d.cell.label, r, args.fit_max_k)[0] for d, r in reports]
    grid = c.doubling_grid(max(int(r.ks.max()) for _, r in reports))
    coverage_rows = []
    for k in grid:
        # Computed at exactly k (the report's curve is on a log grid that skips most powers of two).
        cells_k = [
            c.pct(coverage_at_k(r.data.n_per_problem(), r.data.c_per_problem(), k))
            if k <= int(r.ks.max())
            else "–"
            for _, r in reports
        ]
        coverage_rows.append([k, *cells_k])
    wall = c.md_table(
        ["run", "id", "samples drawn now", "sampling wall s (this invocation)", "samples/s"],
        [
            [
                d.cell.label,
                d.run_id[:12],
                d.drawn,
                f"{d.wall_s:.0f}",
                f"{d.drawn / d.wall_s:.2f}" if d.drawn and d.wall_s > 0 else "–",
            ]
            for d, _ in reports
        ],
    )
    c.write_results(
        args,
        NAME,
        "Scaling law of coverage",
        [
            (
                f"Fit on k <= {args.fit_max_k}, error at held-out k (coverage in %)",
                c.md_table(
                    [
                        "run",
                        "problems",
                        "K",
                        "pass@1",
                        "coverage@K",
                        "a [95% CI]",
                        "b [95% CI]",
                        "R²",
                        "fitted on",
                        "abs. error at K (points)",
                        "held-out k: predicted vs observed",
                    ],
                    rows,
                )
                + "\n\nThe law: coverage(k) = exp(a * k^b), fitted by weighted least squares on log "
                "coverage (ponder.analysis.fit_scaling_law); intervals are Wald intervals, indicative "
                "only (the points of one curve are correlated).",
            ),
            (
                "Coverage@k (%)",
                c.md_table(["k", *[d.cell.label for d, _ in reports]], coverage_rows),
            ),
            ("Runs", wall),
        ],
    )
    for task, group in c.by_task([(d.cell.task, r) for d, r in reports]).items():
        c.write_html(args, f"{NAME}-{c.slug(task)}.html", group)


if __name__ == "__main__":
    c.main(run)
