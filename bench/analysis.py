"""Analysis speed on a large synthetic run: coverage and selection curves.

A synthetic run of 1,000 problems x 10,000 samples (per-problem difficulty p_i ~ Beta(0.6, 0.6),
verdicts ~ Bernoulli(p_i); correct samples carry the reference answer, wrong ones one of ~5 wrong
answers, 2% unparsed; random scores). Times, on a log grid of ~14 k up to 10,000:

* coverage: unbiased pass@k per problem and k, and the coverage curve with a 1,000-resample
  bootstrap band;
* encode: turning the 10 million answer strings into class ids, done once per run by the first
  voting method and reused by the others (timed on its own here);
* majority: majority@k over 100 random subsets per problem and k;
* best_of and weighted: the same for best-of-k and score-weighted voting.

Target: coverage, pass@k and majority@k together in < 3 s on 2 cores (best-of-k and weighted
vote are timed as well).

Then the report: a synthetic run of 100 problems x 1,000 samples (realistic ~300-character texts)
is written into a real SQLite store, and ``ponder report RUN --html OUT`` is timed end to end in a
subprocess: CLI start-up, loading the run from SQLite, every analysis (1,000-resample bootstrap,
100 subsets per k for selection@k, the scaling fit, cost) and rendering the self-contained HTML
with its charts. Target: < 5 s.

    .venv/bin/python bench/analysis.py [--problems 1000] [--samples 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ponder.analysis import ProblemSamples, RunData, coverage_curve, k_grid_log, selection_curve

# The answer encoding is cached per run and shared by every selection method; the bench times it
# on its own, which only the private helper allows.
from ponder.analysis._select import _encoded
from ponder.records import Problem, Sample, SamplingParams, Verdict
from ponder.store import RunSpec, Store

WRONG_ANSWERS = 5


def make_synthetic_run(problems: int, samples: int, seed: int = 0) -> RunData:
    """A run with known structure: ``problems`` problems with ``samples`` verified samples each."""
    rng = np.random.default_rng(seed)
    difficulty = rng.beta(0.6, 0.6, size=problems)
    correct = rng.random((problems, samples)) < difficulty[:, None]
    wrong_class = rng.integers(1, WRONG_ANSWERS + 1, size=(problems, samples))
    unparsed = ~correct & (rng.random((problems, samples)) < 0.02)
    # Scores a little higher on correct samples, as a mean token log-probability might be.
    scores = rng.normal(-1.0, 0.5, size=(problems, samples)) + 0.2 * correct
    tokens = rng.integers(50, 400, size=(problems, samples))
    out = []
    for i in range(problems):
        names = [str(100 * i + j) for j in range(WRONG_ANSWERS + 1)]  # names[0] is the reference
        label = np.where(correct[i], 0, wrong_class[i])
        answers: list[str | None] = [names[j] for j in label.tolist()]
        for j in np.flatnonzero(unparsed[i]).tolist():
            answers[j] = None
        out.append(
            ProblemSamples(
                problem_id=f"p{i}",
                reference=names[0],
                correct=correct[i],
                answers=answers,
                scores=scores[i],
                completion_tokens=tokens[i],
                prompt_tokens=np.full(samples, 100, dtype=np.int64),
                latency_s=np.zeros(samples),
            )
        )
    spec = RunSpec(model="synthetic", task={"name": "synthetic"}, params=SamplingParams())
    return RunData(run_id=spec.run_id, spec=spec, verifier="synthetic", problems=out)


def write_synthetic_store(path: Path, problems: int, samples: int, seed: int = 0) -> str:
    """A verified run of ``problems`` x ``samples`` in a SQLite store; returns its run id."""
    data = make_synthetic_run(problems, samples, seed)
    spec = RunSpec(
        model="synthetic",
        task={"name": "jsonl", "path": "synthetic.jsonl"},
        params=SamplingParams(max_tokens=400),
    )
    filler = "Let us compute step by step. " * 9
    with Store(path) as store:
        store.ensure_run(spec)
        store.add_problems(
            spec.run_id,
            [
                Problem(
                    id=p.problem_id, question=f"Question {p.problem_id}?", reference=p.reference
                )
                for p in data.problems
            ],
        )
        for p in data.problems:
            rows = [
                Sample(
                    run_id=spec.run_id,
                    problem_id=p.problem_id,
                    index=j,
                    text=f"{filler}The answer is {p.answers[j] or 'unclear'}.",
                    finish_reason="stop",
                    completion_tokens=int(p.completion_tokens[j]),
                    prompt_tokens=100,
                    latency_s=0.5,
                    seed=j,
                    mean_logprob=float(p.scores[j]),
                )
                for j in range(p.n)
            ]
            ids = store.add_samples(rows)
            store.add_verdicts(
                "math",
                [
                    (
                        sid,
                        Verdict(
                            status=(
                                "correct"
                                if p.correct[j]
                                else "incorrect"
                                if p.answers[j]
                                else "unparsed"
                            ),
                            extracted=p.answers[j],
                        ),
                    )
                    for j, sid in enumerate(ids)
                ],
            )
    return spec.run_id


def time_report(problems: int, samples: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        run_id = write_synthetic_store(db, problems, samples, seed)
        out = Path(tmp) / "report.html"
        cmd = [sys.executable, "-m", "ponder", "report", run_id, "--db", str(db),
               "--html", str(out)]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        return {
            "problems": problems,
            "samples": samples,
            "seconds": seconds,
            "html_bytes": out.stat().st_size,
        }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--problems", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--subsets", type=int, default=100)
    ap.add_argument("--points", type=int, default=14, help="log-grid points for k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report-problems", type=int, default=100)
    ap.add_argument("--report-samples", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()

    build_s, data = timed(lambda: make_synthetic_run(args.problems, args.samples, args.seed))
    ks = k_grid_log(args.samples, args.points)
    times: dict[str, float] = {}
    curves = {}
    times["coverage"], curves["coverage"] = timed(lambda: coverage_curve(data, ks, bootstrap=1000))
    times["encode"], _ = timed(lambda: _encoded(data))
    for method in ("majority", "best_of", "weighted"):
        times[method], curves[method] = timed(
            lambda m=method: selection_curve(data, m, ks, subsets=args.subsets)
        )
    total = sum(times.values())
    # The target covers pass@k, coverage and majority@k; best-of-k and weighted vote are
    # timed too and reported beside it.
    target_set = times["coverage"] + times["encode"] + times["majority"]
    report = time_report(args.report_problems, args.report_samples, args.seed)
    result = {
        "problems": args.problems,
        "samples": args.samples,
        "subsets": args.subsets,
        "ks": ks.tolist(),
        "seconds": {**times, "total": total, "coverage_and_majority": target_set},
        "synthetic_build_s": build_s,
        "curves": {name: c.mean.tolist() for name, c in curves.items()},
        "report": report,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.problems} problems x {args.samples} samples, {len(ks)} k: {ks.tolist()}")
    print(f"(building the synthetic run: {build_s:.2f} s, not counted)")
    for name, seconds in times.items():
        print(f"  {name:<9} {seconds:6.3f} s")
    print(f"  coverage + pass@k + majority@k: {target_set:6.3f} s   (target < 3 s)")
    print(f"  every method, best-of-k and weighted included: {total:6.3f} s")
    for name, c in curves.items():
        print(f"  {name:<9} " + " ".join(f"{v:.3f}" for v in c.mean))
    print(
        f"ponder report --html, {report['problems']} problems x {report['samples']} samples from "
        f"SQLite: {report['seconds']:.2f} s end to end, {report['html_bytes'] / 1e6:.1f} MB "
        "(target < 5 s)"
    )


if __name__ == "__main__":
    main()
