"""Rebuild the prompt messages a run's model actually saw, from the run's stored task spec.

A run stores its task's :meth:`~ponder.tasks.Task.spec` (name, data source, template, system prompt,
few-shot examples) and each problem's text, but not the prompts themselves. Training data needs the
exact prompts, so they are rebuilt here, trying in order:

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ponder.errors import PonderError
from ponder.records import Message, Problem
from ponder.tasks import JsonlTask, MathTask, Task, get_task

PromptSource = Literal["task", "spec", "question"]
"""How prompts were rebuilt (see the module docstring)."""

# Spec keys that are not constructor options of the task they describe.
_NOT_OPTIONS = frozenset({"name", "source", "shots", "verifier"})
_JSONL_SOURCE_OPTIONS = ("path", "question_field", "answer_field", "id_field")


@dataclass(frozen=True)
class PromptBuilder:
    """Builds the prompt of a stored problem the way the run built it.

    Attributes:
        source: How the prompts are rebuilt: ``task``, ``spec`` or ``question``.
        reason: Why the better ways did not apply (empty when ``source`` is ``task``).
    """

    source: PromptSource
    task: Task | None = None
    reason: str = ""

    @property
    def rebuilt(self) -> bool:
        """True when the prompts are exactly those the model saw."""
        return self.source != "question"

    def prompt(self, problem: Problem) -> list[Message]:
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


def prompt_builder(spec: Mapping[str, Any]) -> PromptBuilder:
    """The best available way to rebuild the prompts of the run whose task spec is ``spec``.

    Never raises for a spec it cannot use: it falls back, and says why in ``reason``.
    """
    reasons = []
    try:
        return PromptBuilder("task", _from_registry(spec))
    except (PonderError, TypeError, ValueError, OSError) as exc:
        reasons.append(f"task not rebuilt ({_message(exc)})")
    try:
        return PromptBuilder("spec", _from_spec(spec), reason="; ".join(reasons))
    except (PonderError, TypeError, ValueError) as exc:
        reasons.append(f"no prompt template in the spec ({_message(exc)})")
    return PromptBuilder("question", reason="; ".join(reasons))


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, PonderError) else str(exc)
