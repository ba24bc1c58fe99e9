"""Step-level tree search (beam search, DVTS, MCTS, particle filtering) on the scripted backend
with a scripted scorer, where the best path is known; budgets; configs; the real engine's step
requests."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict

from ponder.backends import ScriptedBackend
from ponder.errors import ConfigError
from ponder.records import Message, Prompt, SamplingParams
from ponder.systems import System, SystemResult
from ponder.systems.tree import ScoreInput, Scorer, register_scorer


class TableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["test-table"] = "test-table"
    scores: dict[str, float] = {}
    default: float = 0.5


class TableScorer(Scorer):
    """Scores a partial solution by its last step's text (a prefix of it names the entry)."""

    def __init__(self, config: TableConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return "test-table"

    async def score(self, item: ScoreInput, ctx: Any) -> float | None:
        last = item.steps[-1] if item.steps else ""
        for key, value in self.config.scores.items():
            if last.startswith(key):
                return value
        return self.config.default


@register_scorer("test-table", TableConfig)
def _table(config: TableConfig) -> Scorer:
    return TableScorer(config)


def partial_of(prompt: Prompt) -> str:
    """The partial solution a step request continues ("" at the root)."""
    if isinstance(prompt, list) and prompt[-1].role == "assistant":
        return (prompt[-1].content or "").strip()
    return ""


def last_step(partial: str) -> str:
    return partial.split("\n\n")[-1] if partial else ""


def trap_tree(prompt: Prompt, i: int, params: SamplingParams) -> str:
    """The root's likelier-looking step leads to a wrong answer; the other to the right one."""
    last = last_step(partial_of(prompt))
    if last == "":
        return ["Low start.", "High start."][i % 2]
    if last.startswith("Low"):
        return "Low path ends right. #### 2"
    if last.startswith("High"):
        return "High path ends wrong. #### 1"
    return "#### 0"


TRAP_SCORES = {"Low start": 0.3, "High start": 0.9, "Low path": 0.95, "High path": 0.1}


def system(layer: dict[str, Any], backend: ScriptedBackend) -> System:
    return System.from_dict({"name": "tree", "layers": [[layer]]}, default_backend=backend)


def run(layer: dict[str, Any], fn: Any = trap_tree) -> tuple[SystemResult, ScriptedBackend]:
    backend = ScriptedBackend(fn=fn)
    with system(layer, backend) as s:
        result = s.run("What is 1 + 1?")
    return result, backend


def table(scores: dict[str, float], default: float = 0.5) -> dict[str, Any]:
    return {"kind": "test-table", "scores": scores, "default": default}


@pytest.mark.parametrize(("width", "answer"), [(1, "1"), (2, "2")])
def test_beam_search_finds_the_best_path_at_width_2_and_misses_it_at_width_1(
    width: int, answer: str
) -> None:
    layer = {"type": "beam_search", "width": width, "expansions": 2, "scorer": table(TRAP_SCORES)}
    result, backend = run(layer)
    assert result.extracted == answer
    (event,) = result.trace.events
    tree = event.tree
    assert tree is not None and tree.strategy == "beam_search"
    # Width 1 grows only the high-scored start; width 2 grows both.
    grown = {tree.node(n.parent).text for n in tree.nodes if n.parent not in (None, 0)}
    assert grown == ({"High start."} if width == 1 else {"Low start.", "High start."})
    best = tree.chosen[0]
    assert tree.node(best).terminal and tree.winning_path[0] == 0
    assert tree.solution(best).endswith(f"#### {answer}")
    # One request per grown node: the root, then each kept path.
    assert len(backend.calls) == 1 + width


def test_steps_continue_the_partial_solution_as_an_assistant_turn() -> None:
    layer = {"type": "beam_search", "width": 1, "expansions": 2, "scorer": table(TRAP_SCORES)}
    _, backend = run(layer)
    (root_prompt, root_n, _), (prompt, _, params) = backend.calls
    assert isinstance(root_prompt, list) and root_prompt[-1].role == "user" and root_n == 2
    assert isinstance(prompt, list) and prompt[-1] == Message(
        role="assistant", content="High start.\n\n"
    )
    assert params.stop == ("\n\n",) and params.max_tokens == 160


def test_dvts_keeps_independent_subtrees() -> None:
    layer = {"type": "dvts", "subtrees": 2, "expansions": 1, "scorer": table(TRAP_SCORES)}
    result, _ = run(layer)
    tree = result.trace.events[0].tree
    assert tree is not None
    # Both first steps were followed to the end, whatever their first scores.
    solutions = {tree.solution(leaf).split("\n\n")[-1] for leaf in tree.chosen}
    assert solutions == {"Low path ends right. #### 2", "High path ends wrong. #### 1"}
    assert result.extracted == "2"


def named_tree(prompt: Prompt, i: int, params: SamplingParams) -> str:
    """Children of step X are X1, X2, ...; the root's are A, B."""
    last = last_step(partial_of(prompt))
    return "ABCDEFGHIJ"[i] if last == "" else f"{last}{i + 1}"


MCTS_SCORES = {"A1": 0.5, "A2": 0.4, "B1": 0.9, "B2": 0.1, "A": 0.2, "B": 0.8}


def test_mcts_visits_follow_uct_on_a_hand_checked_tree() -> None:
    # Worked by hand (c = 1, values = step scores, the root's value its best child's):
    # 1: grow root -> A .2, B .8; v .8. 2: A unvisited -> grow A; v .2. 3: B unvisited -> grow B;
    # v .8. 4: root N=3: A .2+sqrt(ln3)=1.248, B .8+1.048=1.848 -> B; B1 unvisited -> grow B1, v .9.
    # 5: root N=4: A .2+1.177=1.377, B .85+sqrt(ln4/2)=1.682 -> B; B2 unvisited -> grow B2, v .1.
    layer = {
        "type": "mcts",
        "iterations": 5,
        "width": 2,
        "exploration": 1.0,
        "scorer": table(MCTS_SCORES),
        "finish": False,
    }
    result, backend = run(layer, named_tree)
    tree = result.trace.events[0].tree
    assert tree is not None
    visits = {n.text: n.visits for n in tree.nodes if n.id != 0}
    assert tree.node(0).visits == 5
    assert {k: v for k, v in visits.items() if v} == {"A": 1, "B": 3, "B1": 1, "B2": 1}
    assert tree.node(0).value == pytest.approx((0.8 + 0.2 + 0.8 + 0.9 + 0.1) / 5)
    b = next(n for n in tree.nodes if n.text == "B")
    assert b.value == pytest.approx((0.8 + 0.9 + 0.1) / 3)
    # Grown: root, A, B, B1, B2 (one request each).
    assert len(backend.calls) == 5
    # The answer follows the most visited children: B, then B1 (the better of two single visits).
    assert [tree.node(i).text for i in tree.winning_path[1:]] == ["B", "B1"]
    assert "does not finish" in " ".join(result.trace.events[0].notes)

    # finish (the default): one more request writes the rest of that path (no step stop, the
    # depth left x max_step_tokens), unscored; the answer ends there.
    result, backend = run({**layer, "finish": True}, named_tree)
    tree = result.trace.events[0].tree
    assert tree is not None and len(backend.calls) == 6
    _, _, params = backend.calls[-1]
    assert params.stop == () and params.max_tokens == (12 - 2) * 160
    path = [tree.node(i) for i in tree.winning_path[1:]]
    assert [n.text for n in path] == ["B", "B1", "B11"]
    assert path[-1].note == "finish" and path[-1].terminal and path[-1].score is None
    assert not any("does not finish" in note for note in result.trace.events[0].notes)


def test_mcts_keeps_back_the_budget_that_finishes_its_path() -> None:
    """With a budget, the search stops early rather than spend what finishing needs; the
    answer is finished and the budget is never passed."""

    def steps(prompt: Prompt, i: int, params: SamplingParams) -> str:
        if not params.stop:  # the rest of the solution (no step delimiter)
            return "So the total is 7. #### 7"
        return ["First step.", "Another step."][i % 2]

    layer = {
        "type": "mcts",
        "iterations": 50,
        "width": 2,
        "scorer": table({}),
        "steps": {"max_step_tokens": 20, "max_depth": 6},
        "budget_tokens": 1500,
    }
    result, _ = run(layer, steps)
    (event,) = result.trace.events
    assert event.tree is not None
    answer = event.tree.node(event.tree.winning_path[-1])
    assert answer.note == "finish" and answer.terminal and "#### 7" in result.answer
    # the search stopped on the budget: before an iteration (what is left finishes the path), or
    # in one that would have spent what was kept back
    assert any("budget" in note for note in event.notes), event.notes
    assert len(event.tree.nodes) > 10  # it searched before stopping
    assert sum(c.prompt_tokens + c.completion_tokens for c in event.calls) <= 1500


def test_puct_prefers_the_child_with_the_higher_prior() -> None:
    layer = {
        "type": "mcts",
        "iterations": 3,
        "width": 2,
        "selection": "puct",
        "scorer": table(MCTS_SCORES),
    }
    result, _ = run(layer, named_tree)
    tree = result.trace.events[0].tree
    assert tree is not None
    visits = {n.text: n.visits for n in tree.nodes if n.visits}
    # Priors .2/.8: B gets the first two walks (B: .8*c*sqrt(1)/1 vs A: .2*c*sqrt(1)/1, then
    # B: q .8 + .8*1.4*sqrt(2)/2 = 1.59 vs A: .2*1.4*sqrt(2) = .40).
    assert visits.get("B", 0) == 2 and visits.get("A", 0) == 0


def test_mcts_rollouts_finish_solutions_kept_as_candidates() -> None:
    layer = {
        "type": "mcts",
        "iterations": 3,
        "width": 2,
        "value": "rollout",
        "scorer": table(TRAP_SCORES),
    }
    result, _ = run(layer)
    tree = result.trace.events[0].tree
    assert tree is not None
    rollouts = [n for n in tree.nodes if n.note == "rollout"]
    assert rollouts and all(n.terminal for n in rollouts)
    assert {c.answer for c in result.candidates} >= {"2"}


def test_particles_resample_towards_the_better_paths() -> None:
    layer = {
        "type": "particles",
        "particles": 6,
        "resample_temperature": 0.05,
        "scorer": table(TRAP_SCORES),
    }
    result, backend = run(layer)
    tree = result.trace.events[0].tree
    assert tree is not None
    # Round 1: one request for 6 first steps (3 low, 3 high). Resampled by exp(score / .05), the
    # high starts (.9 vs .3) take every particle, so round 2 grows only "High start." nodes.
    assert backend.calls[0][1] == 6
    grown = {partial_of(p) for p, _, _ in backend.calls[1:]}
    assert grown == {"High start."}
    assert result.extracted == "1"


@pytest.mark.parametrize(
    "layer",
    [
        {"type": "beam_search", "width": 4, "expansions": 2},
        {"type": "dvts", "subtrees": 3, "expansions": 2},
        {"type": "mcts", "iterations": 50, "width": 2},
        {"type": "mcts", "iterations": 50, "width": 2, "value": "rollout"},
        {"type": "particles", "particles": 5},
    ],
)
@pytest.mark.parametrize("budget", [{"budget_calls": 4}, {"budget_tokens": 900}])
def test_budgets_are_never_exceeded(layer: dict[str, Any], budget: dict[str, int]) -> None:
    config = {**layer, **budget, "scorer": table({}), "steps": {"max_step_tokens": 20}}
    result, _ = run(config, named_tree)
    (event,) = result.trace.events
    tokens = sum(c.prompt_tokens + c.completion_tokens for c in event.calls)
    assert len(event.calls) <= budget.get("budget_calls", 10**9)
    assert tokens <= budget.get("budget_tokens", 10**9)
    assert event.calls  # it did work before stopping
    assert any(
        "budget is reached" in note or "the rest of the budget finishes" in note
        for note in event.notes
    )


def test_a_budget_smaller_than_one_expansion_is_a_config_error() -> None:
    layer = {"type": "beam_search", "expansions": 4, "budget_tokens": 100, "scorer": table({})}
    with pytest.raises(ConfigError, match="budget_tokens 100 is less than one expansion"):
        system(layer, ScriptedBackend())
    # Valid on its face (160 completion tokens fit), but the first prompt does not fit too.
    tight = {"type": "beam_search", "expansions": 1, "budget_tokens": 170, "scorer": table({})}
    with pytest.raises(ConfigError, match="the budget does not cover the first expansion"):
        run(tight)
    bad = {"type": "mcts", "scorer": {"kind": "no-such-scorer"}}
    with pytest.raises(ConfigError, match="scorer"):
        system(bad, ScriptedBackend())


def test_a_step_that_never_ends_is_cut_and_marked_truncated() -> None:
    def rambling(prompt: Prompt, i: int, params: SamplingParams) -> str:
        return " ".join(["word"] * 50)

    layer = {
        "type": "beam_search",
        "width": 1,
        "expansions": 1,
        "scorer": table({}),
        "steps": {"max_step_tokens": 8, "max_depth": 2},
    }
    result, _ = run(layer, rambling)
    tree = result.trace.events[0].tree
    assert tree is not None
    steps = [n for n in tree.nodes if n.id != 0]
    assert steps and all(n.truncated and not n.terminal for n in steps)
    assert all(n.completion_tokens <= 8 for n in steps)
    assert "no path finished" in " ".join(result.trace.events[0].notes)


def test_a_regex_delimiter_cuts_steps_where_it_matches() -> None:
    def numbered(prompt: Prompt, i: int, params: SamplingParams) -> str:
        depth = partial_of(prompt).count("Step")
        if depth >= 2:
            return "Step 3: so #### 5"
        return f"Step {depth + 1}: think. Step {depth + 2}: more."

    layer = {
        "type": "beam_search",
        "width": 1,
        "expansions": 1,
        "scorer": table({}),
        "steps": {"regex": r"\s*Step \d+:", "delimiter": "\n"},
    }
    result, backend = run(layer, numbered)
    tree = result.trace.events[0].tree
    assert tree is not None
    texts = [n.text for n in tree.nodes if n.id]
    assert texts[0] == "Step 1: think."
    assert result.extracted == "5"
    assert all(params.stop == () for _, _, params in backend.calls)  # cut here, not by stop


@pytest.mark.embedded
def test_steps_on_the_real_engine_stop_at_the_delimiter_and_continue_the_prefix() -> None:
    config = {
        "name": "real-beam",
        "model": {"backend": "llamacpp", "model": "smollm2-135m", "ctx_per_sequence": 1024},
        "layers": [
            [
                {
                    "type": "beam_search",
                    "width": 1,
                    "expansions": 2,
                    "temperature": 0.8,
                    "scorer": table({}),
                    "steps": {"max_step_tokens": 24, "max_depth": 3},
                }
            ]
        ],
    }
    with System.from_dict(config) as s:
        result = s.run("Tom has 3 apples and buys 4 more. How many apples does he have?")
    (event,) = result.trace.events
    tree = event.tree
    assert tree is not None and len(tree.nodes) >= 3
    first, *later = event.calls
    assert first.params.stop == ("\n\n",) and first.params.max_tokens == 24
    assert later, "the search grew a second step"
    # The engine's prompt cache served the shared prefix of the later steps' prompts.
    assert first.cached_prompt_tokens == 0 or first.cached_prompt_tokens < first.prompt_tokens
    assert any(0 < c.cached_prompt_tokens < c.prompt_tokens for c in later)
    prompt = later[0].prompt
    assert isinstance(prompt, list) and prompt[-1].role == "assistant"
    for node in tree.nodes[1:]:
        assert "\n\n" not in node.text  # the delimiter ended the step
        assert node.completion_tokens <= 24
        assert node.truncated == (node.finish_reason == "length")
    # The continuation holds only the new step, never the prefix it continued.
    continued = [n for n in tree.nodes if n.depth == 2]
    assert continued
    for node in continued:
        parent = tree.node(node.parent or 0).text
        assert parent and not (node.text and node.text.startswith(parent))
    assert prompt[-1].content == tree.solution(continued[0].parent or 0) + "\n\n"


def test_beam_search_and_mcts_are_options_of_a_search_space(tmp_path: Any) -> None:
    import json
    from pathlib import Path

    from ponder.search import SearchSpace, search
    from ponder.tasks import get_task

    shipped = SearchSpace.load(Path(__file__).resolve().parents[1] / "configs/search/tree.yaml")
    assert {layer.type for layer in shipped.layers} == {"beam_search", "mcts", "vote"}
    data = tmp_path / "q.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"{i} + 0?", "answer": "2"}) + "\n" for i in range(3))
    )
    steps = {"max_step_tokens": 16, "max_depth": 3}
    space = {
        "name": "tree-options",
        "generate": {
            "models": [{"backend": "scripted", "choices": ["#### 2", "#### 3"]}],
            "n": [1],
        },
        "layers": [
            {
                "type": "beam_search",
                "knobs": {"width": [1, 2]},
                "fixed": {"scorer": table({}), "steps": steps},
            },
            {"type": "mcts", "fixed": {"iterations": 3, "scorer": table({}), "steps": steps}},
            {"type": "vote", "optional": False},
        ],
    }
    result = search(
        space,
        get_task("jsonl", path=data),
        store=tmp_path / "r.db",
        algorithm="grid",
        trials=6,
        dev=3,
        test=0,
        top=0,
    )
    kinds = [
        {
            layer[0]["type"] if isinstance(layer, list) else layer["type"]
            for layer in t.config["layers"]
        }
        for t in result.trials
    ]
    assert any("beam_search" in k for k in kinds) and any("mcts" in k for k in kinds)
    assert all(t.state == "complete" for t in result.trials)


class NoContinuation(ScriptedBackend):
    """A server that rejects continuing an assistant turn (as hosted APIs do)."""

    async def _send(self, request: Any) -> Any:
        if request.continue_final_message:
            from ponder.errors import BackendRequestError

            raise BackendRequestError("400: unknown parameter continue_final_message")
        return await super()._send(request)


def test_a_backend_that_cannot_continue_gets_a_clear_error_or_the_restate_fallback() -> None:
    layer = {"type": "beam_search", "width": 1, "expansions": 2, "scorer": table(TRAP_SCORES)}
    with (
        system(layer, NoContinuation(fn=trap_tree)) as s,
        pytest.raises(ConfigError, match="continuation: restate"),
    ):
        s.run("What is 1 + 1?")
    restated = {**layer, "steps": {"continuation": "restate"}}
    backend = NoContinuation(fn=restating_tree)
    with system(restated, backend) as s:
        result = s.run("What is 1 + 1?")
    assert result.extracted == "1"  # width 1 follows the high start, as with continuation
    prompt = backend.calls[1][0]
    assert isinstance(prompt, list) and prompt[-1].role == "user"
    assert "Here is the start of a solution" in (prompt[-1].content or "")
    assert "What is 1 + 1?" in (prompt[-1].content or "")


def restating_tree(prompt: Prompt, i: int, params: SamplingParams) -> str:
    """trap_tree for restated prompts: the partial solution is inside the user's message."""
    text = prompt[-1].content if isinstance(prompt, list) else prompt
    if "High start." in (text or ""):
        return "High path ends wrong. #### 1"
    if "Low start." in (text or ""):
        return "Low path ends right. #### 2"
    return ["Low start.", "High start."][i % 2]


@pytest.mark.embedded
def test_every_example_config_answers_a_gsm8k_problem_on_smollm2_within_3_minutes() -> None:
    import time
    from pathlib import Path

    from ponder.backends import Backend
    from ponder.systems import aclose_backends
    from ponder.tasks import get_task

    task = get_task("gsm8k")
    query = task.prompt(task.problems()[0])
    shared: dict[str, Backend] = {}  # one engine for the four configs (and their judges)
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("tree-*.yaml"))
    assert [p.stem for p in configs] == ["tree-beam", "tree-dvts", "tree-mcts", "tree-particles"]
    try:
        for path in configs:
            start = time.perf_counter()
            with System.load(path, model="smollm2-135m", shared_backends=shared) as s:
                result = s.run(query)
            took = time.perf_counter() - start
            (event,) = result.trace.events
            assert took < 180, f"{path.name} took {took:.0f} s"
            assert event.tree is not None and event.tree.chosen and result.answer
            # The judge scored the steps (those of a last round the budget stopped stay unscored).
            assert any(n.score is not None for n in event.tree.nodes[1:]), path.name
            tokens = sum(c.prompt_tokens + c.completion_tokens for c in event.calls)
            assert tokens <= 4000
    finally:
        import asyncio

        asyncio.run(aclose_backends(list(shared.values())))
