"""A hand-built trace of a step-level search, and the same trace stored as a system run's answer.

The tree (ids are list positions; values in brackets; ★ the winning path, chosen #1)::

    #0 root [.6, 12 visits]
    ├── #1 apples <b>…</b> [.9] ── #15 ── #16 ── #17 ── #18 ── #19 terminal, chosen #2 (depth 6)
    ├── #3 Count the pairs ★ [.8]
    │   ├── #9 [.95]  #10 [.9]  #11 [.85]  #12 [.8]
    │   ├── #8 So 3 boxes hold 6. ★ [.6]: 5th of 6 by value, shown because it won
    │   │   └── #14 The answer is 6. ★ terminal, chosen #1
    │   └── #13 Divide instead. [.1]: 6th, cut at 4 children
    ├── #2 [.3]  #4 [.2]
    ├── #5 Start over. [.1] truncated: cut at 4 children
    └── #6 (no score or value) ── #7: cut at 4 children
"""

from __future__ import annotations

from pathlib import Path

from ponder.backends import ScriptedBackend
from ponder.records import Message, Sample, SamplingParams
from ponder.runs import system_spec
from ponder.store import Store
from ponder.systems import (
    CallRecord,
    Candidate,
    ComponentEvent,
    LayerRecord,
    SearchTree,
    System,
    Trace,
    TreeNode,
    Usage,
)
from tests._fakes import ListTask

APPLES = "Let x be the number of <b>apples</b> [bold]not markup[/bold]."
WINNING_STEPS = ["Count the pairs: 2 per box.", "So 3 boxes hold 6.", "The answer is 6. #### 6"]
CUT_STEPS = ["Start over.", "Divide instead.", "Write nothing."]
OFF_PATH_STEPS = ["Guess 7.", "Maybe subtract.", "So 3 boxes hold 7.", "Apples come in boxes."]
DEEP_STEPS = ["Each box has 4.", "Two boxes.", "Add them.", "The answer is 8. #### 8"]

# (parent, text, score, value, visits); terminal / truncated set below.
_NODES: list[tuple[int | None, str, float | None, float | None, int]] = [
    (None, "", None, 0.6, 12),  # 0
    (0, APPLES, 0.9, 0.9, 4),  # 1
    (0, "Guess 7.", 0.3, 0.3, 1),  # 2
    (0, WINNING_STEPS[0], 0.8, 0.8, 5),  # 3
    (0, "Maybe subtract.", 0.2, 0.2, 1),  # 4
    (0, "Start over.", 0.1, 0.1, 1),  # 5
    (0, "Write nothing.", None, None, 0),  # 6
    (6, "Nothing more.", None, None, 0),  # 7
    (3, WINNING_STEPS[1], 0.5, 0.6, 4),  # 8
    (3, "So 3 boxes hold 7.", 0.95, 0.95, 1),  # 9
    (3, "So 3 boxes hold 8.", 0.9, 0.9, 0),  # 10
    (3, "So 3 boxes hold 9.", 0.85, 0.85, 0),  # 11
    (3, "So 3 boxes hold 10.", 0.8, 0.8, 0),  # 12
    (3, "Divide instead.", 0.1, 0.1, 0),  # 13
    (8, WINNING_STEPS[2], 0.99, 0.7, 3),  # 14
    (1, "Apples come in boxes.", 0.7, 0.8, 3),  # 15
    (15, DEEP_STEPS[0], 0.7, 0.7, 2),  # 16
    (16, DEEP_STEPS[1], 0.6, 0.6, 1),  # 17
    (17, DEEP_STEPS[2], 0.5, 0.5, 1),  # 18
    (18, DEEP_STEPS[3], 0.4, 0.4, 1),  # 19
]


def search_tree() -> SearchTree:
    nodes: list[TreeNode] = []
    for i, (parent, text, score, value, visits) in enumerate(_NODES):
        depth = 0 if parent is None else nodes[parent].depth + 1
        nodes.append(
            TreeNode(
                id=i,
                parent=parent,
                depth=depth,
                text=text,
                finish_reason="length" if i == 5 else "stop",
                terminal=i in (14, 19),
                truncated=i == 5,
                completion_tokens=len(text.split()),
                score=score,
                value=value,
                visits=visits,
            )
        )
    return SearchTree(
        strategy="mcts",
        scorer="judge",
        aggregate="min",
        delimiter="\n\n",
        nodes=nodes,
        chosen=[14, 19],
    )


def search_trace() -> Trace:
    """A one-layer system whose only component is a search, with the tree above."""
    tree = search_tree()
    params = SamplingParams(max_tokens=32, stop=["\n\n"])
    calls = [
        CallRecord(
            purpose="step",
            model="scripted",
            prompt=[Message(role="user", content="How many apples?")],
            params=params,
            outputs=[tree.node(i).text],
            finish_reasons=["stop"],
            prompt_tokens=10,
            completion_tokens=5,
        )
        for i in (1, 3, 8)
    ]
    calls.append(
        CallRecord(
            purpose="score",
            model="scripted",
            prompt="Rate this step",
            params=params,
            error="judge <timeout> after 3 tries",
        )
    )
    usage = Usage(calls=4, prompt_tokens=30, completion_tokens=15, wall_s=0.5)
    answers = [
        Candidate(id="L0.0.1", text=tree.solution(14), answer="6", finish_reason="stop"),
        Candidate(id="L0.0.2", text=tree.solution(19), answer="8", finish_reason="stop"),
    ]
    event = ComponentEvent(
        layer=0,
        index=0,
        component="mcts",
        label="mcts",
        models=["scripted"],
        produced=[c.id for c in answers],
        calls=calls,
        usage=usage,
        tree=tree,
    )
    return Trace(
        system="tree-demo",
        config={"name": "tree-demo", "layers": [{"type": "mcts"}]},
        query=[Message(role="user", content="How many apples?")],
        layers=[LayerRecord(index=0, events=[event], candidate_ids=[c.id for c in answers])],
        candidates=answers,
        final_ids=[c.id for c in answers],
        answer_id="L0.0.1",
        usage=usage,
        usage_by_component={event.key: usage},
    )


def store_search_trace(
    db: Path, task: ListTask, tree: SearchTree | None = None
) -> tuple[str, str, int]:
    """A system run on ``task`` whose first problem's answer has :func:`search_trace`'s trace
    (with ``tree`` in place of its own, if given).

    Returns:
        The run id, the problem id and the stored sample's id.
    """
    config = {"name": "tree-demo", "layers": [{"type": "generate"}]}
    # The caller's backend is never closed by the system: nothing to clean up.
    spec = system_spec(
        System.from_dict(config, default_backend=ScriptedBackend(outputs=["x"])), task
    )
    trace = search_trace()
    if tree is not None:
        trace.layers[0].events[0].tree = tree
    problem = task.problems()[0]
    with Store(db) as store:
        run = store.ensure_run(spec)
        store.add_problems(run.id, task.problems())
        answer = trace.candidate(trace.answer_id or "")
        assert answer is not None
        sample = Sample(
            run_id=run.id,
            problem_id=problem.id,
            index=0,
            text=answer.text,
            finish_reason="stop",
            completion_tokens=trace.usage.completion_tokens,
            prompt_tokens=trace.usage.prompt_tokens,
            latency_s=trace.usage.wall_s,
            seed=0,
        )
        (sample_id,) = store.add_samples([sample], [trace])
    return run.id, problem.id, sample_id
