"""A small model with many samples against a larger one with few, at equal compute.

On the same problems: each model drawn with its own K (``--model NAME=K``; the default: SmolLM2-135M x 256,
Qwen2.5-Coder-0.5B x 32, and Qwen2.5-Coder-1.5B x 8 when it is installed). Compute is counted in FLOPs,
2 x parameters x tokens (prompt + completion; ponder.analysis.cost_curve). The report's cost chart puts
coverage and majority vote of every run against FLOPs on one chart; the table matches each k of the
largest model to the k of every other model that costs the same FLOPs.
"""

from __future__ import annotations

import _common as c
import numpy as np

from ponder.analysis import RunData, coverage_curve, model_params, selection_curve
from ponder.models import MODELS

NAME = "equal_compute"
DEFAULT_MODELS = ("smollm2-135m=256", "qwen2.5-coder-0.5b=32", "qwen2.5-coder-1.5b=8")


def model_and_k(item: str, default_k: int) -> tuple[str, int]:
    name, sep, k = item.partition("=")
    if sep and not k.isdigit():
        raise SystemExit(f"error: --model {item!r}: expected NAME or NAME=K")
    return name, int(k) if sep else default_k


def flops_per_k(data: RunData) -> float:
    """FLOPs of one more sample for every problem (mean tokens per sample x 2 x parameters)."""
    params = model_params(data.spec.model)
    if params is None:
        raise SystemExit(f"error: the parameter count of {data.spec.model} is unknown")
    tokens = sum(float((p.prompt_tokens + p.completion_tokens).mean()) for p in data.problems)
    return 2.0 * params * tokens


def at_k(data: RunData, k: int, subsets: int) -> tuple[float, float]:
    """Coverage@k and majority@k of a run."""
    cov = float(coverage_curve(data, [k], bootstrap=0).mean[0])
    maj = float(selection_curve(data, "majority", [k], subsets=subsets).mean[0])
    return cov, maj


def run() -> None:
    from scaling_law import DEFAULT_TASKS

    p = c.parser(NAME, __doc__, problems=20, n=32, tasks=DEFAULT_TASKS[:1], models=DEFAULT_MODELS)
    args = c.parse_args(p)
    options = c.task_options(args.task_option)
    explicit = args.model is not args.default_models
    wanted = [model_and_k(m, args.n) for m in args.model]
    skipped = [m for m, _ in wanted if not explicit and m in MODELS and not MODELS[m].installed()]
    wanted = [(m, k) for m, k in wanted if m not in skipped]
    task = args.task[0]
    cells = [c.Cell(m, task, k, c.params_of(args), f"{m} x {k}", options) for m, k in wanted]
    with c.opened(args) as store:
        drawn = c.draw(args, store, cells)
        datas = [c.run_data(store, d) for d in drawn]
        reports = [c.report(args, store, d) for d in drawn]
    per_k = [flops_per_k(data) for data in datas]
    runs = []
    for d, data, f in zip(drawn, datas, per_k, strict=True):
        k_max = int(data.n_per_problem().min())
        cov1, _ = at_k(data, 1, args.subsets)
        cov, maj = at_k(data, k_max, args.subsets)
        runs.append(
            [
                d.cell.label,
                f"{model_params(data.spec.model) or 0:,}",
                len(data.problems),
                k_max,
                f"{f:.3g}",
                f"{f * k_max:.3g}",
                c.pct(cov1),
                c.pct(cov),
                c.pct(maj),
            ]
        )
    # Match every k of the most expensive model per sample to the same FLOPs of each other model.
    big = int(np.argmax(per_k))
    big_k_max = int(datas[big].n_per_problem().min())
    matched = []
    for k in c.doubling_grid(big_k_max):
        budget = per_k[big] * k
        row: list[object] = [f"{budget:.3g}"]
        for data, f in zip(datas, per_k, strict=True):
            k_same = max(1, round(budget / f))
            if k_same > int(data.n_per_problem().min()):
                row += [f"{k_same} (not drawn)", "–", "–"]
                continue
            cov, maj = at_k(data, k_same, args.subsets)
            row += [k_same, c.pct(cov), c.pct(maj)]
        matched.append(row)
    headers = ["FLOPs"]
    for d in drawn:
        headers += [f"{d.cell.model}: k", "coverage", "majority"]
    notes = (
        f"\n\nSkipped (not installed): {', '.join(skipped)}; install it (ponder models) and rerun."
        if skipped
        else ""
    )
    c.write_results(
        args,
        NAME,
        f"Equal compute on {task}",
        [
            (
                "Runs (coverage and majority in %)",
                c.md_table(
                    [
                        "run",
                        "parameters",
                        "problems",
                        "K",
                        "FLOPs per k",
                        "FLOPs at K",
                        "pass@1",
                        "coverage@K",
                        "majority@K",
                    ],
                    runs,
                )
                + notes,
            ),
            (
                "At equal FLOPs (each row: the budget of k samples of the largest model; in %)",
                c.md_table(headers, matched)
                + "\n\nFLOPs = 2 x parameters x (prompt + completion tokens), summed over problems; "
                "k at a budget = budget / (FLOPs of one sample per problem), rounded.",
            ),
        ],
    )
    c.write_html(args, f"{NAME}-{c.slug(task)}.html", reports, cost_x="flops")


if __name__ == "__main__":
    c.main(run)
