"""Parallel or serial? Sampling, best-of-N, self-refinement, beam search and MCTS at equal compute.

On the same problems and model, five ways to spend inference compute, each at two budgets:

* ``vote``: N samples in parallel, majority vote;
* ``best_of_n``: N samples, the model as judge scores each (1-10), the best is the answer;
* ``refine``: one sample, then up to R rounds of critique and revision (serial);
* ``beam``: step-level beam search (width W, 2 expansions per path) scored by the model as judge;
* ``mcts``: Monte Carlo tree search over steps (I iterations, 2 steps per expansion), judge values.

Every query is an ordinary stored system run (resumable: rerun the same command to go on). The
compute of a method is measured, not configured: the tokens actually evaluated (prompt tokens the
engine did not take from its prompt cache, plus completion tokens, summed over every call of the
query) and the wall time of the query (the median over the problems, so that a query slowed by
other work on the machine does not move it). The chart puts accuracy against both; the table has
the numbers. Run it in the background, alone on the machine (about 9 minutes per problem for all
ten queries on 2 cores with the 0.5B model and PONDER_THREADS=1; two llama.cpp engines with more
threads than cores slow each other down several times over).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import _common as c

from ponder.models import DEFAULT_MODEL
from ponder.runs import system_run, verify_run
from ponder.systems import System
from ponder.tasks import get_task
from ponder.verify import make_verifier

NAME = "tree_vs_sampling"
STEPS = {"max_step_tokens": 96, "max_depth": 8}
JUDGE = {"kind": "judge", "mode": "logprobs"}

BUDGETS: dict[str, dict[str, Any]] = {
    # N samples, refine rounds, beam width, MCTS iterations, token cap of the tree searches
    "small": {"n": 4, "rounds": 1, "width": 2, "iterations": 6, "tokens": 6000},
    "large": {"n": 8, "rounds": 3, "width": 3, "iterations": 10, "tokens": 9000},
}
METHODS = ("vote", "best_of_n", "refine", "beam", "mcts")


def layers(method: str, b: dict[str, Any], max_tokens: int) -> list[Any]:
    """The system of ``method`` at budget ``b``."""
    gen = {"type": "generate", "temperature": 0.7, "max_tokens": max_tokens, "cot": True}
    if method == "vote":
        return [{**gen, "n": b["n"]}, {"type": "vote"}]
    if method == "best_of_n":
        return [{**gen, "n": b["n"]}, {"type": "judge", "mode": "score", "top_k": 1}]
    if method == "refine":
        return [{**gen, "n": 1}, {"type": "refine", "max_rounds": b["rounds"]}]
    tree = {"temperature": 0.7, "steps": STEPS, "scorer": JUDGE, "budget_tokens": b["tokens"]}
    if method == "beam":
        return [{"type": "beam_search", "width": b["width"], "expansions": 2, **tree}]
    if method == "mcts":
        return [{"type": "mcts", "iterations": b["iterations"], "width": 2, **tree}]
    raise SystemExit(f"error: unknown method {method!r}; choose from {', '.join(METHODS)}")


@dataclass
class Row:
    method: str
    budget: str
    correct: int
    problems: int
    evaluated: float
    """Mean tokens evaluated per query (uncached prompt + completion)."""
    prompt: float
    completion: float
    wall_s: float
    """Median wall time per query (robust to the few queries slowed by other work on the machine)."""
    calls: float


def measure(
    store: Any, run_id: str, ids: list[str], verifier: str
) -> tuple[int, float, float, float, float, float]:
    """Correct answers; mean evaluated tokens, prompt, completion per query; median wall time per
    query; mean calls per query."""
    samples = [s for s in store.samples(run_id, ids) if s.index == 0]
    verdicts = store.verdicts(run_id, verifier)
    correct = sum(1 for s in samples if (v := verdicts.get(s.id)) and v.status == "correct")
    evaluated = prompt = completion = calls = 0.0
    walls: list[float] = []
    for s in samples:
        trace = store.trace(s.id or 0)
        for e in trace.events:
            for call in e.calls:
                if call.error is not None or call.reused == call.n:
                    continue
                prompt += call.prompt_tokens - call.cached_prompt_tokens
                completion += call.completion_tokens
                calls += 1
        walls.append(trace.usage.wall_s)
    evaluated = prompt + completion
    k = max(len(samples), 1)
    return (
        correct,
        evaluated / k,
        prompt / k,
        completion / k,
        statistics.median(walls or [0.0]),
        calls / k,
    )


def svg(rows: list[Row]) -> str:
    """Accuracy against evaluated tokens (left) and wall time (right), one colour per method."""
    colors = {
        "vote": "#1f77b4",
        "best_of_n": "#ff7f0e",
        "refine": "#2ca02c",
        "beam": "#d62728",
        "mcts": "#9467bd",
    }
    w, h, pad = 420, 300, 50
    panels = []
    for i, (attr, label) in enumerate(
        (("evaluated", "tokens evaluated per query"), ("wall_s", "median seconds per query"))
    ):
        xs = [getattr(r, attr) for r in rows] or [1.0]
        hi = max(xs) * 1.1 or 1.0
        ox = i * (w + 20)
        items = [
            f'<rect x="{ox}" y="0" width="{w}" height="{h}" fill="white" stroke="#ccc"/>',
            f'<text x="{ox + w / 2}" y="{h - 8}" text-anchor="middle" font-size="12">{label}</text>',
            f'<text x="{ox + 12}" y="{h / 2}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 {ox + 12} {h / 2})">accuracy</text>',
        ]
        for m in METHODS:
            pts = sorted(
                (getattr(r, attr), r.correct / max(r.problems, 1)) for r in rows if r.method == m
            )
            coords = [
                (ox + pad + (x / hi) * (w - 2 * pad), h - pad - y * (h - 2 * pad)) for x, y in pts
            ]
            if len(coords) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
                items.append(f'<polyline points="{path}" fill="none" stroke="{colors[m]}"/>')
            items += [
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colors[m]}"><title>{m}</title></circle>'
                for x, y in coords
            ]
        panels.append("".join(items))
    legend = "".join(
        f'<text x="{10 + 110 * j}" y="{h + 20}" fill="{colors[m]}" font-size="12">{m}</text>'
        for j, m in enumerate(METHODS)
    )
    size = f'width="{2 * w + 20}" height="{h + 30}"'
    return f'<svg xmlns="http://www.w3.org/2000/svg" {size}>{"".join(panels)}{legend}</svg>'


def run() -> None:
    p = c.parser(
        NAME, __doc__, problems=4, n=1, tasks=("gsm8k",), models=(DEFAULT_MODEL,), max_tokens=320
    )
    p.add_argument("--method", action="append", choices=METHODS, help="repeatable (default: all)")
    p.add_argument(
        "--budget", action="append", choices=tuple(BUDGETS), help="repeatable (default: both)"
    )
    args = c.parse_args(p)
    model = args.model[0]
    task = get_task(args.task[0], **c.task_options(args.task_option))
    problems = task.problems()[: args.problems]
    ids = [q.id for q in problems]
    rows: list[Row] = []
    engine = {"backend": "llamacpp", "model": model, "n_parallel": 8, "ctx_per_sequence": 2048}
    if args.threads:
        engine["threads"] = args.threads
    with c.opened(args) as store, make_verifier(task.verifier) as verifier:
        for budget in args.budget or list(BUDGETS):
            for method in args.method or list(METHODS):
                config = {
                    "name": f"{method}-{budget}",
                    "model": engine,
                    "layers": [
                        [layer] for layer in layers(method, BUDGETS[budget], args.max_tokens)
                    ],
                }
                start = time.perf_counter()
                with System.from_dict(config) as system:
                    report = asyncio.run(
                        system_run(store, system, task, problems, concurrency=1, seed=args.seed)
                    )
                verify_run(store, report.run_id, verifier)
                correct, evaluated, prompt, completion, wall, calls = measure(
                    store, report.run_id, ids, verifier.name
                )
                rows.append(
                    Row(
                        method,
                        budget,
                        correct,
                        len(ids),
                        evaluated,
                        prompt,
                        completion,
                        wall,
                        calls,
                    )
                )
                c.log(
                    f"{method} {budget}: {correct}/{len(ids)} correct, {evaluated:,.0f} tokens evaluated "
                    f"per query, median {wall:.1f} s per query ({time.perf_counter() - start:.0f} s this call)"
                )
    table = c.md_table(
        [
            "method",
            "budget",
            "accuracy",
            "tokens evaluated / query",
            "uncached prompt",
            "completion",
            "calls / query",
            "median s / query",
        ],
        [
            [
                r.method,
                r.budget,
                f"{r.correct}/{r.problems}",
                f"{r.evaluated:,.0f}",
                f"{r.prompt:,.0f}",
                f"{r.completion:,.0f}",
                f"{r.calls:.1f}",
                f"{r.wall_s:.1f}",
            ]
            for r in rows
        ],
    )
    (args.out / f"{NAME}.svg").write_text(svg(rows), "utf-8")
    c.write_results(
        args,
        NAME,
        "Parallel vs serial inference at equal compute",
        [
            (
                "Setup",
                f"Model {model}; task {task.name}, problems {', '.join(ids)}; budgets {BUDGETS}.",
            ),
            (
                "Accuracy against compute",
                table + f"\n\nChart: {NAME}.svg (accuracy against tokens "
                "evaluated and against wall time).",
            ),
        ],
    )


if __name__ == "__main__":
    c.main(run)
