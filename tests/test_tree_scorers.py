"""The built-in process scorers: judge, python, outcome, reward_model.

Logic runs on scripted backends (the scripted backend returns no log-probabilities, so a small
backend here returns completions with them), the outcome scorer's tests in the real sandbox, the
reward model's request over real HTTP (a server on 127.0.0.1, the official openai client), and the
judge on the real embedded model.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from ponder.backends import Backend, ScriptedBackend
from ponder.errors import ConfigError, DuplicateNameError, RunError, UnknownNameError, UserError
from ponder.plugins import isolated
from ponder.records import (
    Completion,
    Generation,
    GenerationRequest,
    Message,
    Prompt,
    SamplingParams,
    TokenLogprob,
    TopLogprob,
)
from ponder.systems import BackendPool, ComponentEvent, Resources, RunContext, get_extractor
from ponder.systems.tree import (
    ScoreCache,
    ScoreInput,
    Scorer,
    make_scorer,
    register_scorer,
    scorer_kinds,
)
from ponder.tasks import get_task

QUERY = "Tom has 3 apples and buys 5 more. How many apples does he have?"
MESSAGES = (Message(role="user", content=QUERY),)


def item(*steps: str, terminal: bool = False, query: str = QUERY) -> ScoreInput:
    return ScoreInput(
        messages=(Message(role="user", content=query),), steps=steps, terminal=terminal
    )


def context(backend: Any, repair_retries: int = 1) -> RunContext:
    """A run context whose default model is ``backend`` (what a tree strategy hands its scorer)."""
    resources = Resources(
        pool=BackendPool(default=backend),
        extractor=get_extractor("math"),
        checker=lambda name: lambda reference, texts: [False] * len(texts),
        repair_retries=repair_retries,
    )
    event = ComponentEvent(layer=0, index=0, component="beam", label="beam", input_ids=[])
    return RunContext(event=event, resources=resources, seed=0, query_key="q")


def score(scorer: Scorer, items: list[ScoreInput], ctx: RunContext) -> list[float | None]:
    return asyncio.run(scorer.score_many(items, ctx))


def bound_of(scorer: Scorer, it: ScoreInput, ctx: RunContext | None = None) -> tuple[int, int]:
    """What scoring ``it`` may cost at most, measured on ``ctx``'s models (default: a scripted
    one, which has no tokenizer: one token per byte)."""
    return asyncio.run(scorer.cost_bound(it, ctx or context(ScriptedBackend())))


def position(token: str, **alternatives: float) -> TokenLogprob:
    """One generated position: ``token`` chosen, ``alternatives`` given as probabilities."""
    top = [TopLogprob(token=t, logprob=math.log(p)) for t, p in alternatives.items()]
    chosen = alternatives.get(token, 0.5)
    return TokenLogprob(token=token, logprob=math.log(chosen), top=top)


@dataclass(eq=False)
class LogprobBackend(Backend):
    """Answers every request with the positions ``reply`` gives for its prompt (log-probabilities
    with alternatives, as llamacpp and openai return them), and keeps the requests."""

    reply: Callable[[Prompt], list[TokenLogprob]]
    requests: list[GenerationRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    @property
    def identity(self) -> str:
        return "logprobs:test"

    @property
    def max_batch(self) -> int:
        return 16

    async def _send(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        positions = self.reply(request.prompt)[: request.params.max_tokens]
        completion = Completion(
            text="".join(p.token for p in positions),
            finish_reason="stop",
            completion_tokens=len(positions),
            logprobs=positions if request.top_logprobs else None,
        )
        return Generation(completions=[completion] * request.n, prompt_tokens=10)


def user_text(prompt: Prompt) -> str:
    assert not isinstance(prompt, str)
    return prompt[-1].content or ""


# ----- registry and configs --------------------------------------------------------------------


def test_the_four_scorers_are_listed_without_importing_them() -> None:
    code = (
        "import sys\n"
        "from ponder.systems.tree import scorer_kinds\n"
        "print(scorer_kinds())\n"
        "built_ins = ('_judge', '_python', '_outcome', '_reward')\n"
        "print([m for m in built_ins if 'ponder.systems.tree.' + m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "['judge', 'outcome', 'python', 'reward_model']"
    assert out[1] == "[]"  # none of their modules imported
    assert {"judge", "outcome", "python", "reward_model"} <= set(scorer_kinds())


class ConstantConfig(BaseModel):
    kind: Literal["constant_test"] = "constant_test"
    value: float = 0.5


class Constant(Scorer):
    def __init__(self, value: float) -> None:
        self.value = value

    @property
    def name(self) -> str:
        return f"constant:{self.value}"

    async def score(self, item: ScoreInput, ctx: RunContext) -> float | None:
        return self.value


def test_a_scorer_plugin_registers_next_to_the_built_ins() -> None:
    with isolated():
        with pytest.raises(UnknownNameError) as info:
            make_scorer({"kind": "judgee"})
        assert "did you mean 'judge'" in info.value.message
        assert all(k in info.value.message for k in ("outcome", "python", "reward_model"))

        @register_scorer("constant_test", ConstantConfig)
        def constant(config: ConstantConfig) -> Scorer:
            return Constant(config.value)

        assert "constant_test" in scorer_kinds()
        scorer = make_scorer({"kind": "constant_test", "value": 0.25})
        assert score(scorer, [item("x")], context(ScriptedBackend())) == [0.25]
        with pytest.raises(ConfigError, match="constant_test scorer: value: Input should be"):
            make_scorer({"kind": "constant_test", "value": "high"})
        with pytest.raises(DuplicateNameError):
            register_scorer("judge", JudgeLike)(constant)
    assert "constant_test" not in scorer_kinds()


class JudgeLike(BaseModel):
    kind: Literal["judge"] = "judge"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "judge", "templte": "x"}, "templte: is not a field (did you mean 'template'?)"),
        ({"kind": "judge", "mode": "vibes"}, "mode: Input should be 'auto', 'logprobs' or 'score'"),
        ({"kind": "judge", "template": "$query $answer"}, "template: the template uses unknown"),
        ({"kind": "judge", "top_logprobs": 0}, "top_logprobs: Input should be greater than"),
        ({"kind": "reward_model"}, "reward_model scorer: model: is required"),
        (
            {"kind": "reward_model", "model": "rm", "positive": "ok", "negative": " ok"},
            "negative: the negative label must differ from the positive one ('ok')",
        ),
        ({"kind": "outcome", "max_tests": 0}, "max_tests: Input should be greater than"),
        ({"kind": "python", "function": "os.path"}, "function: 'os.path' is not of the form"),
        ({"kind": "python"}, "python scorer: function: is required"),
        (
            {"kind": "python", "function": "no_such_module_xyz:f"},
            "function: module 'no_such_module_xyz' cannot be imported",
        ),
        ({"kind": "python", "function": "os.path:nope"}, "module 'os.path' has no attribute"),
        ({"kind": "python", "function": "os:sep"}, "function: os:sep is a str, not a function"),
    ],
)
def test_config_errors_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_scorer(spec)
    assert message in info.value.message


# ----- judge -----------------------------------------------------------------------------------


def verdicts(prompt: Prompt) -> list[TokenLogprob]:
    """Yes when the solution (shown in the prompt) gets 8 apples, No otherwise; a leading space
    position first, as some tokenizers give."""
    text = user_text(prompt)
    space = position("\n", **{"\n": 0.9, " ": 0.1})
    if "= 8" in text:
        return [
            space,
            position("Yes", Yes=0.6, yes=0.1, **{" Yes": 0.05, "No": 0.15, "Maybe": 0.1}),
        ]
    if "= 9" in text:
        return [space, position("No", No=0.5, **{" no": 0.2, "Yes": 0.1, "The": 0.2})]
    return [position("The", The=0.7, It=0.3)]


def test_judge_reads_the_yes_odds_of_its_first_verdict_position() -> None:
    backend = LogprobBackend(verdicts)
    ctx = context(backend)
    judge = make_scorer({"kind": "judge"})
    scores = score(judge, [item("3 + 5 = 8"), item("3 + 5 = 9"), item("I like apples")], ctx)
    assert scores[0] == pytest.approx(0.75 / 0.90)  # (0.6 + 0.1 + 0.05) / (that + 0.15)
    assert scores[1] == pytest.approx(0.1 / 0.8)  # Yes 0.1 against No 0.5 + " no" 0.2
    assert scores[2] is None  # neither answer offered: unscored
    request = backend.requests[0]
    assert request.top_logprobs == 10 and request.params.max_tokens <= 4
    assert request.params.temperature == 0.0
    text = user_text(request.prompt)
    assert QUERY in text and "3 + 5 = 8" in text and "Yes or No" in text
    assert [c.purpose for c in ctx.event.calls] == ["judge scorer (step 1)"] * 3


def test_judge_asks_about_the_complete_solution_at_a_leaf() -> None:
    backend = LogprobBackend(verdicts)
    ctx = context(backend)
    judge = make_scorer({"kind": "judge", "mode": "logprobs"})
    partial, leaf = score(judge, [item("3 + 5 = 8"), item("3 + 5 = 8", terminal=True)], ctx)
    assert partial == leaf == pytest.approx(0.75 / 0.90)
    asked = [user_text(r.prompt) for r in backend.requests]
    assert "first steps of a solution" in asked[0] and "correct so far" in asked[0]
    assert "A complete solution" in asked[1] and "final answer" in asked[1]
    assert ctx.event.calls[1].purpose == "judge scorer (step 1, complete)"


def test_judge_template_replaces_the_prompt() -> None:
    backend = LogprobBackend(verdicts)
    judge = make_scorer({"kind": "judge", "template": "Q: $query\nA: $solution\n$instruction"})
    score(judge, [item("3 + 5 = 8")], context(backend))
    assert user_text(backend.requests[0].prompt).startswith(f"Q: {QUERY}\nA: 3 + 5 = 8\nAre ")


def grader(prompt: Prompt, i: int, params: SamplingParams) -> str:
    """A scripted judge without log-probabilities: grades 8 apples 10, anything else 1."""
    text = user_text(prompt)
    if "Yes or No" in text:
        return "Yes"
    if "could not read" in text:  # a repair prompt
        return "Score: 4"
    if "= 8" in text:
        return "Right.\nScore: 10"
    if "= 9" in text:
        return "Score: 1"
    return "I cannot say."


def test_judge_auto_falls_back_to_a_grade_once_per_backend() -> None:
    backend = ScriptedBackend(fn=grader)
    ctx = context(backend, repair_retries=0)
    judge = make_scorer({"kind": "judge"})
    assert score(judge, [item("3 + 5 = 8")], ctx) == [1.0]
    assert [c.purpose for c in ctx.event.calls] == [
        "judge scorer (step 1)",  # asked Yes/No: no log-probabilities came back
        "judge scorer grade (step 1)",
    ]
    assert any("returns no log-probabilities" in n for n in ctx.event.notes)
    # Remembered: the next nodes are graded directly.
    assert score(judge, [item("3 + 5 = 9"), item("3 + 5 = 8", "so 8")], ctx) == [0.0, 1.0]
    assert len(ctx.event.calls) == 4


def test_judge_score_mode_repairs_then_gives_up() -> None:
    backend = ScriptedBackend(fn=grader)
    judge = make_scorer({"kind": "judge", "mode": "score"})
    ctx = context(backend, repair_retries=1)
    assert score(judge, [item("I like apples")], ctx) == [pytest.approx(3 / 9)]  # repaired: 4
    assert [c.purpose for c in ctx.event.calls] == [
        "judge scorer grade (step 1)",
        "judge scorer grade (step 1) (repair 1)",
    ]
    assert ctx.event.calls[0].params.max_tokens == 16
    ctx = context(ScriptedBackend(outputs=["Looks fine to me."]), repair_retries=1)
    assert score(judge, [item("3 + 5 = 8")], ctx) == [None]
    assert len(ctx.event.calls) == 2
    (fallback,) = ctx.event.fallbacks
    assert "unreadable grade of step 1" in fallback.reason and fallback.action == "left unscored"


def test_judge_logprobs_mode_needs_a_backend_that_returns_them() -> None:
    judge = make_scorer({"kind": "judge", "mode": "logprobs"})
    with pytest.raises(RunError, match="returned no log-probabilities"):
        score(judge, [item("3 + 5 = 8")], context(ScriptedBackend(outputs=["Yes"])))


def test_a_second_identical_item_costs_no_call() -> None:
    backend = LogprobBackend(verdicts)
    ctx = context(backend)
    judge, cache = make_scorer({"kind": "judge"}), ScoreCache()
    first = asyncio.run(cache.scores_of(judge, [item("3 + 5 = 8"), item("3 + 5 = 9")], ctx))
    again = asyncio.run(cache.scores_of(judge, [item("3 + 5 = 8")], ctx))
    assert again == first[:1] and len(backend.requests) == 2 and cache.hits == 1
    # A different scorer (another template) is another cache entry.
    other = make_scorer({"kind": "judge", "template": "$query $solution $instruction"})
    assert judge.name != other.name
    asyncio.run(cache.scores_of(other, [item("3 + 5 = 8")], ctx))
    assert len(backend.requests) == 3


# ----- cost bounds ----------------------------------------------------------------------------------


def spent(ctx: RunContext) -> tuple[int, int]:
    calls = ctx.event.calls
    return len(calls), sum(c.prompt_tokens + c.completion_tokens for c in calls)


def within(bound: tuple[int, int], ctx: RunContext) -> bool:
    calls, tokens = spent(ctx)
    return calls <= bound[0] and tokens <= bound[1]


def test_cost_bounds_hold_what_scoring_costs() -> None:
    unreadable = item("I like apples")  # graded only after a repair
    # auto, before the backend is known: a Yes/No call and a grade with its repair.
    judge = make_scorer({"kind": "judge"})
    bound = bound_of(judge, unreadable)
    ctx = context(ScriptedBackend(fn=grader))
    score(judge, [unreadable], ctx)
    assert bound[0] == 3 == spent(ctx)[0] and within(bound, ctx)
    # Now known to return no log-probabilities: a grade and its repair.
    assert bound_of(judge, unreadable)[0] == 2
    assert bound_of(make_scorer({"kind": "judge", "repair_retries": 0}), unreadable)[0] == 2
    graded = make_scorer({"kind": "judge", "mode": "score", "repair_retries": 3})
    assert bound_of(graded, unreadable)[0] == 4
    assert bound_of(graded, unreadable)[1] > bound_of(judge, unreadable)[1]
    # A backend with log-probabilities: one short call once known.
    judge = make_scorer({"kind": "judge"})
    ctx = context(LogprobBackend(verdicts))
    score(judge, [item("3 + 5 = 8")], ctx)
    assert bound_of(judge, item("3 + 5 = 8")) == bound_of(
        make_scorer({"kind": "judge", "mode": "logprobs"}), item("3 + 5 = 8")
    )
    assert bound_of(judge, item("3 + 5 = 8"))[0] == 1 and within(
        bound_of(judge, item("3 + 5 = 8")), ctx
    )
    # outcome: writing the tests once per query (and only for complete code).
    outcome = make_scorer({"kind": "outcome", "max_tests": 2, "timeout_s": 0.5})
    leaf = item("def add(a, b):\n    return a + b", terminal=True, query=CODE_QUERY)
    assert bound_of(outcome, item("def add(a, b):", query=CODE_QUERY)) == (0, 0)
    assert bound_of(outcome, item("The sum.", terminal=True, query=CODE_QUERY)) == (0, 0)
    bound = bound_of(outcome, leaf)
    ctx = context(ScriptedBackend(outputs=["Tests:", TESTS_REPLY]))  # read after a repair
    assert score(outcome, [leaf], ctx) == [1.0]
    assert bound[0] == 2 == spent(ctx)[0] and within(bound, ctx)
    assert bound_of(outcome, leaf) == (0, 0)  # written already
    # reward model: one call of one token.
    reward = make_scorer({"kind": "reward_model", "model": "rm", "reply": "number"})
    backend = ScriptedBackend(outputs=["0.5"], name="rm")
    ctx = context(backend)
    ctx.resources.pool = BackendPool(default=backend, named={"rm": backend})
    bound = bound_of(reward, item("3 + 5 = 8"), ctx)
    score(reward, [item("3 + 5 = 8")], ctx)
    assert bound[0] == 1 and within(bound, ctx)


# ----- python ------------------------------------------------------------------------------------


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of scoring functions on sys.path; yields its name."""
    name = "ponder_test_scoring_functions"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            seen = []

            def by_length(query, steps, terminal):
                seen.append((query, steps, terminal))
                return None if not steps[-1] else min(1.0, len(steps[-1]) / 10)

            async def later(query, steps, terminal):
                await asyncio.sleep(0)
                return 1 if terminal else 0.25

            def too_big(query, steps, terminal):
                return 3.5

            def a_word(query, steps, terminal):
                return "high"

            def broken(query, steps, terminal):
                raise KeyError("steps")

            class Scorers:
                @staticmethod
                def nested(query, steps, terminal):
                    return 0.5
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_python_scorer_calls_the_function(user_module: str) -> None:
    ctx = context(ScriptedBackend())
    by_length = make_scorer({"kind": "python", "function": f"{user_module}:by_length"})
    items = [item("3 + 5", "= 8"), item("3 + 5", ""), item("a" * 40, terminal=True)]
    assert score(by_length, items, ctx) == [0.3, None, 1.0]
    seen = sys.modules[user_module].seen
    assert (QUERY, ["3 + 5", "= 8"], False) in seen and (QUERY, ["a" * 40], True) in seen
    later = make_scorer({"kind": "python", "function": f"{user_module}:later"})
    assert score(later, [item("x"), item("x", terminal=True)], ctx) == [0.25, 1.0]
    nested = make_scorer({"kind": "python", "function": f"{user_module}:Scorers.nested"})
    assert score(nested, [item("x")], ctx) == [0.5]
    assert by_length.name == f"python:{user_module}:by_length"
    assert not ctx.event.calls  # no model involved


@pytest.mark.parametrize(
    ("function", "error", "message"),
    [
        ("too_big", UserError, "too_big returned 3.5 for a solution of 1 step(s)"),
        ("a_word", UserError, "a_word returned 'high'"),
        ("broken", RunError, "scorer function {m}:broken failed: KeyError: 'steps'"),
    ],
)
def test_python_scorer_errors_name_the_function(
    user_module: str, function: str, error: type[Exception], message: str
) -> None:
    scorer = make_scorer({"kind": "python", "function": f"{user_module}:{function}"})
    with pytest.raises(error) as info:
        score(scorer, [item("x")], context(ScriptedBackend()))
    assert message.format(m=user_module) in str(info.value)
    assert f"{user_module}:{function}" in str(info.value)


# ----- outcome -----------------------------------------------------------------------------------

CODE_QUERY = "Write a Python function add(a, b) that returns the sum of a and b."
# Four distinct one-line asserts first (one of them a wrong test: 2 + 2 == 5), in a code block and
# a bullet; a line that is not Python and a repeated test are skipped; the fifth is past max_tests.
TESTS_REPLY = """Here are the tests:
```python
assert add(1, 2) == 3
assert add(1, 2) == 3
assert add(1, 2) = 3, "not Python"
assert add(-1, 1) == 0
assert add(2, 2) == 5
```
- `assert add(0, 0) == 0`
assert add(5, 5) == 11
"""


def test_outcome_runs_the_models_tests_on_the_solutions_code() -> None:
    backend = ScriptedBackend(outputs=[TESTS_REPLY])
    ctx = context(backend)
    outcome = make_scorer({"kind": "outcome", "max_tests": 4, "timeout_s": 0.5})
    right = "def add(a, b):\n    return a + b"
    wrong = "def add(a, b):\n    return a - b"
    items = [
        item("Here it is:", f"```python\n{right}\n```", terminal=True, query=CODE_QUERY),
        item(wrong, terminal=True, query=CODE_QUERY),
        item("def add(a, b):\n    while True: pass", terminal=True, query=CODE_QUERY),
        item("First, think about adding.", query=CODE_QUERY),  # partial: not scored
        item("The sum is a + b.", terminal=True, query=CODE_QUERY),  # no program
    ]
    # 3 of the 4 tests hold for a + b (one test is wrong: 2 + 2 == 5); for a - b only 0 - 0 == 0;
    # an endless loop passes none (each test times out in the sandbox).
    assert score(outcome, items, ctx) == [0.75, 0.25, 0.0, None, None]
    # The tests were written once for the query, never with a reference.
    assert [c.purpose for c in ctx.event.calls] == ["outcome scorer tests"]
    written = user_text(ctx.event.calls[0].prompt)
    assert CODE_QUERY in written and "at most 4 Python assert" in written
    # Another query gets its own tests.
    score(outcome, [item(right, terminal=True, query="Write add(a, b).")], ctx)
    assert len(ctx.event.calls) == 2


def test_outcome_without_readable_tests_scores_nothing() -> None:
    backend = ScriptedBackend(outputs=["Tests are important."])
    ctx = context(backend, repair_retries=1)
    outcome = make_scorer({"kind": "outcome", "timeout_s": 1.0})
    items = [item("def add(a, b):\n    return a + b", terminal=True, query=CODE_QUERY)] * 2
    assert score(outcome, items, ctx) == [None, None]
    assert len(ctx.event.calls) == 2  # one request and one repair, for both items
    (fallback,) = ctx.event.fallbacks
    assert "no test could be read" in fallback.reason


# ----- reward model ------------------------------------------------------------------------------


class RewardServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that keeps each request body and answers
    with the given first-token alternatives (or text)."""

    def __init__(self, top: dict[str, float], text: str = "+") -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                logprobs = None
                if body.get("logprobs"):
                    alts = [{"token": t, "logprob": math.log(p)} for t, p in top.items()]
                    logprobs = {
                        "content": [
                            {
                                "token": text,
                                "logprob": math.log(top.get(text, 0.5)),
                                "top_logprobs": alts,
                            }
                        ]
                    }
                reply = {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                            "logprobs": logprobs,
                        }
                    ],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> RewardServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def reward_ctx() -> RunContext:
    return context(ScriptedBackend(outputs=["the system's model is not the reward model"]))


def test_reward_model_request_shape_and_label_odds_over_http() -> None:
    with RewardServer({"+": 0.6, " +": 0.1, "-": 0.2, "0": 0.1}) as server:
        spec = {"backend": "openai", "base_url": server.url, "model": "prm"}
        scorer = make_scorer({"kind": "reward_model", "model": spec})
        ctx = reward_ctx()
        steps = ("3 + 5 = 8", "So he has 8 apples.")
        partial, leaf = score(scorer, [item(*steps), item(*steps, terminal=True)], ctx)
    assert partial == leaf == pytest.approx(0.7 / 0.9)
    # Sent concurrently: the partial solution's request is the one that asks about the last step.
    body, leaf_body = sorted(server.bodies, key=lambda b: "final" in b["messages"][-1]["content"])
    assert body["messages"] == [
        {"role": "user", "content": QUERY},
        {"role": "assistant", "content": "3 + 5 = 8\n\nSo he has 8 apples."},
        {
            "role": "user",
            "content": "Is the last step of your solution correct? "
            "Answer + if it is, - if it is not.",
        },
    ]
    assert body["model"] == "prm" and body["max_tokens"] == 1 and body["temperature"] == 0.0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert leaf_body["messages"][-1]["content"] == (
        "Is your solution correct, final answer included? Answer + if it is, - if it is not."
    )
    assert [c.model for c in ctx.event.calls] == ["openai:replicas:prm"] * 2


def test_reward_model_labels_template_and_unscored() -> None:
    with RewardServer({"good": 0.3, "bad": 0.6, "ok": 0.1}, text="bad") as server:
        spec = {"backend": "openai", "base_url": server.url, "model": "rm"}
        scorer = make_scorer(
            {
                "kind": "reward_model",
                "model": spec,
                "positive": "good",
                "negative": "bad",
                "template": "Rate: $positive or $negative?",
                "top_logprobs": 5,
            }
        )
        assert score(scorer, [item("3 + 5 = 9")], reward_ctx()) == [pytest.approx(1 / 3)]
        assert server.bodies[0]["messages"][-1]["content"] == "Rate: good or bad?"
        assert server.bodies[0]["top_logprobs"] == 5
        plus = make_scorer({"kind": "reward_model", "model": spec})
        assert score(plus, [item("3 + 5 = 9")], reward_ctx()) == [None]  # neither label offered


def test_reward_model_number_reply_and_missing_logprobs() -> None:
    replies = {"3 + 5 = 8": "0.9", "3 + 5 = 9": "7", "?": "no idea"}

    def rm(prompt: Prompt, i: int, params: SamplingParams) -> str:
        assert not isinstance(prompt, str) and prompt[1].role == "assistant"
        return replies[prompt[1].content or ""]

    backend = ScriptedBackend(fn=rm, name="rm")
    ctx = context(backend)
    numeric = make_scorer({"kind": "reward_model", "model": "rm", "reply": "number"})
    ctx.resources.pool = BackendPool(default=backend, named={"rm": backend})
    assert score(numeric, [item("3 + 5 = 8"), item("3 + 5 = 9"), item("?")], ctx) == [
        0.9,
        None,
        None,
    ]
    assert "one number from 0" in user_text(backend.calls[0][0])
    assert backend.calls[0][2].max_tokens == 8
    assert len(ctx.event.fallbacks) == 2
    tokens = make_scorer({"kind": "reward_model", "model": "rm"})
    with pytest.raises(UserError, match="returned no log-probabilities") as info:
        score(tokens, [item("3 + 5 = 8")], ctx)
    assert "reply: number" in str(info.value.hint)


# ----- the real model ----------------------------------------------------------------------------


def gsm8k_partials(count: int) -> Iterator[tuple[ScoreInput, bool]]:
    """The first step of GSM8K reference solutions, and the same step with its result wrong."""
    for problem in itertools.islice(get_task("gsm8k").problems(), count):
        solution = str(problem.metadata["solution"])
        first = re.sub(r"<<[^>]*>>", "", solution.splitlines()[0])
        result = re.findall(r"\d+", first)[-1]
        at = first.rindex(result)
        wrong = first[:at] + str(int(result) * 3 + 7) + first[at + len(result) :]
        messages = (Message(role="user", content=problem.question),)
        yield ScoreInput(messages=messages, steps=(first,)), True
        yield ScoreInput(messages=messages, steps=(wrong,)), False


@pytest.mark.embedded
def test_judge_on_the_real_model_scores_partial_gsm8k_solutions(embedded: Backend) -> None:
    items = [i for i, _ in gsm8k_partials(5)]
    ctx = context(embedded)
    judge = make_scorer({"kind": "judge"})
    bound = [sum(b) for b in zip(*(bound_of(judge, i, ctx) for i in items), strict=True)]
    scores = score(judge, items, ctx)  # auto: log-probabilities
    scored = [s for s in scores if s is not None]
    assert len(scored) >= 0.8 * len(items)
    assert all(0.0 <= s <= 1.0 for s in scored) and len(set(scored)) > 1
    assert all(c.purpose == "judge scorer (step 1)" for c in ctx.event.calls)
    assert not any("grading 1-10" in n for n in ctx.event.notes)
    assert within((bound[0], bound[1]), ctx)  # the budget bound holds on the real tokenizer


FEW_SHOT = (
    "Grade each solution from 1 (wrong) to 10 (right).\n\n"
    "Problem: Tom has 3 apples and buys 2 more. How many apples does he have?\n"
    "Solution: 3 + 2 = 5 apples.\nScore: 10\n\n"
    "Problem: A pen costs $$2. How much do 4 pens cost?\nSolution: 4 * 2 = 6 dollars.\nScore: 1\n\n"
    "Problem: $query\nSolution: $solution\nScore:"
)


@pytest.mark.embedded
def test_judge_score_mode_on_the_real_model(embedded: Backend) -> None:
    """The grade path on the real engine: each score is what its reply says, (N - 1) / 9, and a
    reply without a grade is recorded unscored (smollm2-135m often writes none; the parsing
    itself is covered on the scripted backend above)."""
    items = [i for i, _ in gsm8k_partials(1)][:1]
    ctx = context(embedded)
    judge = make_scorer(
        {
            "kind": "judge",
            "mode": "score",
            "template": FEW_SHOT,
            "max_tokens": 4,
            "repair_retries": 0,
        }
    )
    bound = [sum(b) for b in zip(*(bound_of(judge, i, ctx) for i in items), strict=True)]
    scores = score(judge, items, ctx)
    assert within((bound[0], bound[1]), ctx)
    calls = ctx.event.calls
    assert len(calls) == len(items) and all(c.outputs and c.error is None for c in calls)
    by_solution = {user_text(c.prompt).rsplit("Solution: ", 1)[1]: c.outputs[0] for c in calls}
    for it, got in zip(items, scores, strict=True):
        reply = by_solution[f"{it.solution}\nScore:"]
        number = re.match(r"\s*(\d+)\s*$", reply.split("\n")[0])
        if number and 1 <= int(number.group(1)) <= 10:
            assert got == pytest.approx((int(number.group(1)) - 1) / 9)
        else:
            assert got is None
    assert len(ctx.event.fallbacks) == scores.count(None)


@pytest.mark.embedded  # the real llama.cpp server, through the openai backend
def test_reward_model_on_a_real_openai_compatible_server(llama_server: str) -> None:
    """smollm2 stands in for a reward model: its Yes/No odds after the request shape above."""
    spec = {"backend": "openai", "base_url": llama_server, "model": "smollm2"}
    scorer = make_scorer(
        {
            "kind": "reward_model",
            "model": spec,
            "positive": "Yes",
            "negative": "No",
            "template": "Is the last step correct? Answer $positive or $negative.",
        }
    )
    items = [i for i, _ in gsm8k_partials(1)]
    ctx = reward_ctx()
    scores = score(scorer, items, ctx)
    # Both labels' tokens came back among the alternatives of the one generated token.
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    assert len(ctx.event.calls) == 2 and all(c.completion_tokens == 1 for c in ctx.event.calls)
