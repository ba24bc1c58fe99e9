"""Embedded sampling throughput: Ponder vs raw xllamacpp, measured in one run.

Three ways to draw N samples of one GSM8K prompt, on identical engine settings:

* raw:   one xllamacpp request with ``n = N`` (the engine's best case);
* ponder: Ponder's embedded backend, ``generate(prompt, N)``;
* naive: N sequential single-sample xllamacpp requests.

Targets (issue 2): ponder >= 0.9x raw tokens/s, and ponder >= 1.6x naive tokens/s. Also prints how many
prompt tokens the engine evaluated for Ponder's n-request (once, not N times).

    .venv/bin/python bench/sampling.py [--model qwen2.5-coder-0.5b] [--n 16] [--max-tokens 128] [--reps 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from typing import Any

import xllamacpp

from ponder.backends import LlamaCppBackend, LlamaCppConfig
from ponder.models import resolve_model
from ponder.records import SamplingParams
from ponder.tasks import get_task


def raw_server(model: str, slots: int) -> Any:
    threads = os.cpu_count() or 1
    p = xllamacpp.CommonParams()
    p.model.path = str(resolve_model(model))
    p.n_parallel = slots
    p.n_ctx = slots * 2048
    p.kv_unified = True
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.endpoint_metrics = True
    p.warmup = False
    p.verbosity = -1
    return xllamacpp.Server(p)


def predicted(server: Any) -> float:
    for line in server.handle_metrics().splitlines():
        if line.startswith("llamacpp:tokens_predicted_total"):
            return float(line.split()[1])
    raise RuntimeError("metrics missing tokens_predicted_total")


def raw_run(
    server: Any, messages: list[dict[str, str]], n: int, params: SamplingParams
) -> tuple[float, float]:
    body = {
        "messages": messages,
        "n": n,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "seed": params.seed,
        "cache_prompt": False,
    }
    before = predicted(server)
    start = time.perf_counter()
    server.handle_chat_completions(body)
    return time.perf_counter() - start, predicted(server) - before


def naive_run(
    server: Any, messages: list[dict[str, str]], n: int, params: SamplingParams
) -> tuple[float, float]:
    wall = tokens = 0.0
    for i in range(n):
        w, t = raw_run(server, messages, 1, params.model_copy(update={"seed": params.seed + i}))
        wall += w
        tokens += t
    return wall, tokens


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    task = get_task("gsm8k")
    problem = task.problems()[0]
    prompt = task.prompt(problem)
    messages = [m.model_dump() for m in prompt]
    params = SamplingParams(temperature=0.7, max_tokens=args.max_tokens, seed=1234)

    rates: dict[str, list[float]] = {"raw": [], "ponder": [], "naive": []}
    server = raw_server(args.model, args.n)
    raw_run(server, messages, 2, params.model_copy(update={"max_tokens": 4}))  # warm-up
    backend = LlamaCppBackend(LlamaCppConfig(model=args.model, n_parallel=args.n))
    asyncio.run(backend.generate(prompt, 2, params.model_copy(update={"max_tokens": 4})))
    evaluated: list[float] = []
    prompt_tokens = 0
    for rep in range(args.reps):
        p = params.model_copy(update={"seed": params.seed + 100 * rep})
        w, t = raw_run(server, messages, args.n, p)
        rates["raw"].append(t / w)

        before = backend.metrics()["prompt_tokens_total"]
        start = time.perf_counter()
        gen = asyncio.run(backend.generate(prompt, args.n, p))
        w = time.perf_counter() - start
        evaluated.append(backend.metrics()["prompt_tokens_total"] - before)
        prompt_tokens = gen.prompt_tokens
        rates["ponder"].append(sum(c.completion_tokens for c in gen.completions) / w)

        w, t = naive_run(server, messages, args.n, p)
        rates["naive"].append(t / w)
    backend.close()

    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "model": args.model,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "reps": args.reps,
        "cpu_count": os.cpu_count(),
        "tokens_per_s": med,
        "ponder_vs_raw": med["ponder"] / med["raw"],
        "ponder_vs_naive": med["ponder"] / med["naive"],
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_evaluated_per_n_request": evaluated,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"model {args.model}, {args.n} samples of one GSM8K prompt, max {args.max_tokens} tokens, "
        f"{args.reps} reps (median)"
    )
    for k in ("raw", "ponder", "naive"):
        print(f"  {k:7s} {med[k]:7.1f} tok/s   runs: {', '.join(f'{r:.1f}' for r in rates[k])}")
    print(f"  ponder / raw n-request   = {result['ponder_vs_raw']:.2f}x  (target >= 0.90)")
    print(f"  ponder / naive loop      = {result['ponder_vs_naive']:.2f}x  (target >= 1.60)")
    print(f"  prompt: {prompt_tokens} tokens; evaluated per n={args.n} request: {evaluated}")


if __name__ == "__main__":
    main()
