"""The prompt messages a run's model actually saw: stored with the run, or rebuilt for older runs.

Since schema version 1 the store keeps each problem's exact prompt, written when the problem was
sampled (or given to a system); export uses it as stored (source ``stored``). Runs stored before
that have only their task's :meth:`~ponder.tasks.Task.spec` (name, data source, template, system
prompt, few-shot examples) and each problem's text; for their problems the prompts are rebuilt,
trying in order:

1. ``task``: build the task again (through the registry by its name, or, for a ``jsonl`` task,
   from the data file and field names its source records) with the options the spec records,
   and check that the rebuilt task's spec equals the stored one (the data source aside: prompts
   are built from the stored problem text, not from the data file); then use its own
   :meth:`~ponder.tasks.Task.prompt`.
2. ``spec``: a math-task spec (``template``, ``system_prompt`` and ``shots`` stored verbatim) is
   enough on its own: :class:`~ponder.tasks.MathTask`'s prompt code runs on the stored values. This
   covers a ``jsonl`` run whose data file has moved or changed.
3. ``question``: nothing else worked (say, a plugin task that is no longer installed): a single user
   message holding the stored question. Records then carry ``"prompt_rebuilt": false``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ponder.errors import PonderError
from ponder.records import Message, Problem, Prompt
from ponder.tasks import JsonlTask, MathTask, Task, get_task

PromptSource = Literal["stored", "task", "spec", "question"]
"""Where prompts come from (see the module docstring)."""

# Spec keys that are not constructor options of the task they describe.
_NOT_OPTIONS = frozenset({"name", "source", "shots", "verifier"})
_JSONL_SOURCE_OPTIONS = ("path", "question_field", "answer_field", "id_field")


@dataclass(frozen=True)
class PromptBuilder:
    """Gives the prompt of a stored problem as the run's model saw it.

    Attributes:
        source: ``stored`` when every problem's prompt is stored; otherwise how the prompts of the
            problems without one are rebuilt: ``task``, ``spec`` or ``question``.
        reason: Why the better ways did not apply (empty when ``source`` is ``stored`` or ``task``).
        stored: problem id -> its stored prompt (used wherever present).
    """

    source: PromptSource
    task: Task | None = None
    reason: str = ""
    stored: Mapping[str, Prompt] = field(default_factory=dict)

    @property
    def rebuilt(self) -> bool:
        """True when the prompts are exactly those the model saw (stored or faithfully rebuilt)."""
        return self.source != "question"

    def prompt(self, problem: Problem) -> list[Message]:
        stored = self.stored.get(problem.id)
        if stored is not None:
            # A raw-text prompt (completion endpoint) is one user turn in chat-format records.
            return [Message(role="user", content=stored)] if isinstance(stored, str) else stored
        if self.task is None:
            return [Message(role="user", content=problem.question)]
        return self.task.prompt(problem)


@dataclass(kw_only=True)
class _SpecMathTask(MathTask):
    """A math task rebuilt from a stored spec alone: prompts only, no data."""

    stored_shots: tuple[tuple[str, str], ...] = ()

    def _load(self) -> tuple[list[Problem], dict[str, object]]:
        raise NotImplementedError("a task rebuilt from a run's spec has no data; only prompts")

    def shots(self) -> list[tuple[str, str]]:
        return list(self.stored_shots)


def _normalized(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` as the store keeps it (a JSON round trip), without the data source."""
    data: dict[str, Any] = json.loads(json.dumps(dict(spec), default=str))
    data.pop("source", None)
    return data


def _build_task(spec: Mapping[str, Any]) -> Task:
    """Build the task of ``spec`` again with the constructor options the spec records."""
    options = {k: v for k, v in spec.items() if k not in _NOT_OPTIONS}
    source = spec.get("source")
    if isinstance(source, Mapping) and source.get("kind") == "jsonl":
        # The spec's name of a jsonl task is its file's stem or a chosen name, not "jsonl"; the
        # registry cannot pass a "name" option, so the class is called directly.
        options.update({k: source[k] for k in _JSONL_SOURCE_OPTIONS if k in source})
        return JsonlTask(name=str(spec.get("name", "")), **options)
    if isinstance(source, Mapping) and isinstance(source.get("options"), Mapping):
        # Tasks over a user's file record the options that rebuild them (file, fields, name);
        # the registered task is named after the source kind (jsonl-code, mbpp).
        options.update(source["options"])
        return get_task(str(source.get("kind", "")), **options)
    return get_task(str(spec.get("name", "")), **options)


def _from_registry(spec: Mapping[str, Any]) -> Task:
    task = _build_task(spec)
    rebuilt = _normalized({**task.spec(), "verifier": task.verifier})
    stored = _normalized(spec)
    if rebuilt != stored:
        differ = sorted(
            k for k in rebuilt.keys() | stored.keys() if rebuilt.get(k) != stored.get(k)
        )
        raise ValueError(f"the rebuilt task's spec differs in {', '.join(differ)}")
    return task


def _from_spec(spec: Mapping[str, Any]) -> Task:
    template, system_prompt, shots = (
        spec.get("template"),
        spec.get("system_prompt"),
        spec.get("shots"),
    )
    if not isinstance(template, str):
        raise ValueError("the spec has no template")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ValueError("the spec's system_prompt is not a string")
    if not isinstance(shots, list) or not all(
        isinstance(s, Mapping)
        and isinstance(s.get("question"), str)
        and isinstance(s.get("answer"), str)
        for s in shots
    ):
        raise ValueError("the spec has no list of few-shot examples")
    return _SpecMathTask(
        template=template,
        system_prompt=system_prompt,
        stored_shots=tuple((s["question"], s["answer"]) for s in shots),
    )


def prompt_builder(
    spec: Mapping[str, Any],
    stored: Mapping[str, Prompt] | None = None,
    problem_ids: Collection[str] | None = None,
) -> PromptBuilder:
    """The prompts of the run whose task spec is ``spec``: those stored, else the best rebuild.

    Args:
        stored: problem id -> the prompt stored with it (:meth:`ponder.store.Store.prompts`).
        problem_ids: The run's problems; when every one has a stored prompt nothing is rebuilt.

    Never raises for a spec it cannot use: it falls back, and says why in ``reason``.
    """
    stored = dict(stored or {})
    if stored and problem_ids is not None and all(i in stored for i in problem_ids):
        return PromptBuilder("stored", stored=stored)
    reasons = []
    try:
        return PromptBuilder("task", _from_registry(spec), stored=stored)
    except (PonderError, TypeError, ValueError, OSError) as exc:
        reasons.append(f"task not rebuilt ({_message(exc)})")
    try:
        return PromptBuilder("spec", _from_spec(spec), reason="; ".join(reasons), stored=stored)
    except (PonderError, TypeError, ValueError) as exc:
        reasons.append(f"no prompt template in the spec ({_message(exc)})")
    return PromptBuilder("question", reason="; ".join(reasons), stored=stored)


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, PonderError) else str(exc)
