"""The search loop on the scripted backend: a synthetic task where the best system is known, budgets,
pruning, constraints, resume after a kill, and dev/test isolation. The real embedded model runs an
end-to-end search in tests/test_search_cli.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from ponder.backends import ScriptedBackend
from ponder.errors import ConfigError
from ponder.records import Prompt, SamplingParams
from ponder.search import SearchSettings, search
from ponder.store import Store
from ponder.tasks import get_task

HERE = Path(__file__).resolve().parent

SPACE: dict[str, Any] = {
    "name": "synth",
    "generate": {
        "models": ["sharp", "dull"],
        "n": [1, 2, 4],
        "temperature": [0.2, 0.9],
        "max_tokens": 20,
    },
    "layers": [{"type": "vote"}],
}
"""24 systems. ``sharp`` answers right at temperature <= 0.5 and wrong above; ``dull`` is always
wrong; tokens grow with n. The best system: sharp, n=1, temperature 0.2 (with or without a vote,
which calls no model): accuracy 1 at the fewest tokens."""


def _question(prompt: Prompt) -> tuple[int, int]:
    text = prompt if isinstance(prompt, str) else prompt[-1].content
    found = re.findall(r"What is (\d+)\+(\d+)\?", text)
    a, b = found[-1]
    return int(a), int(b)


def sharp_answer(prompt: Prompt, i: int, params: SamplingParams) -> str:
    a, b = _question(prompt)
    return f"so #### {a + b if params.temperature <= 0.5 else a + b + 1}"


def dull_answer(prompt: Prompt, i: int, params: SamplingParams) -> str:
    a, b = _question(prompt)
    return f"so #### {a + b + 2}"


def make_backends(delay_s: float = 0.0) -> dict[str, ScriptedBackend]:
    return {
        "sharp": ScriptedBackend(fn=sharp_answer, name="sharp", delay_s=delay_s),
        "dull": ScriptedBackend(fn=dull_answer, name="dull", delay_s=delay_s),
    }


def write_task(tmp_path: Path, count: int = 40) -> Path:
    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"id": f"s{i}", "question": f"What is {i}+{i + 3}?", "answer": str(2 * i + 3)}
            )
            + "\n"
            for i in range(count)
        )
    )
    return data


def best(result: Any) -> Any:
    done = [t for t in result.trials if t.state == "complete"]
    return max(done, key=lambda t: (t.accuracy, -t.tokens_per_query))


def is_the_best(trial: Any) -> bool:
    p = trial.params
    return (
        p["generate.model"] == "sharp" and p["generate.n"] == 1 and p["generate.temperature"] == 0.2
    )


@pytest.mark.parametrize(("algorithm", "trials"), [("grid", 8), ("random", 24), ("tpe", 16)])
def test_every_algorithm_finds_the_known_best_system(
    tmp_path: Path, algorithm: str, trials: int
) -> None:
    task = get_task("jsonl", path=write_task(tmp_path))
    result = search(
        SPACE,
        task,
        store=tmp_path / "runs.db",
        backends=make_backends(),
        algorithm=algorithm,
        trials=trials,
        dev=6,
        test=0,
        seed=1,
        prune=False,
    )
    assert is_the_best(best(result)), best(result)
    assert best(result).accuracy == 1.0
    assert result.front and all(is_the_best(result.trial(n)) for n in result.front)
    if algorithm == "grid":
        # The first systems of the grid, in order, never a repeat.
        assert len(result.trials) == 8
        assert len({json.dumps(t.params, sort_keys=True) for t in result.trials}) == 8


def test_tpe_finds_the_best_in_fewer_trials_than_random_on_average(tmp_path: Path) -> None:
    task = get_task("jsonl", path=write_task(tmp_path, 10))
    first: dict[str, list[int]] = {"tpe": [], "random": []}
    for algorithm in first:
        for seed in range(3):
            result = search(
                SPACE,
                task,
                store=tmp_path / f"{algorithm}{seed}.db",
                backends=make_backends(),
                algorithm=algorithm,
                trials=16,
                dev=1,
                test=0,
                seed=seed,
                prune=False,
            )
            hits = [t.number for t in result.trials if t.state == "complete" and is_the_best(t)]
            first[algorithm].append(hits[0] if hits else 16)
    assert sum(first["tpe"]) < sum(first["random"]), first


def test_trials_are_stored_system_runs_on_dev_only(tmp_path: Path) -> None:
    task = get_task("jsonl", path=write_task(tmp_path, 12))
    db = tmp_path / "runs.db"
    seen_during_search: set[str] = set()
    store = Store(db)

    def on_trial(trial: Any) -> None:
        if trial.run_id:
            seen_during_search.update(s.problem_id for s in store.samples(trial.run_id))

    with store:
        result = search(
            SPACE,
            task,
            store=store,
            backends=make_backends(),
            algorithm="random",
            trials=5,
            dev=5,
            test=7,
            seed=3,
            top=2,
            on_trial=on_trial,
        )
        assert set(result.dev_ids).isdisjoint(result.test_ids)
        assert len(result.dev_ids) == 5 and len(result.test_ids) == 7
        # While the search ran, its trials answered dev problems only (every one of them).
        assert seen_during_search == set(result.dev_ids)
        assert result.tests, "the front was scored on test"
        assert [r.kind for r in result.tests][-2:] == ["greedy", "vote"]
        for row in result.tests:
            answered = {s.problem_id for s in store.samples(row.run_id) if s.index == 0}
            assert answered >= set(result.test_ids)
            assert row.problems == 7


def test_reused_generations_are_counted_and_not_drawn_again(tmp_path: Path) -> None:
    task = get_task("jsonl", path=write_task(tmp_path, 10))
    backends = make_backends()
    space = {**SPACE, "generate": {**SPACE["generate"], "models": ["sharp"], "n": [4]}}
    result = search(
        space,
        task,
        store=tmp_path / "runs.db",
        backends=backends,
        algorithm="grid",
        trials=10,
        dev=4,
        test=0,
        prune=False,
    )
    # Two temperatures x vote on/off: the vote-on and vote-off systems ask the same generations.
    assert len(result.trials) == 4
    assert len(backends["sharp"].calls) == 2 * 4  # one request per (temperature, dev problem)
    assert result.reused_calls == 2 * 4 and result.calls == 4 * 4


def test_pruning_stops_a_dominated_trial_after_the_first_slice(tmp_path: Path) -> None:
    task = get_task("jsonl", path=write_task(tmp_path, 20))
    # The best system first, then a wrong one: after 3 problems it cannot catch up.
    space = {
        "name": "prune",
        "generate": {"models": ["sharp", "dull"], "n": 1, "temperature": 0.2, "max_tokens": 20},
    }
    backends = make_backends()
    progress: dict[int, list[int]] = {}
    result = search(
        space,
        task,
        store=tmp_path / "runs.db",
        backends=backends,
        algorithm="grid",
        trials=5,
        dev=12,
        test=0,
        prune_after=3,
        on_progress=lambda number, done, total: progress.setdefault(number, []).append(done),
    )
    by_model = {t.params["generate.model"]: t for t in result.trials}
    assert by_model["sharp"].state == "complete" and by_model["sharp"].problems == 12
    dull = by_model["dull"]
    assert dull.state == "pruned" and dull.problems == 3
    assert "dominated by trial" in dull.note
    assert len(backends["dull"].calls) == 3  # never asked about the other 9 problems
    assert result.front == [by_model["sharp"].number]
    # Progress counts each trial's answers: all 12 for the first, 3 before the pruning check.
    assert progress[by_model["sharp"].number] == list(range(1, 13))
    assert progress[dull.number] == [1, 2, 3]


def test_runtime_constraints_mark_trials_infeasible_and_keep_them_off_the_front(
    tmp_path: Path,
) -> None:
    task = get_task("jsonl", path=write_task(tmp_path, 8))
    space = {
        **SPACE,
        "generate": {**SPACE["generate"], "models": ["sharp"], "temperature": 0.2},
        "layers": [],
        "constraints": {"max_tokens_per_query": 1},
    }
    result = search(
        space,
        task,
        store=tmp_path / "runs.db",
        backends=make_backends(),
        algorithm="grid",
        trials=5,
        dev=4,
        test=0,
    )
    assert result.trials and all(t.state == "infeasible" for t in result.trials)
    assert all("max_tokens_per_query" in t.note for t in result.trials)
    assert result.front == []


def test_structural_constraints_are_never_run(tmp_path: Path) -> None:
    task = get_task("jsonl", path=write_task(tmp_path, 8))
    space = {**SPACE, "constraints": {"max_layers": 1}}
    backends = make_backends()
    result = search(
        space,
        task,
        store=tmp_path / "runs.db",
        backends=backends,
        algorithm="random",
        trials=12,
        dev=3,
        test=0,
        seed=0,
    )
    voted = [t for t in result.trials if t.params.get("layers[0].vote.use")]
    assert voted and all(t.state == "infeasible" and t.run_id is None for t in voted)
    assert all("max_layers" in t.note for t in voted)


def test_settings_errors_name_the_field(tmp_path: Path) -> None:
    task = get_task("jsonl", path=write_task(tmp_path, 8))
    with pytest.raises(ConfigError, match="dev"):
        search(SPACE, task, store=tmp_path / "r.db", backends=make_backends(), dev=6, test=6)
    with pytest.raises(Exception, match="trials"):
        SearchSettings(trials=0)


def test_a_changed_space_is_refused_on_resume(tmp_path: Path) -> None:
    task = get_task("jsonl", path=write_task(tmp_path, 8))
    kwargs: dict[str, Any] = {
        "store": tmp_path / "runs.db",
        "backends": make_backends(),
        "algorithm": "random",
        "trials": 2,
        "dev": 3,
        "test": 0,
    }
    search(SPACE, task, **kwargs)
    changed = {**SPACE, "generate": {**SPACE["generate"], "n": [1, 2, 8]}}
    with pytest.raises(ConfigError, match=r"generate\.n\[2\]: 4 -> 8"):
        search(changed, task, **kwargs)
    again = search(SPACE, task, **{**kwargs, "trials": 3})  # the same space resumes
    assert len({json.dumps(t.config, sort_keys=True) for t in again.trials}) == 3


def _trials(storage: Path) -> list[optuna.trial.FrozenTrial]:
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{storage}")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{storage}")
    return study.get_trials(deepcopy=False)


def test_a_killed_search_resumes_without_repeating_a_finished_trial(tmp_path: Path) -> None:
    data = write_task(tmp_path, 8)
    db = tmp_path / "runs.db"
    cmd = [sys.executable, str(HERE / "_search_proc.py"), str(data), str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ})
    assert proc.stdout is not None
    finished = 0
    deadline = time.monotonic() + 120
    while finished < 2 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        finished += line.startswith("trial ")
    assert finished == 2, "the search did not finish two trials"
    storage = db.with_name(db.name + ".search.sqlite")
    while time.monotonic() < deadline and not any(
        t.state.name == "RUNNING" for t in _trials(storage)
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # in the middle of the third trial
    proc.wait(timeout=30)
    before = _trials(storage)
    done_before = {t.number: t.values for t in before if t.state.name == "COMPLETE"}
    running = [t.number for t in before if t.state.name == "RUNNING"]
    assert len(done_before) == 2 and len(running) == 1
    with Store(db) as store:
        samples_before = {
            t.user_attrs["measured"]["run_id"]: len(
                store.samples(t.user_attrs["measured"]["run_id"])
            )
            for t in before
            if t.state.name == "COMPLETE"
        }
    time.sleep(2.5)  # past the dead trial's grace period (heartbeat 1 s, grace 2 s)
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    after = _trials(storage)
    assert {t.number: t.values for t in after if t.number in done_before} == done_before
    dead = next(t for t in after if t.number == running[0])
    assert dead.state.name == "FAIL"
    retry = [t for t in after if t.system_attrs.get("failed_trial") == running[0]]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == dead.params
    assert sum(t.state.name == "COMPLETE" for t in after) == 4
    with Store(db) as store:
        for run_id, count in samples_before.items():
            assert len(store.samples(run_id)) == count  # finished trials drew nothing more
        for t in after:
            if "measured" in t.user_attrs:
                samples = store.samples(t.user_attrs["measured"]["run_id"])
                keys = [(s.problem_id, s.index) for s in samples]
                assert len(keys) == len(set(keys)) == 4


def test_search_budgets_in_tokens_and_time_and_nsga2_runs(tmp_path: Path) -> None:
    task = get_task("jsonl", path=write_task(tmp_path, 8))
    common: dict[str, Any] = {"backends": make_backends(), "dev": 3, "test": 0, "prune": False}
    # Any trial draws more than 1 token, so the token budget stops the search after the first.
    spent = search(SPACE, task, store=tmp_path / "a.db", trials=10, max_search_tokens=1, **common)
    assert len(spent.trials) == 1
    # A trial of a slow model outlasts the 1 s budget: no second trial starts.
    timed = search(
        SPACE,
        task,
        store=tmp_path / "b.db",
        trials=10,
        timeout_s=1.0,
        **{**common, "backends": make_backends(delay_s=1.2)},
    )
    assert len(timed.trials) == 1
    nsga = search(SPACE, task, store=tmp_path / "c.db", trials=6, algorithm="nsga2", **common)
    assert len({json.dumps(t.config, sort_keys=True) for t in nsga.trials}) == 6 and nsga.front


def test_a_system_proposed_again_costs_nothing_and_does_not_count(tmp_path: Path) -> None:
    task = get_task("jsonl", path=write_task(tmp_path, 8))
    # Two systems only: TPE and random must repeat them; the budget counts distinct systems.
    space = {**SPACE, "generate": {**SPACE["generate"], "models": ["sharp"], "n": [1, 2]}}
    space = {**space, "generate": {**space["generate"], "temperature": 0.2}, "layers": []}
    backends = make_backends()
    result = search(
        space,
        task,
        store=tmp_path / "r.db",
        backends=backends,
        algorithm="random",
        trials=2,
        dev=3,
        test=0,
        seed=1,  # proposes one system twice before the other
        prune=False,
    )
    configs = {json.dumps(t.config, sort_keys=True) for t in result.trials}
    assert len(configs) == 2  # both systems, however many repeats it took
    assert len(result.trials) == 3, "this seed repeats a system before it meets the second"
    # One request per dev problem for the first system, at most one more for the second (n=2
    # after n=1 draws only the missing sample; n=1 after n=2 draws nothing); repeats draw nothing.
    assert 3 <= len(backends["sharp"].calls) <= 2 * 3
    assert len(result.front) <= 2 and len(set(result.front)) == len(result.front)
