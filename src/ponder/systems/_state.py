"""The typed state that flows between layers: the query, candidates, critiques, unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.errors import UserError
from ponder.records import FinishReason, Message

Action = Literal["generated", "fused", "refined"]
"""How a component produced or changed a candidate."""


class Provenance(BaseModel):
    """One step in a candidate's history: which component made or changed it, with which model."""

    model_config = ConfigDict(frozen=True)

    action: Action
    component: str = Field(description="Label of the component.")
    layer: int
    index: int = Field(description="Index of the component within its layer.")
    model: str | None = Field(None, description="Identity of the backend that wrote the text.")
    parents: list[str] = Field(
        default_factory=list, description="Ids of the candidates this one was made from (fuse)."
    )
    previous_text: str | None = Field(None, description="The text before a change (refine).")


class Candidate(BaseModel):
    """A candidate answer.

    Ids are ``L<layer>.<component>.<k>``: the layer and component that produced it and a counter, so
    they are unique within a run and the same on every rerun. A candidate changed in place (refine)
    keeps its id; ``version`` counts the changes and ``history`` records each one.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    answer: str | None = Field(None, description="The answer extracted from the text.")
    version: int = Field(0, ge=0)
    history: list[Provenance] = Field(default_factory=list)
    scores: dict[str, float] = Field(
        default_factory=dict, description="Scores by the label of the component that gave them."
    )
    finish_reason: FinishReason = "unknown"
    completion_tokens: int = Field(0, ge=0)

    @property
    def origin(self) -> Provenance | None:
        """The step that produced the candidate."""
        return self.history[0] if self.history else None


class Critique(BaseModel):
    """A critic's view of one version of one candidate."""

    model_config = ConfigDict(frozen=True)

    candidate_id: str
    candidate_version: int = 0
    strengths: str = ""
    weaknesses: str = ""
    text: str = Field("", description="The critic's full text about this candidate.")
    component: str = ""
    layer: int = 0


class State(BaseModel):
    """What one layer hands to the next.

    The order of ``candidates`` is meaningful: rankers and votes reorder it, and the final answer is
    the first candidate after the last layer.
    """

    model_config = ConfigDict(frozen=True)

    messages: list[Message]
    candidates: list[Candidate] = Field(default_factory=list)
    critiques: list[Critique] = Field(default_factory=list)
    unit_tests: list[str] = Field(default_factory=list)
    reference: str | None = Field(
        None, description="A reference answer or tests, for programmatic verifiers only."
    )

    def critiques_of(self, candidate: Candidate) -> list[Critique]:
        """Critiques of the candidate's current version (older ones describe text that changed)."""
        return [
            c
            for c in self.critiques
            if c.candidate_id == candidate.id and c.candidate_version == candidate.version
        ]


def as_messages(query: str | Sequence[Message] | Sequence[dict[str, Any]]) -> list[Message]:
    """The query as chat messages: a string becomes one user message.

    The conversation ends with the user's message, or with a tool's result (an agent loop
    answering the model's tool call; components then leave that message as it is).

    Raises:
        UserError: the query is empty or its last message is neither the user's nor a tool's.
    """
    if isinstance(query, str):
        messages = [Message(role="user", content=query)]
    else:
        messages = [m if isinstance(m, Message) else Message.model_validate(m) for m in query]
    if not messages:
        raise UserError("the query has no messages", hint="pass a question or a list of messages")
    if messages[-1].role not in ("user", "tool"):
        raise UserError(
            f"the query's last message is from {messages[-1].role!r}, not the user",
            hint="end the conversation with the user's message the system should answer (or "
            "with the result of a tool the model called)",
        )
    return messages


def query_text(messages: Sequence[Message]) -> str:
    """The query as plain text for the prompts of critics, rankers and judges.

    One user message is shown as it is; a longer conversation is shown turn by turn (system messages
    are left out: they instruct the answering model, not the critic).
    """
    turns = [m for m in messages if m.role != "system"]
    if len(turns) == 1:
        return turns[0].content
    lines = ["(a conversation; answer its last user message)"]
    lines += [f"[{m.role}]\n{m.content}" for m in turns]
    return "\n\n".join(lines)
