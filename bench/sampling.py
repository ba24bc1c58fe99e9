"""Embedded sampling throughput: Ponder vs raw xllamacpp, measured in one run on one engine.

Three ways to draw N samples of one GSM8K prompt:

* raw:    one request with ``n = N`` straight to the xllamacpp engine (the engine's best case);
* ponder: Ponder's embedded backend, ``generate(prompt, N)`` (thread hop, token probabilities for exact
  per-sample token counts, result parsing);
* naive:  N sequential single-sample requests to the same engine.

All three use the same engine instance and settings; raw and ponder use the same seed in each repetition, so they
decode the same tokens and the comparison isolates Ponder's overhead. Targets (issue 2): ponder >= 0.9x raw
tokens/s and >= 1.6x naive tokens/s. Also prints how many prompt tokens the engine evaluated for Ponder's
n-request (once, not N times).

    .venv/bin/python bench/sampling.py [--model qwen2.5-coder-0.5b] [--n 16] [--max-tokens 64] [--reps 6]
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
from ponder.records import Message, SamplingParams
from ponder.tasks import get_task


def raw_request(
    backend: LlamaCppBackend, prompt: list[Message], n: int, params: SamplingParams
) -> tuple[float, float, list[str]]:
    """One plain n-request to the engine; returns (wall s, decoded tokens, texts)."""
    body: dict[str, Any] = {
        "messages": [m.model_dump() for m in prompt],
        "n": n,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "seed": params.seed,
        "cache_prompt": False,
    }
    before = backend.metrics()["tokens_predicted_total"]
    start = time.perf_counter()
    result = backend.engine.handle_chat_completions(body)
    wall = time.perf_counter() - start
    tokens = backend.metrics()["tokens_predicted_total"] - before
    texts = [c["message"]["content"] for c in sorted(result["choices"], key=lambda c: c["index"])]
    return wall, tokens, texts


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=6, help="repetitions of raw and ponder")
    ap.add_argument("--naive-reps", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    task = get_task("gsm8k")
    prompt = task.prompt(task.problems()[0])
    params = SamplingParams(temperature=0.7, max_tokens=args.max_tokens, seed=1234)

    backend = LlamaCppBackend(LlamaCppConfig(model=args.model, n_parallel=args.n))
    raw_request(backend, prompt, 2, params.model_copy(update={"max_tokens": 4}))  # warm-up

    rates: dict[str, list[float]] = {"raw": [], "ponder": [], "naive": []}
    evaluated: list[float] = []
    same_text: list[bool] = []
    prompt_tokens_seen: list[int] = []
    for rep in range(args.reps):
        p = params.model_copy(update={"seed": params.seed + 100 * rep})

        def run_raw(p: SamplingParams = p) -> list[str]:
            w, t, texts = raw_request(backend, prompt, args.n, p)
            rates["raw"].append(t / w)
            return texts

        def run_ponder(p: SamplingParams = p) -> list[str]:
            before = backend.metrics()["prompt_tokens_total"]
            start = time.perf_counter()
            gen = asyncio.run(backend.generate(prompt, args.n, p))
            w = time.perf_counter() - start
            evaluated.append(backend.metrics()["prompt_tokens_total"] - before)
            prompt_tokens_seen.append(gen.prompt_tokens)
            rates["ponder"].append(sum(c.completion_tokens for c in gen.completions) / w)
            return [c.text for c in gen.completions]

        # Alternate which goes first so that drift in machine speed does not favour either.
        if rep % 2 == 0:
            raw_texts, ponder_texts = run_raw(), run_ponder()
        else:
            ponder_texts, raw_texts = run_ponder(), run_raw()
        same_text.append(ponder_texts == raw_texts)

    for rep in range(args.naive_reps):
        wall = tokens = 0.0
        for i in range(args.n):
            p = params.model_copy(update={"seed": params.seed + 100 * rep + i})
            w, t, _ = raw_request(backend, prompt, 1, p)
            wall += w
            tokens += t
        rates["naive"].append(tokens / wall)
    backend.close()

    med = {k: statistics.median(v) for k, v in rates.items()}
    # Paired: each repetition's ponder/raw ratio is taken on the same seed, back to back, so slow drift in
    # machine speed cancels; the median of the paired ratios is the headline number.
    paired = [p / r for p, r in zip(rates["ponder"], rates["raw"], strict=True)]
    result = {
        "model": args.model,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "reps": args.reps,
        "cpu_count": os.cpu_count(),
        "tokens_per_s": med,
        "runs": rates,
        "ponder_vs_raw": statistics.median(paired),
        "ponder_vs_raw_per_rep": paired,
        "ponder_vs_naive": med["ponder"] / med["naive"],
        "ponder_and_raw_identical_samples": same_text,
        "prompt_tokens": prompt_tokens_seen[-1],
        "prompt_tokens_evaluated_per_n_request": evaluated,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"model {args.model}, {args.n} samples of one GSM8K prompt, max {args.max_tokens} tokens, "
        f"{os.cpu_count()} cores; median of {args.reps} reps (naive: {args.naive_reps})"
    )
    for k in ("raw", "ponder", "naive"):
        print(f"  {k:7s} {med[k]:7.1f} tok/s   runs: {', '.join(f'{r:.1f}' for r in rates[k])}")
    print(
        f"  ponder / raw n-request = {result['ponder_vs_raw']:.2f}x  (target >= 0.90; median of paired "
        f"reps: {', '.join(f'{x:.2f}' for x in paired)})"
    )
    print(f"  ponder / naive loop    = {result['ponder_vs_naive']:.2f}x  (target >= 1.60)")
    print(f"  ponder and raw drew identical samples: {same_text}")
    print(
        f"  prompt: {prompt_tokens_seen[-1]} tokens; evaluated per n={args.n} request: {evaluated}"
    )


if __name__ == "__main__":
    main()
