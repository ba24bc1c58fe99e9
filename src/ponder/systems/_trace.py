"""Traces: what every component of a system did for one query, and what it cost.

A :class:`Trace` is plain pydantic data: ``trace.model_dump_json()`` stores it and
``Trace.model_validate_json(text)`` reads it back. Its shape is a tree: the trace has layers, a layer
has component events, an event has backend calls and fallbacks.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ponder.records import FinishReason, Message, SamplingParams
from ponder.systems._state import Candidate, Critique


class Usage(BaseModel):
    """Backend calls and tokens, and wall time.

    Calls and tokens add up over components. ``wall_s`` is the elapsed time of what the usage
    describes (a call, a component, a layer, a query); components of a layer overlap, so the wall
    time of a query is not the sum of its components' wall times.
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def plus(self, other: Usage, *, wall_s: float | None = None) -> Usage:
        """The sum of calls and tokens; wall time is summed unless given."""
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            wall_s=self.wall_s + other.wall_s if wall_s is None else wall_s,
        )


class CallRecord(BaseModel):
    """One backend request (for n completions of one prompt)."""

    purpose: str = Field(description='What the call was for, e.g. "rank" or "rank (repair 1)".')
    model: str = Field(description="Backend identity.")
    prompt: str | list[Message]
    n: int = 1
    params: SamplingParams
    outputs: list[str] = Field(default_factory=list)
    finish_reasons: list[FinishReason] = Field(default_factory=list)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = Field(
        0, ge=0, description="Of prompt_tokens, those the engine's prompt cache served."
    )
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = Field(None, description="Set when the call failed.")
    reused: int = Field(
        0,
        ge=0,
        description="How many of the n completions came from stored generations instead of the "
        "backend (a generation cache); its usage counts them as if drawn.",
    )


class Fallback(BaseModel):
    """A component could not do its normal work and did something documented instead."""

    reason: str = Field(description="What went wrong, e.g. the last parse error.")
    action: str = Field(description="What the component did instead.")
    candidate_ids: list[str] = Field(default_factory=list, description="Candidates it affected.")
    output: str | None = Field(None, description="The last unparseable model output, if any.")


class TreeNode(BaseModel):
    """One node of a tree search: a partial solution ending in one more step.

    The root (id 0) is the empty solution; every other node adds ``text``, one step, to its
    parent's solution. Step-level strategies (beam search, MCTS, particle filtering) grow the tree.
    """

    id: int
    parent: int | None = None
    depth: int = Field(0, ge=0, description="Steps from the root (the root: 0).")
    text: str = Field("", description="This node's step (the root: empty).")
    finish_reason: FinishReason = "unknown"
    terminal: bool = Field(False, description="The solution is complete: nothing follows.")
    truncated: bool = Field(
        False, description="The delimiter never came: the step was cut at max_step_tokens."
    )
    completion_tokens: int = 0
    score: float | None = Field(None, description="The scorer's score of this step (None: none).")
    value: float | None = Field(
        None, description="Path score (beam, particles) or mean backed-up value (MCTS)."
    )
    visits: int = Field(0, ge=0, description="MCTS: times a simulation went through it.")
    note: str = ""


class SearchTree(BaseModel):
    """The tree a step-level search grew for one query, and which of its paths won."""

    strategy: str = Field(description="The component type, e.g. 'beam_search'.")
    scorer: str = Field(description="The process scorer's name.")
    aggregate: str = Field("last", description="How step scores make a path score.")
    delimiter: str = Field("\n\n", description="What separates steps in a solution.")
    nodes: list[TreeNode] = Field(default_factory=list)
    chosen: list[int] = Field(
        default_factory=list, description="Leaf ids returned as candidates, best first."
    )

    def node(self, node_id: int) -> TreeNode:
        return self.nodes[node_id]

    def path(self, node_id: int) -> list[TreeNode]:
        """The nodes from the root's first step down to ``node_id`` (the root excluded)."""
        out: list[TreeNode] = []
        current: int | None = node_id
        while current is not None and current != 0:
            node = self.nodes[current]
            out.append(node)
            current = node.parent
        return out[::-1]

    def solution(self, node_id: int) -> str:
        """The partial solution at ``node_id``: its path's steps joined by the delimiter."""
        return self.delimiter.join(n.text for n in self.path(node_id))

    def children(self, node_id: int) -> list[TreeNode]:
        return [n for n in self.nodes if n.parent == node_id]

    @property
    def winning_path(self) -> list[int]:
        """Node ids from the root to the best chosen leaf (empty when nothing was chosen)."""
        if not self.chosen:
            return []
        return [0, *(n.id for n in self.path(self.chosen[0]))]


class ComponentEvent(BaseModel):
    """What one component did in one layer for one query."""

    layer: int
    index: int = Field(description="Position of the component within its layer.")
    component: str = Field(description="Component type, e.g. 'rank'.")
    label: str = Field(description="The component's label (its type unless the config names it).")
    models: list[str] = Field(default_factory=list, description="Backend identities it used.")
    input_ids: list[str] = Field(default_factory=list, description="Candidates it was given.")
    produced: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    dropped: list[str] = Field(default_factory=list)
    output_ids: list[str] | None = Field(
        None, description="Its selection, in order (components that filter or reorder)."
    )
    scores: dict[str, float] = Field(default_factory=dict, description="Scores by candidate id.")
    calls: list[CallRecord] = Field(default_factory=list)
    fallbacks: list[Fallback] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    tree: SearchTree | None = Field(
        None, description="The search tree of a step-level search component."
    )

    @property
    def key(self) -> str:
        """A unique name within the trace: ``L<layer>.<index>:<label>``."""
        return f"L{self.layer}.{self.index}:{self.label}"


class LayerRecord(BaseModel):
    """One layer: its component events and the candidate order it handed on."""

    index: int
    events: list[ComponentEvent] = Field(default_factory=list)
    candidate_ids: list[str] = Field(default_factory=list, description="State after the layer.")
    unit_tests: int = Field(0, description="Unit tests in the state after the layer.")
    wall_s: float = 0.0


class Trace(BaseModel):
    """Everything a system did to answer one query."""

    system: str = Field(description="The system's name.")
    config: dict[str, Any] = Field(default_factory=dict, description="The system's config.")
    query: list[Message]
    seed: int = 0
    layers: list[LayerRecord] = Field(default_factory=list)
    candidates: list[Candidate] = Field(
        default_factory=list, description="Every candidate made, latest version, in creation order."
    )
    critiques: list[Critique] = Field(default_factory=list)
    unit_tests: list[str] = Field(default_factory=list)
    final_ids: list[str] = Field(
        default_factory=list, description="Candidates after the last layer."
    )
    answer_id: str | None = Field(None, description="The candidate given as the answer.")
    usage: Usage = Field(
        default_factory=Usage, description="Summed over components; wall_s is the query's."
    )
    usage_by_component: dict[str, Usage] = Field(
        default_factory=dict, description="By event key (``L<layer>.<index>:<label>``)."
    )
    error: str | None = Field(None, description="Set on a partial trace of a failed run.")

    @property
    def events(self) -> list[ComponentEvent]:
        """All component events, layer by layer."""
        return [e for layer in self.layers for e in layer.events]

    @property
    def fallbacks(self) -> list[Fallback]:
        return [f for e in self.events for f in e.fallbacks]

    def candidate(self, candidate_id: str) -> Candidate | None:
        return next((c for c in self.candidates if c.id == candidate_id), None)

    @property
    def reuse(self) -> Reuse:
        """What stored generations saved in this query (see :class:`Reuse`)."""
        calls = [c for e in self.events for c in e.calls if c.error is None]
        return Reuse(
            calls=sum(1 for c in calls if c.reused and c.reused == c.n),
            completions=sum(c.reused for c in calls),
        )


class Reuse(BaseModel):
    """What a generation cache saved in one query (a :attr:`Trace.reuse`).

    Attributes:
        calls: Model calls served wholly from stored generations (no backend request made).
        completions: Completions served from stored generations, over all calls.
    """

    model_config = ConfigDict(frozen=True)

    calls: int = 0
    completions: int = 0


def sum_usage(events: list[ComponentEvent], wall_s: float) -> tuple[Usage, dict[str, Usage]]:
    """Total usage (with the given wall time) and usage per component event."""
    total = Usage()
    by_component: dict[str, Usage] = {}
    for event in events:
        total = total.plus(event.usage)
        by_component[event.key] = event.usage
    return total.model_copy(update={"wall_s": wall_s}), by_component
