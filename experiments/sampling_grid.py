"""Sampling parameters: temperature x truncation on one task and model.

A grid of temperature (0.3, 0.6, 1.0) x truncation (none; min-p 0.05; top-k 40 + min-p 0.05 + top-p 0.95),
one run per cell on the same problems: pass@1, coverage@k and majority@k per cell, and one HTML report with
the runs side by side. Higher temperature is often said to help coverage at large k while hurting pass@1;
the last section says, per truncation, whether that holds here.
"""

from __future__ import annotations

from typing import Any

import _common as c

from ponder.analysis import coverage_curve, selection_curve

NAME = "sampling_grid"
TRUNCATIONS: dict[str, dict[str, Any]] = {
    "none": {"top_p": 1.0, "top_k": 0, "min_p": 0.0},
    "min-p 0.05": {"top_p": 1.0, "top_k": 0, "min_p": 0.05},
    "top-k 40 + min-p 0.05 + top-p 0.95": {"top_p": 0.95, "top_k": 40, "min_p": 0.05},
}


def trend(name: str, values: list[tuple[float, float]]) -> str:
    """``name`` from the lowest to the highest temperature, in words."""
    (t0, v0), (t1, v1) = values[0], values[-1]
    if v1 == v0:
        return f"{name} stays at {c.pct(v0)} from T={t0:g} to T={t1:g}"
    way = "rises" if v1 > v0 else "falls"
    return f"{name} {way} from {c.pct(v0)} (T={t0:g}) to {c.pct(v1)} (T={t1:g})"


def run() -> None:
    from scaling_law import DEFAULT_TASKS

    p = c.parser(NAME, __doc__, problems=30, n=64, tasks=DEFAULT_TASKS[:1])
    p.add_argument(
        "--temperatures",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.3, 0.6, 1.0],
        help="comma-separated (default 0.3,0.6,1.0)",
    )
    p.add_argument(
        "--coverage-k", type=int, default=8, help="a middle k reported beside K (default 8)"
    )
    args = c.parse_args(p)
    options = c.task_options(args.task_option)
    model, task = args.model[0], args.task[0]
    cells = [
        c.Cell(model, task, args.n, c.params_of(args, temperature=t, **trunc), f"T={t:g}, {name}", options)
        for name, trunc in TRUNCATIONS.items()
        for t in args.temperatures
    ]  # fmt: skip
    rows = []
    findings = []
    with c.opened(args) as store:
        drawn = c.draw(args, store, cells)
        reports = [c.report(args, store, d) for d in drawn]
        by_trunc: dict[str, list[tuple[float, float, float]]] = {}
        for d in drawn:
            data = c.run_data(store, d)
            k_max = int(data.n_per_problem().min())
            mid = min(args.coverage_k, k_max)
            cov = coverage_curve(data, [1, mid, k_max], bootstrap=0).mean
            maj = float(selection_curve(data, "majority", [k_max], subsets=args.subsets).mean[0])
            trunc = next(n for n, t in TRUNCATIONS.items() if d.cell.label.endswith(n))
            by_trunc.setdefault(trunc, []).append((d.cell.params.temperature, cov[0], cov[2]))
            tokens = sum(int(pr.completion_tokens.sum()) for pr in data.problems) / max(
                1, sum(pr.n for pr in data.problems)
            )
            rows.append(
                [
                    f"{d.cell.params.temperature:g}",
                    trunc,
                    d.run_id[:12],
                    c.pct(cov[0]),
                    f"{c.pct(cov[1])} (k={mid})",
                    f"{c.pct(cov[2])} (k={k_max})",
                    c.pct(maj),
                    f"{tokens:.1f}",
                ]
            )
    for trunc, points in by_trunc.items():
        points.sort()
        findings.append(
            f"- {trunc}: "
            + trend("pass@1", [(t, p1) for t, p1, _ in points])
            + "; "
            + trend("coverage@K", [(t, ck) for t, _, ck in points])
            + "."
        )
    c.write_results(
        args,
        NAME,
        f"Sampling parameters on {task} with {model}",
        [
            (
                f"{args.problems} problems x {args.n} samples per cell (in %)",
                c.md_table(
                    [
                        "temperature",
                        "truncation",
                        "run",
                        "pass@1",
                        "coverage@k",
                        "coverage@K",
                        "majority@K",
                        "mean completion tokens",
                    ],
                    rows,
                ),
            ),
            (
                "Temperature: pass@1 against coverage at large k",
                "\n".join(findings)
                + "\n\nDifferences smaller than the coverage bands of the HTML report are noise.",
            ),
        ],
    )
    c.write_html(args, f"{NAME}-{c.slug(task)}.html", reports)


if __name__ == "__main__":
    c.main(run)
