"""The ``jsonl`` task: math problems from a user's JSON Lines file."""

from __future__ import annotations

import codecs
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ponder._files import read_user_file
from ponder.errors import ConfigError, DataError, NotFoundError
from ponder.records import Problem
from ponder.tasks._base import MathTask, sha256_hex
from ponder.tasks._registry import register_task

_LINE_HINT = 'each non-empty line must be one JSON object, e.g. {"question": "...", "answer": "42"}'


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def iter_jsonl(data: bytes, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of JSON Lines ``data``.

    Line numbers are 1-based and count blank lines, so they match an editor's.

    Raises:
        DataError: a line is not UTF-8, not JSON, or not a JSON object (the message starts with
            ``source:line``), or no line holds anything.
    """
    found = False
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{source}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{source}:{lineno}: malformed JSON: {exc.msg} (column {exc.colno})",
                hint=_LINE_HINT,
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{source}:{lineno}: expected a JSON object, got {_json_type(record)}",
                hint=_LINE_HINT,
            )
        yield lineno, record
        found = True
    if not found:
        raise DataError(f"{source}: no problems (the file has no non-empty lines)")


def data_file(task: str, path: Path | str | None) -> Path:
    """The data file a task was given (``--data``), checked to exist.

    Raises:
        ConfigError: no path, or not a path.
        NotFoundError: the file does not exist.
    """
    if path is None or path == "":
        raise ConfigError(
            f"task {task!r} needs a data file",
            hint="pass --data PATH (a JSON Lines file with one problem per line)",
        )
    if not isinstance(path, str | Path):
        raise ConfigError(f"path must be a file path, got {type(path).__name__}")
    file = Path(path)
    if not file.exists():
        raise NotFoundError(f"data file {file} does not exist", hint="check the --data path")
    return file


def read_data_file(path: Path) -> tuple[bytes, bytes]:
    """(the file's bytes, its JSON Lines text), gunzipped when the name ends in ``.gz``.

    Raises:
        NotFoundError: the file does not exist (any more).
        UserError: it cannot be read.
        DataError: a ``.gz`` file that is not gzip.
    """
    raw = read_user_file(path, "data file", hint="check the --data path")
    if path.suffix != ".gz":
        return raw, raw
    try:
        return raw, gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None


def problem_lines(
    data: bytes, source: str, *, name: str, id_field: str | None
) -> Iterator[tuple[int, str, str, dict[str, Any]]]:
    """Yield ``(line number, problem id, where, object)`` for each problem line of JSON Lines
    ``data``.

    The id is ``record[id_field]`` (a non-empty string or an integer), or ``<name>/<line number>``
    when ``id_field`` is None; ``where`` is ``source:line`` for messages.

    Raises:
        DataError: a line is not a JSON object (see :func:`iter_jsonl`), its id field is missing
            or holds something else, or its id was used on an earlier line.
    """
    first_line: dict[str, int] = {}
    for lineno, record in iter_jsonl(data, source):
        where = f"{source}:{lineno}"
        problem_id = _line_id(record, id_field, f"{name}/{lineno}", where)
        if problem_id in first_line:
            raise DataError(
                f"{where}: duplicate id {problem_id!r} (first used on line "
                f"{first_line[problem_id]})",
                hint="problem ids must be unique within a file",
            )
        first_line[problem_id] = lineno
        yield lineno, problem_id, where, record


def _line_id(record: dict[str, Any], id_field: str | None, default: str, where: str) -> str:
    if id_field is None:
        return default
    if id_field not in record:
        raise DataError(
            f"{where}: no field {id_field!r} (the id field)",
            hint="every line needs an id, or leave out --id-field to number lines",
        )
    value = record[id_field]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise DataError(
        f"{where}: id field {id_field!r} must be a non-empty string or an integer, got {value!r}",
        hint="every line needs an id, or leave out --id-field to number lines",
    )


def _answer(value: object, where: str, answer_field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise DataError(
        f"{where}: field {answer_field!r} must be a string or a number, got {_json_type(value)}"
    )


@register_task("jsonl")
@dataclass(kw_only=True)
class JsonlTask(MathTask):
    """Math problems from a JSON Lines file, one object per line.

    Attributes:
        path: The file (required).
        question_field: Field holding the question text.
        answer_field: Field holding the reference answer; missing or null means no reference.
        id_field: Field holding a unique problem id; by default ids are ``<name>/<line number>``.
        name: The task's name; defaults to the file's stem.
    """

    path: Path | str | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str | None = None
    name: str = ""
    _file: Path = field(default=Path(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._file = data_file("jsonl", self.path)
        for option in ("question_field", "answer_field"):
            value = getattr(self, option)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{option} must be a non-empty string, got {value!r}")
        if self.id_field is not None and (not isinstance(self.id_field, str) or not self.id_field):
            raise ConfigError(f"id_field must be a non-empty string, got {self.id_field!r}")
        if not isinstance(self.name, str):
            raise ConfigError(f"name must be a string, got {type(self.name).__name__}")
        if not self.name:
            self.name = self._file.stem
        super().__post_init__()

    def _load(self) -> tuple[list[Problem], dict[str, object]]:
        raw, data = read_data_file(self._file)
        source = str(self._file)
        problems: list[Problem] = []
        lines = problem_lines(data, source, name=self.name, id_field=self.id_field)
        for lineno, problem_id, where, record in lines:
            problems.append(
                Problem(
                    id=problem_id,
                    question=self._question(record, where),
                    reference=_answer(record.get(self.answer_field), where, self.answer_field),
                    metadata={"line": str(lineno)},
                )
            )
        spec: dict[str, object] = {
            "kind": "jsonl",
            "path": str(self._file.resolve()),
            "sha256": sha256_hex(raw),
            "question_field": self.question_field,
            "answer_field": self.answer_field,
            "id_field": self.id_field,
        }
        return problems, spec

    def _question(self, record: dict[str, Any], where: str) -> str:
        if self.question_field not in record:
            fields = ", ".join(repr(k) for k in record) or "none"
            raise DataError(
                f"{where}: no field {self.question_field!r} (fields: {fields})",
                hint="pass --question-field NAME to read the question from another field",
            )
        question = record[self.question_field]
        if not isinstance(question, str):
            raise DataError(
                f"{where}: field {self.question_field!r} must be a string, "
                f"got {_json_type(question)}"
            )
        if not question.strip():
            raise DataError(f"{where}: field {self.question_field!r} is empty")
        return question
