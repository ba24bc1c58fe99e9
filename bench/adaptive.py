"""Adaptive stop rules simulated from stored samples: speed, and the evidence on real runs.

Speed (default): a synthetic run of 1,000 problems x 1,000 stored samples with a realistic mix of
problems (decided: one answer holds 80-99% of the samples; split: the right answer and a wrong
one near even; hopeless: rarely right, answers spread over up to 300 classes; unanswered: 50-90%
of the samples without an answer, the rest split), longer completions on harder problems. Times
:func:`ponder.analysis.simulate_adaptive` with 5 rules x 10 thresholds x 100 orderings in rounds
of 4 (target < 10 s), and prints the load average, since the machine may be shared.

Evidence (``--db PATH --run RUN``): the same simulation on a real stored run (read only: copy the
database first if another process writes it). Prints every rule's curve beside majority@k, which
rules lie at or above majority@k at every matched mean number of samples (the baseline linearly
interpolated between checkpoints), the best of them, and the ratio: the mean samples per problem
it needs to reach majority@N's accuracy within 1 point, divided by N. Also majority@1 against
majority@N: the ratio only means something where voting helps (by >= 3 points).

    .venv/bin/python bench/adaptive.py [--problems 1000] [--samples 1000] [--orderings 100] [--json]
    .venv/bin/python bench/adaptive.py --db /tmp/exp-gsm8k.db --run RUN [--orderings 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from ponder.adaptive import answer_key
from ponder.analysis import (
    DEFAULT_RULES,
    AdaptiveSimulation,
    ProblemSamples,
    RunData,
    load_run,
    simulate_adaptive,
)
from ponder.records import SamplingParams
from ponder.store import RunSpec, Store

KINDS = ("decided", "split", "hopeless", "unanswered")
MIX = (0.4, 0.25, 0.2, 0.15)


def _problem(rng: np.random.Generator, i: int, kind: str, samples: int) -> ProblemSamples:
    if kind == "decided":
        lead = rng.uniform(0.8, 0.99)
        shares = np.array([lead, *rng.dirichlet(np.ones(4)) * (1 - lead)])
        unanswered = rng.uniform(0.0, 0.05)
        right = 0 if rng.random() < 0.85 else 1  # some problems are confidently wrong
    elif kind == "split":
        a = rng.uniform(0.3, 0.5)
        b = rng.uniform(0.25, 0.45)
        rest = max(0.0, 1 - a - b)
        shares = np.array([a, b, *rng.dirichlet(np.ones(6)) * rest])
        unanswered = rng.uniform(0.0, 0.1)
        right = int(rng.integers(0, 2))
    elif kind == "hopeless":
        shares = rng.dirichlet(np.full(int(rng.integers(50, 300)), 0.3))
        unanswered = rng.uniform(0.05, 0.3)
        right = 0 if rng.random() < 0.3 else -1  # -1: no answer is right
    else:
        a = rng.uniform(0.3, 0.7)
        shares = np.array([a, *rng.dirichlet(np.ones(5)) * (1 - a)])
        unanswered = rng.uniform(0.5, 0.9)
        right = 0
    shares = shares / shares.sum()
    label = rng.choice(shares.shape[0], size=samples, p=shares)
    none = rng.random(samples) < unanswered
    names = [f"{i}:{j}" for j in range(shares.shape[0])]
    answers: list[str | None] = [None if none[s] else names[label[s]] for s in range(samples)]
    correct = ~none & (label == right)
    hardness = {"decided": 150, "split": 300, "hopeless": 450, "unanswered": 400}[kind]
    tokens = np.maximum(8, rng.normal(hardness, hardness / 3, samples)).astype(np.int64)
    return ProblemSamples(
        problem_id=f"{kind}/{i}",
        reference=names[right] if right >= 0 else "none",
        correct=correct,
        answers=answers,
        scores=np.full(samples, np.nan),
        completion_tokens=tokens,
        prompt_tokens=np.full(samples, 100, dtype=np.int64),
        latency_s=np.zeros(samples),
    )


def make_synthetic_run(problems: int, samples: int, seed: int = 0) -> RunData:
    """``problems`` problems x ``samples`` samples, each problem of one of :data:`KINDS`."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(KINDS), size=problems, p=MIX)
    out = [_problem(rng, i, KINDS[k], samples) for i, k in enumerate(kinds.tolist())]
    spec = RunSpec(model="synthetic", task={"name": "synthetic"}, params=SamplingParams())
    return RunData(run_id=spec.run_id, spec=spec, verifier="synthetic", problems=out)


def majority_at_1(data: RunData, min_samples: int) -> float:
    """Majority@1 over the problems with ``min_samples`` or more samples (those simulated),
    exactly (no checkpoint with rounds of 4): one sample's answer wins, so per problem it is the
    mean over samples of the share of correct samples in the sample's answer class (0 without an
    answer): pass@1 where equal answers get equal verdicts."""
    per_problem = []
    for p in data.problems:
        if p.n < min_samples:
            continue
        right: dict[str, list[bool]] = {}
        for a, c in zip(p.answers, p.correct.tolist(), strict=True):
            key = answer_key(a)
            if key is not None:
                right.setdefault(key, []).append(c)
        share = {k: sum(v) / len(v) for k, v in right.items()}
        per_problem.append(
            sum(share[k] for a in p.answers if (k := answer_key(a)) is not None) / p.n
        )
    return float(np.mean(per_problem))


def curves_json(sim: AdaptiveSimulation) -> dict[str, Any]:
    return {
        "baseline": [
            {
                "k": b.k,
                "accuracy": b.accuracy.mean,
                "coverage": b.coverage.mean,
                "tokens": b.tokens.mean,
            }
            for b in sim.baseline
        ],
        "points": [
            {
                "label": p.label,
                "rule": p.rule,
                "threshold": p.threshold,
                "samples": p.samples.mean,
                "tokens": p.tokens.mean,
                "accuracy": p.accuracy.mean,
                "accuracy_se": p.accuracy.stderr,
                "coverage": p.coverage.mean,
            }
            for p in sim.points
        ],
    }


def speed(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    data = make_synthetic_run(args.problems, args.samples, args.seed)
    build_s = time.perf_counter() - start
    load_before = os.getloadavg()
    start = time.perf_counter()
    sim = simulate_adaptive(data, args.rules.split(","), orderings=args.orderings, seed=args.seed)
    seconds = time.perf_counter() - start
    return {
        "mode": "speed",
        "problems": args.problems,
        "samples": args.samples,
        "orderings": args.orderings,
        "rules": sim.rules(),
        "point_count": len(sim.points),
        "seconds": seconds,
        "synthetic_build_s": build_s,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        **curves_json(sim),
    }


def evidence(args: argparse.Namespace) -> dict[str, Any]:
    with Store(args.db) as store:
        data = load_run(store, args.run)
    start = time.perf_counter()
    sim = simulate_adaptive(
        data,
        args.rules.split(","),
        orderings=args.orderings,
        seed=args.seed,
        max_samples=args.max_samples,
    )
    seconds = time.perf_counter() - start
    base = sim.baseline
    maj1 = majority_at_1(data, sim.max_samples)
    gain = base[-1].accuracy.mean - maj1
    verdicts = sim.verdicts()
    best = sim.best()
    # Where no rule is at or above majority@k everywhere, the best of those whose shortfall is
    # within two paired standard errors everywhere.
    noisy = [v for v in verdicts if v.within_noise and v.ratio is not None]
    close = min(noisy, key=lambda v: v.ratio or 0.0) if noisy else None
    return {
        "mode": "evidence",
        "run": data.run_id,
        "task": data.task,
        "model": data.spec.model,
        "problems": sim.problems,
        "left_out": sim.left_out,
        "n": sim.max_samples,
        "orderings": sim.orderings,
        "seconds": seconds,
        "majority_at_1": maj1,
        "majority_at_n": base[-1].accuracy.mean,
        "coverage_at_n": base[-1].coverage.mean,
        "voting_gain": gain,
        "voting_helps": gain >= 0.03,
        "dominating_rules": [v.rule for v in verdicts if v.dominates],
        "verdicts": [
            {
                "rule": v.rule,
                "dominates": v.dominates,
                "points_at_or_above": sum(v.at_or_above),
                "points": len(v.at_or_above),
                "worst_gap": v.worst_gap,
                "worst_gap_stderr": v.gap_stderr[v.gaps.index(v.worst_gap)],
                "within_noise": v.within_noise,
                "samples_to_match": v.samples_to_match,
                "ratio": v.ratio,
            }
            for v in verdicts
        ],
        "best": None if best is None else best.rule,
        "best_ratio": None if best is None else best.ratio,
        "within_noise_rules": [v.rule for v in verdicts if v.within_noise],
        "best_within_noise": None if close is None else close.rule,
        "best_within_noise_ratio": None if close is None else close.ratio,
        **curves_json(sim),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--problems", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--orderings", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rules", default=",".join(DEFAULT_RULES), help="comma-separated rule names")
    ap.add_argument("--db", help="a store holding a real run (evidence mode, with --run)")
    ap.add_argument("--run", help="the run id (or a unique prefix) in --db")
    ap.add_argument(
        "--max-samples",
        type=int,
        help="evidence: N (default: the smallest number of samples of any problem); problems "
        "with fewer are left out, e.g. while a run is still being drawn",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()
    if (args.db is None) != (args.run is None):
        ap.error("--db and --run go together")
    result = evidence(args) if args.db else speed(args)
    if args.json:
        print(json.dumps(result))
        return
    if result["mode"] == "speed":
        print(
            f"{result['problems']} problems x {result['samples']} samples, "
            f"{len(result['rules'])} rules ({', '.join(result['rules'])}), {result['point_count']} "
            f"(rule, threshold) points, {result['orderings']} orderings per problem, rounds of 4"
        )
        print(f"(building the synthetic run: {result['synthetic_build_s']:.2f} s, not counted)")
        print(f"  simulate_adaptive: {result['seconds']:.2f} s   (target < 10 s)")
        la, lb = result["load_average_before"], result["load_average_after"]
        print(
            f"  load average before {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}, after {lb[0]:.2f} "
            f"{lb[1]:.2f} {lb[2]:.2f} on {result['cpus']} CPUs"
        )
        return
    print_evidence(result)


def print_evidence(r: dict[str, Any]) -> None:
    print(
        f"run {r['run']}: task {r['task']}, model {r['model']}, {r['problems']} problems "
        f"({r['left_out']} left out) x N = {r['n']}, {r['orderings']} orderings, "
        f"simulated in {r['seconds']:.2f} s"
    )
    print(f"{'k':>6} {'majority@k':>11} {'coverage@k':>11} {'tokens':>9}")
    for b in r["baseline"]:
        print(f"{b['k']:>6} {b['accuracy']:>11.3f} {b['coverage']:>11.3f} {b['tokens']:>9.0f}")
    print(f"{'rule':<58} {'samples':>8} {'tokens':>9} {'accuracy':>9} {'coverage':>9}")
    for p in r["points"]:
        print(
            f"{p['label']:<58} {p['samples']:>8.2f} {p['tokens']:>9.0f} {p['accuracy']:>9.3f} "
            f"{p['coverage']:>9.3f}"
        )
    print(
        f"majority@1 {r['majority_at_1']:.3f} -> majority@{r['n']} "
        f"{r['majority_at_n']:.3f} (+{r['voting_gain'] * 100:.1f} points): voting "
        + ("helps (>= 3 points)" if r["voting_helps"] else "does NOT help by >= 3 points here")
    )
    for v in r["verdicts"]:
        need = (
            f"reaches majority@{r['n']} - 1 point at {v['samples_to_match']:.2f} samples "
            f"(ratio {v['ratio']:.3f})"
            if v["ratio"] is not None
            else f"never reaches majority@{r['n']} - 1 point"
        )
        print(
            f"  {v['rule']:<14} {v['points_at_or_above']}/{v['points']} points at or above "
            f"majority@k{' (dominates)' if v['dominates'] else ''} (worst point "
            f"{v['worst_gap'] * 100:+.1f} points, paired se {v['worst_gap_stderr'] * 100:.1f}"
            f"{', within noise' if v['within_noise'] else ''}); {need}"
        )
    if r["best"] is None:
        print("no rule lies at or above majority@k at every matched mean")
    else:
        print(f"best rule: {r['best']}, ratio {r['best_ratio']:.3f}")
    print(
        "rules within 2 paired standard errors of majority@k everywhere: "
        + (", ".join(r["within_noise_rules"]) or "none")
    )
    if r["best_within_noise"] is not None:
        print(f"best of those: {r['best_within_noise']}, ratio {r['best_within_noise_ratio']:.3f}")


if __name__ == "__main__":
    main()
