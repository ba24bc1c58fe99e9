"""The budget allocator of adaptive sampling (`--budget`) on scripted problems and a real SQLite file.

Answer streams are scripted per (problem, sample index) as in test_adaptive_online.py. The
accuracy comparison judges with a small exact-match verifier (thousands of samples; the math
verifier's answers for `#### N` are the same, it is only slower).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

from ponder.adaptive import Schedule, make_stop_rule
from ponder.errors import BackendError, ConfigError
from ponder.records import Problem, SamplingParams, Verdict
from ponder.runs import parse_budget, sample_adaptive
from ponder.store import Store
from ponder.verify import make_verifier
from tests._fakes import ListTask, arithmetic
from tests.test_adaptive_online import SPLIT, streams_backend

PARAMS = SamplingParams(temperature=0.7, max_tokens=20, seed=5)


def run(coro):
    return asyncio.run(coro)


class ExactVerifier:
    """``#### X`` is answer X, correct when X equals the reference."""

    name = "exact"

    def verify_many(self, items: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        out = []
        for ref, text in items:
            answer = text[5:].strip() if text.startswith("#### ") else None
            if answer is None:
                out.append(Verdict(status="unparsed"))
            else:
                out.append(
                    Verdict(status="correct" if answer == ref else "incorrect", extracted=answer)
                )
        return out

    def close(self) -> None:
        pass

    def __enter__(self) -> ExactVerifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


KINDS = {"easy": 12, "close": 8, "hopeless": 4}
"""Problems of each kind: most are easy, as in a real benchmark for a capable model."""
PROBLEMS = sum(KINDS.values())
N_MAX = 64


def scripted_problems(seed: int) -> tuple[ListTask, dict[str, list[str]]]:
    """Easy problems (correct 90%, else one of 5 wrong answers), close ones (correct 60%, one
    wrong answer 40%) and hopeless ones (any of 200 answers, the reference among them)."""
    rng = random.Random(seed)
    problems, streams = [], {}
    for kind, count in KINDS.items():
        for j in range(count):
            pid = f"{kind}{j}"
            problems.append(Problem(id=pid, question=f"{kind} {j}?", reference="1"))
            draws = []
            for _ in range(N_MAX):
                u = rng.random()
                if kind == "easy":
                    answer = "1" if u < 0.9 else str(rng.randint(2, 6))
                elif kind == "close":
                    answer = "1" if u < 0.6 else "2"
                else:
                    answer = str(rng.randint(1, 200))
                draws.append(f"#### {answer}")
            streams[pid] = draws
    return ListTask(problems), streams


def test_budget_goes_to_the_undecided_and_beats_an_even_split(tmp_path: Path) -> None:
    even_n = 16
    budget = parse_budget(f"{even_n * PROBLEMS}samples")
    adaptive_acc, even_acc = [], []
    spent_by_kind = dict.fromkeys(KINDS, 0)
    with Store(tmp_path / "b.db") as store, ExactVerifier() as verifier:
        for seed in range(20):
            task, streams = scripted_problems(seed)
            params = PARAMS.model_copy(update={"seed": seed})
            backend = streams_backend(streams, params, N_MAX)
            problems = task.problems()
            adaptive = run(
                sample_adaptive(
                    store,
                    backend,
                    task,
                    problems,
                    Schedule(make_stop_rule("beta"), N_MAX),
                    params,
                    verifier,
                    budget=budget,
                    concurrency=1,
                )
            )
            assert sum(s.samples for s in adaptive.stops) <= budget.amount
            for s in adaptive.stops:
                spent_by_kind[s.problem_id.rstrip("0123456789")] += s.samples
                if s.problem_id.startswith("hopeless"):
                    # a quarter of the samples: 1 of 8, or (after a repeated answer) 2 of 12
                    assert s.reason == "hopeless" and s.samples in (8, 12)
                assert s.budget == str(budget)
            adaptive_acc.append(adaptive.vote_accuracy)
            # The even split: every problem gets budget / problems samples (the same streams).
            even = run(
                sample_adaptive(
                    store,
                    backend,
                    task,
                    problems,
                    Schedule(make_stop_rule("fixed"), even_n, round_size=even_n),
                    params,
                    verifier,
                )
            )
            assert sum(s.samples for s in even.stops) == budget.amount
            even_acc.append(even.vote_accuracy)
    # The undecided (close) problems got most of the budget, the easy ones least.
    per_problem = {k: spent_by_kind[k] / (20 * n) for k, n in KINDS.items()}
    assert per_problem["close"] > even_n > per_problem["hopeless"] > per_problem["easy"], (
        per_problem
    )
    mean_adaptive = sum(adaptive_acc) / len(adaptive_acc)
    mean_even = sum(even_acc) / len(even_acc)
    # Measured: 0.800 vs 0.756; the adaptive run is ahead on 13 seeds, behind on none.
    assert mean_adaptive > mean_even + 0.03, (mean_adaptive, mean_even)
    assert sum(a < e for a, e in zip(adaptive_acc, even_acc, strict=True)) <= 2


def test_budget_below_the_first_round_of_every_problem_is_an_error(tmp_path: Path) -> None:
    task = arithmetic(3)
    backend = streams_backend({f"p{i}": SPLIT for i in range(3)})
    schedule = Schedule(make_stop_rule("beta"), 16)
    with Store(tmp_path / "e.db") as store, make_verifier("math") as verifier:
        with pytest.raises(ConfigError, match="needs at least 12 samples") as info:
            run(
                sample_adaptive(
                    store,
                    backend,
                    task,
                    task.problems(),
                    schedule,
                    PARAMS,
                    verifier,
                    budget=parse_budget("11samples"),
                )
            )
        assert "12samples" in str(info.value.hint)
        with pytest.raises(ConfigError, match="needs at least 240 tokens"):
            run(
                sample_adaptive(
                    store,
                    backend,
                    task,
                    task.problems(),
                    schedule,
                    PARAMS,
                    verifier,
                    budget=parse_budget("239tokens"),
                )
            )
        assert backend.calls == []


def test_token_budget_schedules_a_round_only_if_it_covers_round_size_times_max_tokens(
    tmp_path: Path,
) -> None:
    task = arithmetic(2)
    backend = streams_backend({"p0": SPLIT, "p1": SPLIT})
    # Each sample is 2 tokens ("#### 2"); a round of 4 reserves 4 x 20 = 80, so the first rounds
    # need 160 of the 200. They spend 16; each further round 8, while 200 - spent >= 80: 14 more
    # rounds (spent 128, then 72 left).
    with Store(tmp_path / "t.db") as store, make_verifier("math") as verifier:
        rep = run(
            sample_adaptive(
                store,
                backend,
                task,
                task.problems(),
                Schedule(make_stop_rule("beta"), 64),
                PARAMS,
                verifier,
                budget=parse_budget("200tokens"),
                concurrency=1,
            )
        )
    assert rep.used_tokens == 128 and rep.drawn == 64
    assert [s.reason for s in rep.stops] == ["budget", "budget"]
    # the two equally undecided problems take turns
    assert [s.samples for s in rep.stops] == [32, 32]


def test_budget_run_killed_midway_resumes_to_the_same_stops(tmp_path: Path) -> None:
    task, streams = scripted_problems(3)
    budget = parse_budget("150samples")
    schedule = Schedule(make_stop_rule("beta"), 32)
    with Store(tmp_path / "ref.db") as store, ExactVerifier() as verifier:
        full = run(
            sample_adaptive(
                store,
                streams_backend(streams, PARAMS, N_MAX),
                task,
                task.problems(),
                schedule,
                PARAMS,
                verifier,
                budget=budget,
                concurrency=1,
            )
        )
    backend = streams_backend(streams, PARAMS, N_MAX)
    original = backend.generate
    calls = {"n": 0}

    async def dies(prompt, n, params):
        calls["n"] += 1
        if calls["n"] == 30:  # past the first rounds, inside the allocation
            raise BackendError("server down")
        return await original(prompt, n, params)

    backend.generate = dies  # type: ignore[method-assign]
    with Store(tmp_path / "k.db") as store, ExactVerifier() as verifier:
        with pytest.raises(BackendError):
            run(
                sample_adaptive(
                    store,
                    backend,
                    task,
                    task.problems(),
                    schedule,
                    PARAMS,
                    verifier,
                    budget=budget,
                    concurrency=1,
                )
            )
        backend.generate = original  # type: ignore[method-assign]
        again = run(
            sample_adaptive(
                store,
                backend,
                task,
                task.problems(),
                schedule,
                PARAMS,
                verifier,
                budget=budget,
                concurrency=1,
            )
        )
    assert again.already_present > 0
    assert [s.model_dump(exclude={"created_at"}) for s in again.stops] == [
        s.model_dump(exclude={"created_at"}) for s in full.stops
    ]
    assert {s.reason for s in full.stops} >= {"budget", "hopeless", "rule"}
