"""Honest selection (issue 15, item 4): the seeded dev/test split, the Pareto front, bootstrap
intervals, and the test evaluation of the front and the baselines as ordinary stored runs
(scripted backend, real SQLite store, the real math verifier)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

import ponder.search as search
from ponder.backends import ScriptedBackend
from ponder.errors import ConfigError, RunError
from ponder.records import Problem, Prompt, SamplingParams
from ponder.runs import is_system_spec, run_stats, system_run
from ponder.search import TrialResult
from ponder.store import Store
from ponder.systems import System
from tests._fakes import arithmetic

# ----- split ----------------------------------------------------------------------------------------


def _ids(problems: list[Problem]) -> list[str]:
    return [p.id for p in problems]


def test_split_is_seeded_disjoint_and_pinned() -> None:
    problems = arithmetic(10).problems()
    dev, test = search.split_problems(problems, 4, 3, seed=0)
    assert len(dev) == 4 and len(test) == 3
    assert not set(_ids(dev)) & set(_ids(test))
    again = search.split_problems(problems, 4, 3, seed=0)
    assert (_ids(again[0]), _ids(again[1])) == (_ids(dev), _ids(test))
    # Pinned: random.Random(int).shuffle is stable across processes and Python versions, so a
    # change here means a search would silently evaluate other problems.
    assert _ids(dev) + _ids(test) == ["p7", "p8", "p1", "p5", "p3", "p4", "p2"]
    other = search.split_problems(problems, 4, 3, seed=1)
    assert _ids(other[0]) + _ids(other[1]) != _ids(dev) + _ids(test)


def test_split_keeps_dev_when_test_grows_and_uses_every_problem_when_asked() -> None:
    problems = arithmetic(12).problems()
    dev, _ = search.split_problems(problems, 5, 2, seed=3)
    dev2, test2 = search.split_problems(problems, 5, 7, seed=3)
    assert _ids(dev) == _ids(dev2)
    assert sorted(_ids(dev2) + _ids(test2)) == sorted(_ids(problems))


@pytest.mark.parametrize(
    ("dev", "test", "match"),
    [
        (8, 3, r"--dev 8 \+ --test 3 = 11 problems, but the task has 10"),
        (0, 3, "--dev must be >= 1"),
        (3, -1, "--test must be >= 0"),
        (True, 3, "--dev must be an integer"),
    ],
)
def test_split_errors_name_the_fix(dev: Any, test: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        search.split_problems(arithmetic(10).problems(), dev, test, seed=0)
    assert info.value.hint


def test_split_refuses_repeated_ids() -> None:
    problems = [*arithmetic(3).problems(), Problem(id="p1", question="again", reference="1")]
    with pytest.raises(ConfigError, match="repeated problem ids \\('p1'\\)"):
        search.split_problems(problems, 1, 1, seed=0)


# ----- front ----------------------------------------------------------------------------------------


def trial(number: int, accuracy: float | None, tokens: float | None, state: Any = "complete"):
    return TrialResult(
        number=number,
        state=state,
        params={},
        config={"name": f"system-{number}"},
        problems=10,
        correct=0 if accuracy is None else round(accuracy * 10),
        accuracy=accuracy,
        tokens_per_query=tokens,
    )


TRIALS = [
    trial(0, 0.5, 100),
    trial(1, 0.7, 200),
    trial(2, 0.7, 200),  # the same point as trial 1: both kept
    trial(3, 0.6, 300),  # dominated by 1
    trial(4, 0.9, 1000),
    trial(5, 1.0, 10, "pruned"),  # would dominate everything, but is not complete
    trial(6, 1.0, 5, "infeasible"),
    trial(7, 0.5, 150),  # as accurate as 0, costlier: dominated
    trial(8, None, None),  # answered nothing
    trial(9, 0.4, 50),
    trial(10, 0.8, None, "failed"),
]


def test_front_lists_a_system_proposed_twice_once() -> None:
    first, again = trial(0, 0.5, 100.0), trial(3, 0.5, 100.0)
    again = TrialResult(**{**again.__dict__, "config": first.config})
    other = trial(4, 0.5, 100.0)  # another system at the same point stays
    assert search.front([first, again, other]) == [0, 4]


def test_front_keeps_non_dominated_complete_trials_in_order() -> None:
    assert search.front(TRIALS) == [4, 1, 2, 0, 9]
    assert search.top_of_front(TRIALS, 3) == [4, 1, 2]
    assert search.top_of_front(TRIALS, 10) == [4, 1, 2, 0, 9]
    assert search.front([]) == []
    with pytest.raises(ConfigError, match=">= 1"):
        search.top_of_front(TRIALS, 0)


def test_best_of_front_breaks_accuracy_ties_by_fewer_tokens() -> None:
    trials = [trial(0, 0.8, 300), trial(1, 0.8, 120), trial(2, 0.3, 20)]
    assert search.front(trials) == [1, 2]


# ----- bootstrap ------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_the_estimate_narrows_and_is_seeded() -> None:
    small = [True, False] * 10
    big = [True, False] * 200
    lo, hi = search.bootstrap_ci(small)
    assert 0 <= lo < 0.5 < hi <= 1
    big_lo, big_hi = search.bootstrap_ci(big)
    assert big_lo < 0.5 < big_hi
    assert big_hi - big_lo < (hi - lo) / 2
    assert search.bootstrap_ci(small, seed=7) == search.bootstrap_ci(small, seed=7)
    assert search.bootstrap_ci(small, seed=7) != search.bootstrap_ci(small, seed=8)
    assert search.bootstrap_ci([True] * 5) == (1.0, 1.0)
    # A wider level gives a wider interval.
    lo90, hi90 = search.bootstrap_ci(small, level=0.9)
    assert lo <= lo90 and hi90 <= hi and (hi90 - lo90) < (hi - lo)
    with pytest.raises(ConfigError, match="at least one problem"):
        search.bootstrap_ci([])
    with pytest.raises(ConfigError, match="level"):
        search.bootstrap_ci(small, level=1.0)


def test_vote_samples_matches_tokens_with_the_prompt_counted_once() -> None:
    # best: 18 tokens/query; greedy: 6 prompt + 6 completion -> (18 - 6) / 6 = 2 samples
    assert search.vote_samples(18, 6, 6) == 2
    assert search.vote_samples(5, 6, 6) == 1  # never fewer than one sample
    assert search.vote_samples(100, 10, 0) == 1
    assert search.vote_samples(106, 10, 8) == 12


# ----- the test evaluation ---------------------------------------------------------------------------

ASK = re.compile(r"What is (\d+) \+")
SAMPLED = ["#### {c}", "#### {c}", "#### {c}", "#### {c}", "#### 998", "#### 997"]
"""Sample j of a problem the system gets right: a clear majority for the right answer."""
WRONG = ["#### 999", "#### 999", "#### 999", "#### {c}", "#### {c}", "#### 996"]
"""... and of one it gets wrong: a majority for 999."""


def _problem_of(prompt: Prompt) -> int:
    text = prompt if isinstance(prompt, str) else prompt[-1].content
    match = ASK.search(text)
    assert match is not None, text
    return int(match.group(1))


def scripted(right: set[int], greedy_right: set[int]) -> ScriptedBackend:
    """Sampled answers make a vote right exactly on ``right``; the greedy answer (temperature 0,
    6 words) is right exactly on ``greedy_right``."""

    def fn(prompt: Prompt, j: int, params: SamplingParams) -> str:
        i = _problem_of(prompt)
        if params.temperature == 0:
            return f"so the answer is #### {2 * i if i in greedy_right else 999}"
        rows = SAMPLED if i in right else WRONG
        return rows[j].format(c=2 * i)

    return ScriptedBackend(fn=fn)


VOTE6 = {
    "name": "vote6",
    "layers": [
        {"type": "generate", "n": 6, "temperature": 0.7, "max_tokens": 20},
        {"type": "vote"},
    ],
}
ONE = {
    "name": "one",
    "layers": [{"type": "generate", "n": 1, "temperature": 0.7, "max_tokens": 20}],
}


def test_evaluate_on_test_reports_systems_and_baselines_as_stored_runs(tmp_path: Path) -> None:
    task = arithmetic(16)
    dev, test = search.split_problems(task.problems(), 6, 10, seed=0)
    index = {p.id: int(p.id[1:]) for p in task.problems()}
    right = {index[p.id] for p in test[:7]}  # dev problems are all answered wrong
    greedy_right = {index[p.id] for p in test[:3]}
    backend = scripted(right, greedy_right)

    live: list[search.TestResult] = []

    async def go() -> tuple[list[search.TestResult], str]:
        async with (
            System.from_dict(VOTE6, default_backend=backend) as best,
            System.from_dict(ONE, default_backend=backend) as one,
        ):
            # The search: trials on dev only; the split is held out.
            with Store(tmp_path / "r.db") as store:
                dev_run = (await system_run(store, best, task, dev)).run_id
                search.check_isolation(store, [dev_run], _ids(test))
                rows = await search.evaluate_on_test(
                    store,
                    task,
                    test,
                    [("trial 0", 0, best), ("trial 3", 3, one)],
                    resamples=500,
                    on_row=live.append,
                )
            return rows, dev_run

    rows, dev_run = asyncio.run(go())
    assert [(r.label, r.kind, r.trial) for r in rows] == [
        ("trial 0", "system", 0),
        ("trial 3", "system", 3),
        ("greedy", "greedy", None),
        # best: 7 prompt words ("user: Q: What is 3 + 3?") + 6 x 2 completion words = 19 per
        # query; greedy: 7 + 6, so the estimate is N = (19 - 7) / 6 = 2 (`generate n=2` counts
        # its prompt once). vote@2 measures 7 + 2 x 2 = 11, 42% short: the sampled answers are
        # 2 words, not 6, so N is corrected once to (19 - 7) / 2 = 6.
        ("vote@6", "vote", None),
    ]
    assert live == rows  # each row reported as it was ready
    best, one, greedy, vote = rows
    # Accuracy over the test problems only (the run also holds the 6 dev answers, all wrong).
    assert (best.correct, best.problems, best.accuracy) == (7, 10, 0.7)
    assert best.tokens_per_query == 19 and best.calls_per_query == 1
    assert best.run_id == dev_run  # the trial's own system run, with the test problems added
    assert (one.correct, one.tokens_per_query) == (7, 9)  # sample 0 is right on `right`
    assert (greedy.correct, greedy.tokens_per_query, greedy.calls_per_query) == (3, 13, 1)
    # Six samples: a majority for the right answer on `right`, for 999 elsewhere; at the
    # best system's tokens per query, measured.
    assert (vote.correct, vote.tokens_per_query) == (7, 7 + 6 * 2)
    for row in rows:
        assert row.ci[0] <= row.accuracy <= row.ci[1]
        assert row.ci[0] >= 0 and row.ci[1] <= 1
    assert greedy.ci[1] < best.ci[1]
    with Store(tmp_path / "r.db") as store:
        runs = {r.label: store.get_run(r.run_id) for r in rows}
        assert all(is_system_spec(runs[r.label].spec) for r in (best, one, vote))
        assert runs["vote@6"].spec.model.startswith("system:vote-6@")
        assert not is_system_spec(runs["greedy"].spec)
        assert runs["greedy"].spec.params.temperature == 0
        assert runs["greedy"].spec.params.max_tokens == 20  # the best system's generate layer
        for row in rows:  # verified as `ponder run` verifies: nothing left to verify
            assert store.unverified(row.run_id, "math") == []
        # The trial's run now holds test problems: the isolation check belongs before this.
        with pytest.raises(RunError, match="answered test problems"):
            search.check_isolation(store, [dev_run], _ids(test))
    greedy_calls = [c for c in backend.calls if c[2].temperature == 0]
    assert len(greedy_calls) == 10
    vote_calls = [c for c in backend.calls if c[1] == 2]
    assert len(vote_calls) == 10 and all(c[2].temperature == 0.7 for c in vote_calls)


def test_evaluating_again_reuses_every_stored_run(tmp_path: Path) -> None:
    task = arithmetic(6)
    _, test = search.split_problems(task.problems(), 2, 4, seed=5)
    backend = scripted({0, 1, 2, 3, 4, 5}, {1})

    async def go() -> list[search.TestResult]:
        async with System.from_dict(VOTE6, default_backend=backend) as best:
            with Store(tmp_path / "r.db") as store:
                return await search.evaluate_on_test(store, task, test, [("t", 0, best)])

    first = asyncio.run(go())
    asked = len(backend.calls)
    assert asked > 0
    assert asyncio.run(go()) == first
    assert len(backend.calls) == asked  # nothing asked twice: every answer was stored


def test_evaluate_on_test_without_baselines_and_errors(tmp_path: Path) -> None:
    task = arithmetic(4)
    backend = scripted({0, 1}, set())

    async def go(systems: list[Any], problems: list[Problem]) -> list[search.TestResult]:
        with Store(tmp_path / "r.db") as store:
            return await search.evaluate_on_test(
                store, task, problems, systems, baselines=False, resamples=100
            )

    with System.from_dict(VOTE6, default_backend=backend) as best:
        rows = asyncio.run(go([("t", 1, best)], task.problems()))
        assert [r.label for r in rows] == ["t"] and rows[0].accuracy == 0.5
        with pytest.raises(ConfigError, match="no test problems"):
            asyncio.run(go([("t", 1, best)], []))
    with pytest.raises(ConfigError, match="no system to evaluate"):
        asyncio.run(go([], task.problems()))


def test_check_isolation_names_the_leaking_run(tmp_path: Path) -> None:
    task = arithmetic(5)
    backend = scripted({0}, set())

    async def go() -> str:
        async with System.from_dict(ONE, default_backend=backend) as one:
            with Store(tmp_path / "r.db") as store:
                return (await system_run(store, one, task, task.problems()[:3])).run_id

    run_id = asyncio.run(go())
    with Store(tmp_path / "r.db") as store:
        search.check_isolation(store, [run_id], ["p3", "p4"])
        with pytest.raises(RunError, match=rf"run {run_id}: p1, p2") as info:
            search.check_isolation(store, [run_id], ["p1", "p2", "p4"])
        assert info.value.hint


def test_vote_config_copies_the_first_generate_layer() -> None:
    config = System.from_dict(
        {
            "name": "x",
            "model": "some-model",
            "extractor": "math",
            "seed": 11,
            "layers": [
                {
                    "type": "generate",
                    "n": 4,
                    "temperature": 0.4,
                    "max_tokens": 77,
                    "stop": ["\n\n"],
                    "min_p": 0.1,
                },
                {"type": "critique"},
                {"type": "fuse"},
            ],
        }
    ).config
    vote = search.vote_config(config, 9)
    assert vote["model"] == "some-model" and vote["seed"] == 11
    gen = vote["layers"][0]
    assert (gen["n"], gen["temperature"], gen["max_tokens"]) == (9, 0.4, 77)
    assert gen["stop"] == ["\n\n"] and gen["min_p"] == 0.1
    assert vote["layers"][1] == {"type": "vote"}
    System.from_dict(vote)  # a valid system config


def test_the_vote_baseline_runs_on_the_best_systems_own_backend(tmp_path: Path) -> None:
    # The best system's model is a spec, so its pool creates the backend: the vote baseline must
    # use that very instance (an embedded model must not be loaded twice), not a copy.
    task = arithmetic(3)
    config = {**VOTE6, "model": {"backend": "scripted", "name": "m", "outputs": ["#### 0"]}}

    async def go() -> tuple[list[search.TestResult], Any]:
        async with System.from_dict(config) as best:
            with Store(tmp_path / "r.db") as store:
                rows = await search.evaluate_on_test(store, task, task.problems(), [("t", 0, best)])
            return rows, best.pool.created

    rows, created = asyncio.run(go())
    assert len(created) == 1
    (backend,) = created
    n = int(rows[-1].label.removeprefix("vote@"))
    # 3 best queries (n=6), 3 greedy requests, 3 vote queries (n=N), all on that one instance
    assert sorted(c[1] for c in backend.calls) == sorted([6] * 3 + [1] * 3 + [n] * 3)
    assert rows[0].correct == 1  # "#### 0" is right only on p0


@pytest.mark.embedded
def test_evaluate_on_test_on_the_embedded_model(tmp_path: Path) -> None:
    task = arithmetic(4)
    _, test = search.split_problems(task.problems(), 1, 2, seed=0)
    config = {
        "name": "tiny",
        # One engine thread: on a busy 2-core machine llama.cpp's threads wait on each other.
        "model": {
            "backend": "llamacpp",
            "model": "smollm2-135m",
            "threads": 1,
            "n_parallel": 4,
            "ctx_per_sequence": 512,
        },
        "layers": [
            {"type": "generate", "n": 3, "temperature": 0.7, "max_tokens": 16},
            {"type": "vote"},
        ],
    }

    async def go() -> list[search.TestResult]:
        async with System.from_dict(config) as best:
            with Store(tmp_path / "r.db") as store:
                rows = await search.evaluate_on_test(store, task, test, [("trial 0", 0, best)])
                greedy = run_stats(store, rows[1].run_id, _ids(test), "math")
            assert len(best.pool.created) == 1
            return [*rows, greedy]

    best, greedy, vote, stats = asyncio.run(go())
    assert [best.kind, greedy.kind, vote.kind] == ["system", "greedy", "vote"]
    assert all(r.problems == 2 and r.tokens_per_query > 0 for r in (best, greedy, vote))
    assert greedy.tokens_per_query == (stats.prompt_tokens + stats.completion_tokens) / 2
    estimate = search.vote_samples(
        best.tokens_per_query, stats.prompt_tokens / 2, stats.completion_tokens / 2
    )
    n = int(vote.label.removeprefix("vote@"))
    # The estimate, or its one correction when the vote at the estimate missed by > 25%: then
    # the corrected vote is the nearer of the two to the best system's tokens per query.
    if n != estimate:
        prompt = stats.prompt_tokens / 2
        per_sample = (vote.tokens_per_query - prompt) / n
        assert abs(round((best.tokens_per_query - prompt) / per_sample) - n) <= 1
    assert abs(vote.tokens_per_query - best.tokens_per_query) <= 0.5 * best.tokens_per_query
