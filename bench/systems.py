"""Composed systems on the embedded engine: Ponder's overhead, and concurrency within a layer.

1. Overhead. The 3-layer system ``generate n=8 -> rank (listwise, top 3) -> fuse`` answers a few GSM8K
   problems through Ponder (``System.arun``). Its trace records every backend call (prompt, n,
   sampling params, repair calls included); the same calls are then issued back to back by hand with
   ``backend.generate`` on the same engine, with the same batching (n=8 in one request). The
   headline is the median over problems and repetitions of ``ponder wall / hand wall``; the order
   of the two alternates between repetitions so drift in machine speed favours neither.
   Target (issue 5): <= 1.2x.
2. Concurrency. One layer of 4 independent ``generate`` components (n=1 each) runs concurrently: the
   layer's wall time is compared with the sum of the same 4 calls issued one after the other by hand
   (their solo latencies). llama.cpp batches concurrent requests (continuous batching: their
   sequences decode together), so the layer should take well below the sum. Also printed: the sum
   of the components' own latencies inside the concurrent layer (each is longer than solo, since
   they share the engine), and the same 4 calls issued together by hand (what the engine can do).
   Where the engine has no spare compute (measured here: one engine thread on a busy 2-core CPU)
   the 4 requests together take about as long as one after the other, and the comparison with the
   by-hand concurrent calls is the one that shows whether Ponder serialises anything.

    .venv/bin/python bench/systems.py [--model smollm2-135m] [--problems 3] [--reps 2]
        [--max-tokens 64] [--threads N] [--json]

The machine's load average is printed with the results: on a shared machine absolute times move,
the paired ratios much less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

from ponder.backends import LlamaCppBackend, LlamaCppConfig
from ponder.records import Message
from ponder.systems import CallRecord, System, SystemConfig, Trace
from ponder.tasks import get_task


def pipeline(max_tokens: int) -> SystemConfig:
    return SystemConfig.from_data(
        {
            "name": "generate8-rank3-fuse",
            "layers": [
                {"type": "generate", "n": 8, "max_tokens": max_tokens},
                {"type": "rank", "mode": "listwise", "top_k": 3, "max_tokens": max_tokens},
                {"type": "fuse", "max_tokens": max_tokens},
            ],
        }
    )


def four_wide(max_tokens: int) -> SystemConfig:
    return SystemConfig.from_data(
        {
            "name": "four-generators",
            "layers": [
                [
                    {"type": "generate", "label": f"g{i}", "n": 1, "max_tokens": max_tokens}
                    for i in range(1, 5)
                ]
            ],
        }
    )


def calls_in_order(trace: Trace) -> list[CallRecord]:
    """The trace's backend calls, layer by layer, component by component, in issue order."""
    return [c for event in trace.events for c in event.calls]


async def replay(
    backend: LlamaCppBackend, calls: list[CallRecord]
) -> tuple[float, int, list[float]]:
    """Issue ``calls`` back to back on ``backend``; returns (wall s, completion tokens, latencies)."""
    tokens = 0
    latencies = []
    start = time.perf_counter()
    for call in calls:
        t0 = time.perf_counter()
        gen = await backend.generate(call.prompt, call.n, call.params)
        latencies.append(time.perf_counter() - t0)
        tokens += sum(c.completion_tokens for c in gen.completions)
    return time.perf_counter() - start, tokens, latencies


async def through_ponder(
    system: System, query: list[Message], seed: int
) -> tuple[float, int, Trace]:
    start = time.perf_counter()
    result = await system.arun(query, seed=seed)
    return time.perf_counter() - start, result.usage.completion_tokens, result.trace


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    task = get_task("gsm8k")
    problems = task.problems()[: args.problems]
    load_before = os.getloadavg()
    backend = LlamaCppBackend(
        LlamaCppConfig(
            model=args.model, n_parallel=8, ctx_per_sequence=args.ctx, threads=args.threads
        )
    )
    backend.start()
    system = System(pipeline(args.max_tokens), default_backend=backend)
    wide = System(four_wide(args.max_tokens), default_backend=backend)
    try:
        # Warm-up, and the calls to replay: Ponder's own calls for each problem (fixed seed).
        captured = {}
        for i, p in enumerate(problems):
            _, _, trace = await through_ponder(system, task.prompt(p), seed=i)
            captured[p.id] = calls_in_order(trace)
        pairs = []
        for rep in range(args.reps):
            for i, p in enumerate(problems):
                calls = captured[p.id]
                ponder_first = (rep + i) % 2 == 0
                if ponder_first:
                    pw, pt, trace = await through_ponder(system, task.prompt(p), seed=i)
                    hw, ht, _ = await replay(backend, calls)
                else:
                    hw, ht, _ = await replay(backend, calls)
                    pw, pt, trace = await through_ponder(system, task.prompt(p), seed=i)
                # The engine is not batch-invariant, so a rerun may sample other tokens and build
                # other rank/fuse prompts; the calls' shape (purpose, n, params) must match.
                same = [(c.purpose, c.n, c.params) for c in calls_in_order(trace)] == [
                    (c.purpose, c.n, c.params) for c in calls
                ]
                pairs.append(
                    {
                        "problem": p.id,
                        "rep": rep,
                        "order": "ponder first" if ponder_first else "hand first",
                        "calls": len(calls),
                        "ponder_s": pw,
                        "hand_s": hw,
                        "ratio": pw / hw,
                        "ponder_completion_tokens": pt,
                        "hand_completion_tokens": ht,
                        "same_call_shapes": same,
                    }
                )

        # A layer of 4 independent components: concurrent through Ponder vs one after the other.
        layers = []
        for rep in range(args.reps):
            p = problems[rep % len(problems)]
            _, _, trace = await through_ponder(wide, task.prompt(p), seed=100 + rep)
            layer = trace.layers[0]
            calls = calls_in_order(trace)
            _, _, solo = await replay(backend, calls)
            start = time.perf_counter()
            await asyncio.gather(*(backend.generate(c.prompt, c.n, c.params) for c in calls))
            hand_concurrent = time.perf_counter() - start
            layers.append(
                {
                    "problem": p.id,
                    "layer_wall_s": layer.wall_s,
                    "components_own_s": [e.usage.wall_s for e in layer.events],
                    "sum_components_own_s": sum(e.usage.wall_s for e in layer.events),
                    "solo_latencies_s": solo,
                    "sum_solo_s": sum(solo),
                    "hand_concurrent_s": hand_concurrent,
                    "layer_vs_sum_solo": layer.wall_s / sum(solo),
                }
            )
    finally:
        await system.aclose()
        await wide.aclose()
        backend.close()
    ratios = [x["ratio"] for x in pairs]
    return {
        "model": args.model,
        "problems": [p.id for p in problems],
        "reps": args.reps,
        "max_tokens": args.max_tokens,
        "cpu_count": os.cpu_count(),
        "threads": args.threads or os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "pipeline": {
            "system": system.config.describe(),
            "pairs": pairs,
            "median_ratio": statistics.median(ratios),
            "target": 1.2,
        },
        "concurrent_layer": {
            "system": wide.config.describe(),
            "reps": layers,
            "median_layer_vs_sum_solo": statistics.median(x["layer_vs_sum_solo"] for x in layers),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=3, help="GSM8K problems (the first ones)")
    ap.add_argument("--reps", type=int, default=2, help="repetitions per problem")
    ap.add_argument("--max-tokens", type=int, default=64, help="max tokens of every call")
    ap.add_argument("--ctx", type=int, default=2048, help="context per sequence")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="engine threads (default: all cores; on a loaded machine 1 avoids llama.cpp's threads "
        "waiting on each other)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    pipe, wide = result["pipeline"], result["concurrent_layer"]
    print(
        f"model {args.model}, {len(result['problems'])} GSM8K problems x {args.reps} reps, "
        f"max {args.max_tokens} tokens per call, {result['cpu_count']} cores "
        f"({result['threads']} engine threads), load average "
        f"{result['load_average_before'][0]:.1f} before, {result['load_average_after'][0]:.1f} after"
    )
    print(f"1. {pipe['system']}: Ponder vs the same calls by hand, back to back")
    for x in pipe["pairs"]:
        print(
            f"   {x['problem']:10s} rep {x['rep']} ({x['order']:12s}) {x['calls']} calls: "
            f"ponder {x['ponder_s']:6.2f} s, hand {x['hand_s']:6.2f} s, ratio {x['ratio']:.3f} "
            f"(tokens {x['ponder_completion_tokens']}/{x['hand_completion_tokens']}"
            f"{'' if x['same_call_shapes'] else ', other calls'})"
        )
    print(f"   median ratio {pipe['median_ratio']:.3f}x  (target <= {pipe['target']})")
    print(f"2. {wide['system']}: one layer of 4 concurrent components")
    for x in wide["reps"]:
        print(
            f"   {x['problem']:10s} layer {x['layer_wall_s']:6.2f} s vs {x['sum_solo_s']:6.2f} s "
            f"for the 4 calls one after the other ({x['layer_vs_sum_solo']:.2f}x) and "
            f"{x['hand_concurrent_s']:.2f} s for them issued together by hand; the components' "
            f"own latencies in the layer sum to {x['sum_components_own_s']:.2f} s"
        )
    print(f"   median layer / sequential sum {wide['median_layer_vs_sum_solo']:.2f}x")


if __name__ == "__main__":
    main()
