"""Replicas behind ``--base-url``: throughput of the openai backend over 1 and over 2 llama.cpp servers.

Starts real llama.cpp servers (xllamacpp, each in its own process, on 127.0.0.1) on the test model and
sends the same requests (``--requests`` single-completion requests of ``--max-tokens`` tokens, seeds
0..N-1, at most ``--concurrency`` in flight) through one :class:`~ponder.backends.OpenAIBackend`, first
with one server, then with two as replicas. Each server gets ``--threads`` threads; the default (1) on
a 2-core machine gives two replicas the cores one server leaves idle, so the ratio says what a second
node would add only where the CPU is not already shared. Prints requests/s, completion tokens/s, how the
requests were split over the replicas, the ratio two/one and the load average (the machine may be busy).

    .venv/bin/python bench/replicas.py [--requests 32] [--max-tokens 16] [--concurrency 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

from ponder.backends import OpenAIBackend, OpenAIConfig
from ponder.models import resolve_model
from ponder.records import Message, SamplingParams

MODEL = "smollm2-135m"

_SERVER = """
import sys, time, xllamacpp
p = xllamacpp.CommonParams()
p.model.path = sys.argv[1]
p.n_parallel = int(sys.argv[2])
p.n_ctx = 1024 * p.n_parallel
p.kv_unified = True
p.cpuparams.n_threads = int(sys.argv[3])
p.cpuparams_batch.n_threads = int(sys.argv[3])
p.verbosity = -1
p.warmup = False
s = xllamacpp.Server(p)
print(str(s.listening_address).rstrip("/"), flush=True)
while True:
    time.sleep(60)
"""


def start_server(stack: ExitStack, parallel: int, threads: int) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(resolve_model(MODEL)), str(parallel), str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    stack.callback(proc.wait, 30)
    stack.callback(proc.kill)
    assert proc.stdout is not None
    return proc.stdout.readline().strip() + "/v1"


async def measure(
    urls: list[str], requests: int, max_tokens: int, concurrency: int
) -> dict[str, Any]:
    backend = OpenAIBackend(
        OpenAIConfig(base_url=urls, model=MODEL, max_concurrency=concurrency, logprobs=True)
    )
    prompt = [Message(role="user", content="Write a short story about a robot.")]
    try:
        # One warm-up request per replica (a server's first request is slow).
        warm = SamplingParams(max_tokens=1, seed=0)
        await asyncio.gather(*(backend.generate(prompt, 1, warm) for _ in urls))
        served_before = [r.served for r in backend.replicas.replicas]
        start = time.perf_counter()
        gens = await asyncio.gather(
            *(
                backend.generate(
                    prompt, 1, SamplingParams(temperature=0.8, max_tokens=max_tokens, seed=i)
                )
                for i in range(requests)
            )
        )
        wall = time.perf_counter() - start
    finally:
        await backend.aclose()
    tokens = sum(c.completion_tokens for g in gens for c in g.completions)
    split = [r.served - b for r, b in zip(backend.replicas.replicas, served_before, strict=True)]
    return {
        "replicas": len(urls),
        "wall_s": round(wall, 3),
        "requests_per_s": round(requests / wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "requests_per_replica": split,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="threads of each server")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with ExitStack() as stack:
        urls = [start_server(stack, args.concurrency, args.threads) for _ in range(2)]
        one = asyncio.run(measure(urls[:1], args.requests, args.max_tokens, args.concurrency))
        two = asyncio.run(measure(urls, args.requests, args.max_tokens, args.concurrency))
    result = {
        "model": MODEL,
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "concurrency": args.concurrency,
        "threads_per_server": args.threads,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "one": one,
        "two": two,
        "ratio_two_over_one": round(two["tokens_per_s"] / one["tokens_per_s"], 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for row in (one, two):
        print(
            f"{row['replicas']} replica(s): {row['requests_per_s']:.2f} req/s, "
            f"{row['tokens_per_s']:.1f} tok/s, requests per replica {row['requests_per_replica']}"
        )
    print(
        f"two / one: {result['ratio_two_over_one']:.2f}x  "
        f"(threads per server {args.threads}, {result['cpus']} CPUs, load {result['load_average']})"
    )


if __name__ == "__main__":
    main()
