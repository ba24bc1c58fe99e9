"""A minimal Task for logic tests (the real tasks are tested in test_tasks.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ponder.records import Message, Problem


@dataclass
class ListTask:
    items: list[Problem] = field(default_factory=list)
    name: str = "list"
    template: str = "Q: {question}"
    verifier: Literal["math"] = "math"

    def problems(self) -> list[Problem]:
        return list(self.items)

    def prompt(self, problem: Problem) -> list[Message]:
        return [Message(role="user", content=self.template.format(question=problem.question))]

    def spec(self) -> dict[str, object]:
        return {"name": self.name, "template": self.template}


def arithmetic(count: int) -> ListTask:
    return ListTask(
        [
            Problem(id=f"p{i}", question=f"What is {i} + {i}?", reference=str(2 * i))
            for i in range(count)
        ]
    )
