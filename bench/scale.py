"""Scale-out: what the Ray executor costs per request, and how throughput grows with actors.

Three measurements, each a ratio within this one run (the machine may be busy):

* overhead: the scripted backend with no latency, requests of 16 samples (``--n 16``, one request per
  problem) for ``--problems`` GSM8K problems, one request at a time (the driver's default concurrency
  for one backend slot), through the local executor and through Ray with one actor. The difference
  per request is what Ray adds to each request's round trip (target: < 2 ms); it is the median of
  the differences of ``--reps`` back-to-back pairs. Beside them: Ray with the default actors (one per
  node) and the default concurrency, and the driver's ceiling: 4 actors, 4 requests in flight, no
  latency (the requests per second the driver sustains when nothing else limits it; here the actors
  share the driver's 2 cores, so it is a lower bound). All configurations are started first (Ray and
  each pool of actors timed on their own), warmed up, then take turns in a rotating order. The local
  Ray gets 8 logical CPUs so that 1 + 4 actors of 1 CPU fit at once (Ray's count, not real cores).
* throughput: the scripted backend with a fixed ``--latency`` per request (200 ms), one request per
  actor at a time, 1, 2 and 4 actors (one pool at a time) on a local Ray with 4 CPUs, and the local
  executor with 4 requests in flight; each configuration gets ``--seconds`` x actors / latency
  requests, so each runs about ``--seconds``. Targets: 2 vs 1 actor >= 1.8x, 4 vs 1 >= 3.5x, 4 actors
  >= 0.9x the local executor at the same concurrency. The scaling model k / (L + o), with o the
  1-actor time per request measured without latency, is checked against these numbers.
* replicas: ``bench/replicas.py`` (two llama.cpp servers behind ``--base-url`` vs one), run as it
  is, its ratio reported as measured (``--no-replicas`` skips it).

Every sample goes through the real driver (:func:`ponder.runs.sample_run`) into a real SQLite store
(a fresh file per measurement), as ``ponder sample`` draws them. Ray runs under a private temp dir, so
a Ray already running on the machine is neither joined nor disturbed.

    .venv/bin/python bench/scale.py [--problems 400] [--reps 5] [--latency 0.2] [--seconds 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ponder.backends import Backend, ScriptedConfig
from ponder.executors import Executor, LocalConfig, create_executor, executor_config_type
from ponder.records import Problem, SamplingParams
from ponder.runs import SamplingReport, sample_run
from ponder.store import Store
from ponder.tasks import get_task

N = 16
"""Samples per problem and per request (one request per problem)."""

CHOICES = ["The answer is 18.", "So she makes $18 a day.", "The answer is 16.", "I am not sure."]

TARGETS = {
    "ray_added_ms_per_request": 2.0,
    "two_over_one": 1.8,
    "four_over_one": 3.5,
    "ray4_over_local4": 0.9,
}

HERE = Path(__file__).resolve().parent


def ray_config(**fields: Any) -> BaseModel:
    return executor_config_type("ray").model_validate(fields)


async def _sample(
    backend: Backend, problems: Sequence[Problem], db: Path, concurrency: int | None
) -> SamplingReport:
    task = get_task("gsm8k")
    with Store(db) as store:
        return await sample_run(
            store,
            backend,
            task,
            problems,
            N,
            SamplingParams(max_tokens=64),
            batch=N,
            concurrency=concurrency,
        )


@dataclass
class Config:
    """One way to sample: a backend on an executor, how many requests in flight, which problems."""

    label: str
    executor: Executor
    problems: Sequence[Problem]
    concurrency: int | None = None  # None: the driver's default (one request per backend slot)


async def measure(
    configs: Sequence[Config], backend_config: ScriptedConfig, reps: int, tmp: Path
) -> dict[str, dict[str, Any]]:
    """Start every config's backend (timed), warm each up, then sample each config's problems ``reps``
    times into a fresh store, the configs taking turns in a rotating order so that the machine's
    drift does not favour one of them. A config's time per request is the median of its reps."""
    backends: dict[str, Backend] = {}
    started: dict[str, float] = {}
    slots: dict[str, int] = {}
    walls: dict[str, list[float]] = {c.label: [] for c in configs}
    requests: dict[str, int] = {}
    try:
        for c in configs:
            start = time.perf_counter()
            backends[c.label] = c.executor.backend(backend_config)
            started[c.label] = time.perf_counter() - start
            slots[c.label] = backends[c.label].request_slots
            # Warm-up: the first requests pay for imports, connections and the actors' first calls.
            warm = c.problems[: max(8, 2 * slots[c.label])]
            await _sample(backends[c.label], warm, tmp / f"{c.label}-warm.db", c.concurrency)
        for rep in range(reps):
            turn = rep % len(configs)
            for c in [*configs[turn:], *configs[:turn]]:
                db = tmp / f"{c.label}-{rep}.db"
                report = await _sample(backends[c.label], c.problems, db, c.concurrency)
                if report.drawn != len(c.problems) * N:
                    raise AssertionError(
                        f"{c.label}: drew {report.drawn}, not {len(c.problems) * N}"
                    )
                walls[c.label].append(report.wall_s)
                requests[c.label] = report.requests
    finally:
        for backend in backends.values():
            await backend.aclose()
    out = {}
    for c in configs:
        wall = statistics.median(walls[c.label])
        out[c.label] = {
            "request_slots": slots[c.label],
            "concurrency": c.concurrency or slots[c.label] * (backend_config.max_batch // N),
            "requests": requests[c.label],
            "backend_start_s": round(started[c.label], 3),
            "wall_s": [round(w, 4) for w in walls[c.label]],
            "ms_per_request": round(1000 * wall / requests[c.label], 3),
            "requests_per_s": round(requests[c.label] / wall, 2),
        }
    return out


def overhead(problems: Sequence[Problem], reps: int, tmp: Path) -> dict[str, Any]:
    scripted = ScriptedConfig(choices=CHOICES, delay_s=0.0, max_batch=N)
    out: dict[str, Any] = {"problems": len(problems), "samples_per_request": N, "reps": reps}
    with ExitStack() as stack:
        local = stack.enter_context(create_executor(LocalConfig()))
        start = time.perf_counter()
        # 1 + 4 actors of 1 CPU at once: Ray's count of CPUs to hand out, not the machine's cores.
        stack.enter_context(create_executor(ray_config(local_cpus=8)))
        out["ray_start_s"] = round(time.perf_counter() - start, 3)
        # These join the Ray just started (and leave it running when they close).
        ray1, ray_default, ray4 = (
            stack.enter_context(create_executor(ray_config(**kw)))
            for kw in ({"actors": 1}, {}, {"actors": 4})
        )
        configs = [
            Config("local", local, problems),
            Config("ray_1_actor", ray1, problems),
            Config("ray_default", ray_default, problems),
            Config("local_c4", local, problems, concurrency=4),
            Config("ray_4_actors_c4", ray4, problems, concurrency=4),
        ]
        out.update(asyncio.run(measure(configs, scripted, reps, tmp)))
    # Paired: each rep's local and 1-actor runs are back to back.
    added = statistics.median(
        (r - loc) / len(problems)
        for r, loc in zip(out["ray_1_actor"]["wall_s"], out["local"]["wall_s"], strict=True)
    )
    out["ray_added_ms_per_request"] = round(1000 * added, 3)
    out["ray_added_ms_per_sample"] = round(1000 * added / N, 4)
    out["driver_ceiling_requests_per_s"] = out["ray_4_actors_c4"]["requests_per_s"]
    return out


def throughput(
    problems: Sequence[Problem], latency: float, seconds: float, tmp: Path
) -> dict[str, Any]:
    scripted = ScriptedConfig(choices=CHOICES, delay_s=latency, max_batch=N)
    per_actor = max(2, round(seconds / latency))
    out: dict[str, Any] = {"latency_s": latency}
    start = time.perf_counter()
    with create_executor(ray_config(local_cpus=4)):
        out["ray_start_s"] = round(time.perf_counter() - start, 3)
        # One pool at a time: 4 actors of 1 CPU fill this Ray.
        for k in (1, 2, 4):
            with create_executor(ray_config(actors=k, cpus_per_actor=1)) as ray:
                config = Config(f"ray_{k}", ray, problems[: per_actor * k])
                out.update(asyncio.run(measure([config], scripted, 1, tmp)))
    with create_executor(LocalConfig()) as local:
        config = Config("local_4", local, problems[: per_actor * 4], concurrency=4)
        out.update(asyncio.run(measure([config], scripted, 1, tmp)))
    rate = {k: out[f"ray_{k}"]["requests_per_s"] for k in (1, 2, 4)}
    out["two_over_one"] = round(rate[2] / rate[1], 3)
    out["four_over_one"] = round(rate[4] / rate[1], 3)
    out["ray4_over_local4"] = round(rate[4] / out["local_4"]["requests_per_s"], 3)
    return out


def replicas(requests: int) -> dict[str, Any]:
    """``bench/replicas.py --json`` as it is (its own servers, its own warm-up)."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "replicas.py"), "--json", "--requests", str(requests)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def model_check(over: dict[str, Any], tp: dict[str, Any]) -> dict[str, Any]:
    """Throughput k / (L + o) predicted from the no-latency per-request time o, against the measured."""
    o = over["ray_1_actor"]["ms_per_request"] / 1000
    ceiling = over["driver_ceiling_requests_per_s"]
    latency = tp["latency_s"]
    rows = {}
    for k in (1, 2, 4):
        predicted = min(k / (latency + o), ceiling)
        measured = tp[f"ray_{k}"]["requests_per_s"]
        rows[f"ray_{k}"] = {
            "predicted_requests_per_s": round(predicted, 2),
            "measured_requests_per_s": measured,
            "measured_over_predicted": round(measured / predicted, 3),
        }
    return {"o_s": round(o, 5), "driver_ceiling_requests_per_s": ceiling, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=400, help="requests per overhead run")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each overhead run")
    parser.add_argument("--latency", type=float, default=0.2, help="simulated seconds per request")
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="about how long each throughput run takes"
    )
    parser.add_argument("--replica-requests", type=int, default=32)
    parser.add_argument("--no-replicas", action="store_true", help="skip bench/replicas.py")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    problems = get_task("gsm8k").problems()
    per_actor = max(2, round(args.seconds / args.latency))
    if max(args.problems, 4 * per_actor) > len(problems):
        parser.error(f"at most {len(problems)} requests per run (one per GSM8K problem)")
    started = time.perf_counter()
    # Ray finds "the" cluster of a machine through a file in its temp dir and joins it instead of
    # starting one; a private temp dir keeps this benchmark's Ray apart from any other on the
    # machine (a test's, or `ray start`), both ways. Short: Ray's socket paths live under it.
    with (
        tempfile.TemporaryDirectory(
            prefix="pray-", dir="/tmp", ignore_cleanup_errors=True
        ) as ray_tmp,
        tempfile.TemporaryDirectory(prefix="ponder-scale-") as tmp,
    ):
        os.environ["RAY_TMPDIR"] = ray_tmp
        over = overhead(problems[: args.problems], args.reps, Path(tmp))
        tp = throughput(problems, args.latency, args.seconds, Path(tmp))
    rep = None if args.no_replicas else replicas(args.replica_requests)
    check = model_check(over, tp)
    met = {
        "ray_added_ms_per_request": over["ray_added_ms_per_request"]
        < TARGETS["ray_added_ms_per_request"],
        "two_over_one": tp["two_over_one"] >= TARGETS["two_over_one"],
        "four_over_one": tp["four_over_one"] >= TARGETS["four_over_one"],
        "ray4_over_local4": tp["ray4_over_local4"] >= TARGETS["ray4_over_local4"],
    }
    result = {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "overhead": over,
        "throughput": tp,
        "model_check": check,
        "replicas": rep,
        "targets": TARGETS,
        "targets_met": met,
        "total_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    _print(result)


def _row(name: str, m: dict[str, Any]) -> str:
    return (
        f"  {name:34s} {m['concurrency']:>3d} {m['requests']:>5d} {m['ms_per_request']:>9.2f} "
        f"{m['requests_per_s']:>8.1f} {m['backend_start_s']:>8.2f}"
    )


def _print(r: dict[str, Any]) -> None:
    over, tp, met = r["overhead"], r["throughput"], r["targets_met"]
    ok = {True: "met", False: "NOT met"}
    print(
        f"{r['cpus']} CPUs, load average {r['load_average']}; scripted backend, {N} samples per request"
    )
    print(
        f"overhead (no latency; median of {over['reps']} runs of {over['problems']} requests each)"
    )
    print(f"  {'':34s} {'c':>3s} {'reqs':>5s} {'ms/req':>9s} {'req/s':>8s} {'start s':>8s}")
    print(_row("local executor", over["local"]))
    print(_row("ray, 1 actor", over["ray_1_actor"]))
    print(_row("ray, default actors (1 per node)", over["ray_default"]))
    print(_row("local executor, 4 in flight", over["local_c4"]))
    print(_row("ray, 4 actors, 4 in flight", over["ray_4_actors_c4"]))
    print(
        f"  Ray adds {over['ray_added_ms_per_request']:.2f} ms per request "
        f"({over['ray_added_ms_per_sample']:.3f} ms per sample); target < "
        f"{TARGETS['ray_added_ms_per_request']:g} ms: {ok[met['ray_added_ms_per_request']]}"
    )
    print(
        f"  driver ceiling: {over['driver_ceiling_requests_per_s']:.0f} requests/s; "
        f"starting a local Ray: {over['ray_start_s']:.1f} s"
    )
    print(f"throughput ({tp['latency_s'] * 1000:.0f} ms per request, one request per actor)")
    print(f"  {'':34s} {'c':>3s} {'reqs':>5s} {'ms/req':>9s} {'req/s':>8s} {'start s':>8s}")
    for k in (1, 2, 4):
        print(_row(f"ray, {k} actor(s)", tp[f"ray_{k}"]))
    print(_row("local executor, 4 in flight", tp["local_4"]))
    for key, label in (
        ("two_over_one", "2 actors / 1"),
        ("four_over_one", "4 actors / 1"),
        ("ray4_over_local4", "4 actors / local at 4"),
    ):
        print(f"  {label:22s} {tp[key]:.2f}x  (target >= {TARGETS[key]:g}: {ok[met[key]]})")
    check = r["model_check"]
    print(f"scaling model k / (L + o), o = {check['o_s'] * 1000:.2f} ms:")
    for k in (1, 2, 4):
        row = check["rows"][f"ray_{k}"]
        print(
            f"  {k} actor(s): predicted {row['predicted_requests_per_s']:.2f} req/s, measured "
            f"{row['measured_requests_per_s']:.2f} ({row['measured_over_predicted']:.2f}x)"
        )
    rep = r["replicas"]
    if rep is None:
        print("replicas: skipped")
    elif "error" in rep:
        print(f"replicas: bench/replicas.py failed: {rep['error']}")
    else:
        print(
            f"replicas (bench/replicas.py, {rep['requests']} requests of {rep['max_tokens']} tokens): "
            f"one {rep['one']['tokens_per_s']:.1f} tok/s, two {rep['two']['tokens_per_s']:.1f} tok/s, "
            f"two / one {rep['ratio_two_over_one']:.2f}x, split {rep['two']['requests_per_replica']}"
        )
    print(f"total {r['total_s']:.0f} s")


if __name__ == "__main__":
    main()
