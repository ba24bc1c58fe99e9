"""`ponder serve` on loopback: what the server adds, under load, and on the embedded engine.

Every number is a ratio against a baseline measured in the same run (absolute times move on a shared
machine; the ratios much less). Everything listens on 127.0.0.1 only and is bounded in count and time.

1. Overhead, one client, scripted backend. A system (``generate n=3 -> vote``) over a scripted model
   answers ``--requests`` chat requests one after another through a real ``ponder serve`` process, and
   the same system answers the same query in this process (``System.arun``). Headline: the median
   added latency (server minus in-process). Target: < 5 ms.
2. Load, scripted backend with 100 ms latency. ``--clients`` concurrent clients send
   ``--per-client`` pass-through chat requests each, from a load generator in another process, first
   to a bare FastAPI endpoint that sleeps 100 ms and answers a chat-completion-shaped body (the
   floor), then to ``ponder serve``. Target: 0 errors, p50 and p99 within 1.5x of the bare endpoint.
3. Embedded engine. ``--concurrent`` streamed pass-through chat requests at once, each of
   ``--max-tokens`` tokens, to ``ponder serve`` and to the raw engine (llama.cpp's own HTTP endpoint,
   the same engine settings, the same requests: the raw engine also gets the sampling fields Ponder
   sends it, since llama.cpp's own defaults truncate and sample faster), alternating, ``--reps`` times.
   Reported: aggregate completion tokens/s (target: ponder >= 0.9x raw), median time to the first
   streamed token, and the longest gap between two chunks of one stream; with ``--threads-sweep``
   for each engine thread count from 1 to the number of cores (how the default was chosen, see
   docs/serve.md).

    .venv/bin/python bench/serve.py [--requests 200] [--clients 50] [--per-client 20]
        [--concurrent 16] [--max-tokens 64] [--reps 2] [--threads N | --threads-sweep]
        [--skip-embedded] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PONDER = str(Path(sys.executable).parent / "ponder")
QUERY = [{"role": "user", "content": "What is 2 + 2?"}]
SYSTEM = {
    "name": "vote3",
    "layers": [{"type": "generate", "n": 3, "max_tokens": 16}, {"type": "vote"}],
}

# The bare endpoint and the load generator run as separate processes (``python bench/serve.py --role``).
ECHO_APP = """
import asyncio, time
from fastapi import FastAPI
app = FastAPI()

@app.post("/v1/chat/completions")
async def chat(body: dict) -> dict:
    await asyncio.sleep(0.1)
    return {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is 4"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}}

@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not become ready")


def start_ponder(args: list[str]) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [PONDER, "serve", *args, "--port", str(port), "--no-store"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url, proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ----- 1. overhead --------------------------------------------------------------------------------------


def overhead(requests: int) -> dict[str, Any]:
    from ponder.backends import ScriptedBackend
    from ponder.systems import System, SystemConfig

    scripted = {
        "backend": "scripted",
        "name": "s",
        "choices": ["The answer is 4", "The answer is 5"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vote3.json"
        path.write_text(json.dumps(SYSTEM))
        url, proc = start_ponder(["--model", json.dumps(scripted), "--system", str(path)])
    try:
        system = System(
            SystemConfig.from_data(SYSTEM),
            default_backend=ScriptedBackend(choices=["The answer is 4", "The answer is 5"]),
        )

        async def in_process() -> list[float]:
            out = []
            for i in range(requests):
                start = time.perf_counter()
                await system.arun(QUERY, seed=i)
                out.append(time.perf_counter() - start)
            return out

        local = asyncio.run(in_process())
        served = []
        with httpx.Client(timeout=30) as client:
            for i in range(requests):
                start = time.perf_counter()
                r = client.post(
                    f"{url}/v1/chat/completions",
                    json={"model": "vote3", "messages": QUERY, "seed": i},
                )
                served.append(time.perf_counter() - start)
                r.raise_for_status()
    finally:
        stop(proc)
    added = statistics.median(served) - statistics.median(local)
    return {
        "requests": requests,
        "in_process_median_ms": 1000 * statistics.median(local),
        "server_median_ms": 1000 * statistics.median(served),
        "added_median_ms": 1000 * added,
        "target_ms": 5.0,
        "ok": added * 1000 < 5.0,
    }


# ----- 2. load ----------------------------------------------------------------------------------------


async def _load(url: str, model: str, clients: int, per_client: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            for _ in range(per_client):
                start = time.perf_counter()
                try:
                    r = await client.post(
                        f"{url}/v1/chat/completions", json={"model": model, "messages": QUERY}
                    )
                    if r.status_code != 200:
                        errors += 1
                        continue
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    return {
        "requests": clients * per_client,
        "errors": errors,
        "p50_ms": 1000 * pct(latencies, 0.5) if latencies else None,
        "p99_ms": 1000 * pct(latencies, 0.99) if latencies else None,
        "rps": len(latencies) / wall,
    }


def run_load(url: str, model: str, clients: int, per_client: int) -> dict[str, Any]:
    """The load generator, in another process."""
    out = subprocess.run(
        [sys.executable, __file__, "--role", "load", "--url", url, "--model", model,
         "--clients", str(clients), "--per-client", str(per_client)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def load(clients: int, per_client: int) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "echo_app.py"
        app.write_text(ECHO_APP)
        echo = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "echo_app:app", "--port", str(port),
             "--log-level", "warning", "--app-dir", tmp],
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            wait_ready(f"http://127.0.0.1:{port}", echo)
            bare = run_load(f"http://127.0.0.1:{port}", "echo", clients, per_client)
        finally:
            stop(echo)
    scripted = {"backend": "scripted", "name": "s", "outputs": ["The answer is 4"], "delay_s": 0.1}
    url, proc = start_ponder(
        ["--model", json.dumps(scripted), "--max-active", str(clients), "--max-queued",
         str(clients), "--per-key", str(clients)]
    )  # fmt: skip
    try:
        ponder = run_load(url, "s", clients, per_client)
    finally:
        stop(proc)
    p50 = ponder["p50_ms"] / bare["p50_ms"]
    p99 = ponder["p99_ms"] / bare["p99_ms"]
    return {
        "bare": bare,
        "ponder": ponder,
        "p50_ratio": p50,
        "p99_ratio": p99,
        "ok": ponder["errors"] == 0 and p50 <= 1.5 and p99 <= 1.5,
    }


# ----- 3. embedded engine -------------------------------------------------------------------------------


async def _streams(
    url: str,
    model: str,
    concurrent: int,
    max_tokens: int,
    prompt_seed: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``concurrent`` streamed chat requests at once; tokens/s, first-token times, chunk gaps.

    ``extra``: engine fields added to each body (for the raw engine: what Ponder sends it)."""
    firsts: list[float] = []
    gaps: list[float] = []
    tokens = 0
    async with httpx.AsyncClient(timeout=600) as client:

        async def one(i: int) -> None:
            nonlocal tokens
            body = {
                "model": model,
                "messages": [
                    {"role": "user", "content": f"Tell story number {prompt_seed + i} about a cat."}
                ],
                "max_tokens": max_tokens,
                "temperature": 0.7,
                "seed": prompt_seed + i,
                "stream": True,
                "stream_options": {"include_usage": True},
                **(extra or {}),
            }
            start = time.perf_counter()
            last = None
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    now = time.perf_counter()
                    choices = chunk.get("choices") or []
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        if last is None:
                            firsts.append(now - start)
                        else:
                            gaps.append(now - last)
                        last = now
                    if chunk.get("usage"):
                        tokens += int(chunk["usage"]["completion_tokens"])

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(concurrent)))
        wall = time.perf_counter() - start
    return {
        "tokens": tokens,
        "wall_s": wall,
        "tok_s": tokens / wall,
        "first_token_median_s": statistics.median(firsts) if firsts else None,
        "max_gap_s": max(gaps) if gaps else None,
    }


def embedded(concurrent: int, max_tokens: int, reps: int, threads: int | None) -> dict[str, Any]:
    from ponder.backends import LlamaCppBackend, LlamaCppConfig
    from ponder.serve import default_threads

    model = "smollm2-135m"
    threads = default_threads() if threads is None else threads
    settings: dict[str, Any] = {
        "n_parallel": concurrent,
        "ctx_per_sequence": 1024,
        "threads": threads,
    }
    spec = {"backend": "llamacpp", "model": model, **settings}
    url, proc = start_ponder(["--model", json.dumps(spec)])
    raw = LlamaCppBackend(LlamaCppConfig(model=model, **settings))
    try:
        raw_url = raw.base_url  # llama.cpp's own OpenAI-compatible HTTP endpoint
        # One warm-up each, so neither pays for loading or first-use allocations.
        asyncio.run(_streams(raw_url, model, 2, 8, 10_000))
        asyncio.run(_streams(url, model, 2, 8, 10_000))
        rows: dict[str, list[dict[str, Any]]] = {"raw": [], "ponder": []}
        # The same requests: Ponder sends the engine its sampling parameters explicitly (temperature
        # alone, no truncation: llama.cpp's own defaults are top-k 40 and min-p 0.05, which make
        # sampling much cheaper), so the raw engine gets them too.
        same = {"top_p": 1.0, "top_k": 0, "min_p": 0.0, "cache_prompt": False}
        for rep in range(reps):
            order = [("raw", raw_url, same), ("ponder", url, None)]
            for name, target, extra in order if rep % 2 == 0 else order[::-1]:
                rows[name].append(
                    asyncio.run(_streams(target, model, concurrent, max_tokens, 100 * rep, extra))
                )
    finally:
        stop(proc)
        raw.close()

    def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "tok_s": statistics.median(r["tok_s"] for r in runs),
            "first_token_median_s": statistics.median(r["first_token_median_s"] for r in runs),
            "max_gap_s": max(r["max_gap_s"] for r in runs),
        }

    raw_s, ponder_s = summary(rows["raw"]), summary(rows["ponder"])
    ratio = ponder_s["tok_s"] / raw_s["tok_s"]
    return {
        "threads": threads,
        "concurrent": concurrent,
        "max_tokens": max_tokens,
        "raw": raw_s,
        "ponder": ponder_s,
        "tok_s_ratio": ratio,
        "ok": ratio >= 0.9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--role", choices=["bench", "load"], default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--per-client", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--threads-sweep", action="store_true")
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.role == "load":
        print(json.dumps(asyncio.run(_load(args.url, args.model, args.clients, args.per_client))))
        return
    results: dict[str, Any] = {"load_average": os.getloadavg(), "cores": os.cpu_count()}
    results["overhead"] = overhead(args.requests)
    if not args.json:
        print("overhead:", json.dumps(results["overhead"]), flush=True)
    results["load"] = load(args.clients, args.per_client)
    if not args.json:
        print("load:", json.dumps(results["load"]), flush=True)
    if not args.skip_embedded:
        counts = range(1, (os.cpu_count() or 1) + 1) if args.threads_sweep else [args.threads]
        results["embedded"] = []
        for threads in counts:
            row = embedded(args.concurrent, args.max_tokens, args.reps, threads)
            results["embedded"].append(row)
            if not args.json:
                print("embedded:", json.dumps(row), flush=True)
    results["load_average_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
