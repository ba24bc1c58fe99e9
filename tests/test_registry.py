"""The plugin registry: names, duplicates, unknown names, lazy built-ins, and real installed plugins.

Plugins here are real distributions: a module and a ``NAME-0.1.dist-info`` folder (METADATA and
entry_points.txt) written into tmp_path and put on the path, found by importlib.metadata exactly
like an installed package. Every module name is unique: Python imports a module once per process.
"""

from __future__ import annotations

import importlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from ponder.backends import backend_config_type, backend_kinds, create_backend
from ponder.errors import (
    ConfigError,
    DuplicateNameError,
    NotFoundError,
    PluginLoadError,
    UnknownNameError,
)
from ponder.plugins import ENTRY_POINT_GROUPS, KINDS, isolated, names, register
from ponder.systems import (
    SystemConfig,
    component_class,
    component_types,
    extractor_names,
    get_extractor,
    register_extractor,
)
from ponder.tasks import get_task, task_names
from ponder.verify import make_verifier, verifier_kinds

PONDER = str(Path(sys.executable).parent / "ponder")


def make_distribution(
    root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, dict[str, str]]
) -> Path:
    """Write an installed-looking distribution into ``root`` (put ``root`` on the path to install it)."""
    root.mkdir(parents=True, exist_ok=True)
    for module, code in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(code), encoding="utf-8")
    # The folder's name is the normalized distribution name: importlib.metadata reads the name up
    # to the first "-" from it (and keeps one distribution per name).
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items()) + "\n"
            for group, eps in entry_points.items()
        ),
        encoding="utf-8",
    )
    return root


# ----- kinds, names, duplicates ------------------------------------------------------------------


def test_kinds_and_their_entry_point_groups() -> None:
    assert KINDS == (
        "backend",
        "task",
        "verifier",
        "component",
        "extractor",
        "stop_rule",
        "executor",
        "scorer",
    )
    assert dict(ENTRY_POINT_GROUPS) == {
        "backend": "ponder.backends",
        "task": "ponder.tasks",
        "verifier": "ponder.verifiers",
        "component": "ponder.components",
        "extractor": "ponder.extractors",
        "stop_rule": "ponder.stop_rules",
        "executor": "ponder.executors",
        "scorer": "ponder.scorers",
    }
    with pytest.raises(ValueError, match="unknown plugin kind 'widget'"):
        names("widget")  # type: ignore[arg-type]


def test_a_duplicate_name_is_an_error_but_the_same_object_again_is_not() -> None:
    def upper(text: str) -> str | None:
        return text.upper()

    def lower(text: str) -> str | None:
        return text.lower()

    with isolated():
        register_extractor("shouty")(upper)
        register_extractor("shouty")(upper)  # the same object: harmless
        with pytest.raises(DuplicateNameError) as info:
            register_extractor("shouty")(lower)
        assert "answer extractor 'shouty' is already registered by" in info.value.message
        assert "upper" in info.value.message and "lower" in info.value.message
        assert get_extractor("shouty") is upper
        with pytest.raises(DuplicateNameError, match="'math' is already registered"):
            register_extractor("math")(upper)
    assert "shouty" not in extractor_names()


def test_reimporting_a_module_that_registers_is_harmless(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "reg_reimported_mod.py").write_text(
        textwrap.dedent(
            """
            from ponder.systems import register_extractor

            @register_extractor("reimported")
            def first_word(text):
                return text.split()[0] if text.split() else None
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with isolated():
        module = importlib.import_module("reg_reimported_mod")
        reloaded = importlib.reload(module)
        assert get_extractor("reimported") is reloaded.first_word
        assert get_extractor("reimported")("hello world") == "hello"
    monkeypatch.delitem(sys.modules, "reg_reimported_mod")


def test_a_lazy_builtin_name_cannot_be_taken() -> None:
    def make(config: object) -> object:
        raise AssertionError("never built")

    with isolated(), pytest.raises(DuplicateNameError, match="'openai' is a built-in"):
        register("backend", "openai", make)


@pytest.mark.parametrize(
    ("find", "typo", "expected"),
    [
        (backend_config_type, "llamcpp", "unknown backend 'llamcpp' (did you mean 'llamacpp'?)"),
        (get_task, "gsm9k", "unknown task 'gsm9k' (did you mean 'gsm8k'?)"),
        (make_verifier, "mth", "unknown verifier 'mth' (did you mean 'math'?)"),
        (component_class, "rnak", "unknown component type 'rnak' (did you mean 'rank'?)"),
        (
            get_extractor,
            "lastline",
            "unknown answer extractor 'lastline' (did you mean 'last_line'?)",
        ),
    ],
)
def test_one_unknown_name_error_for_every_kind(
    find: Callable[[str], object], typo: str, expected: str
) -> None:
    with pytest.raises(UnknownNameError) as info:
        find(typo)
    error = info.value
    assert isinstance(error, NotFoundError)
    assert error.message.startswith(expected + "; choose one of: ")
    assert error.message.endswith(", ".join(error.choices))
    assert error.choices == sorted(error.choices) and len(error.choices) >= 2
    assert error.kind in KINDS and error.name == typo
    assert ENTRY_POINT_GROUPS[error.kind] in str(error.hint)  # type: ignore[index]


def test_every_kind_lists_its_builtins() -> None:
    assert {"llamacpp", "openai", "scripted"} <= set(backend_kinds())
    assert {"gsm8k", "aime2025", "jsonl", "humaneval", "jsonl-code", "mbpp"} <= set(task_names())
    assert {"math", "code"} <= set(verifier_kinds())
    assert {"generate", "vote", "rank", "fuse", "critique"} <= set(component_types())
    assert {"math", "last_line", "text", "code"} <= set(extractor_names())


def test_listing_does_not_import_lazy_builtins_and_lookup_does() -> None:
    # A fresh process: in this one, other tests may have imported them already.
    code = textwrap.dedent(
        """
        import sys
        from ponder.backends import backend_config_type, backend_kinds
        from ponder.tasks import get_task, task_names
        assert "openai" in backend_kinds() and "humaneval" in task_names()
        assert "ponder.backends._openai" not in sys.modules
        assert "ponder.tasks._code" not in sys.modules
        assert "openai" not in sys.modules
        assert backend_config_type("openai").__name__ == "OpenAIConfig"
        assert get_task("humaneval").name == "humaneval"
        assert "ponder.backends._openai" in sys.modules and "ponder.tasks._code" in sys.modules
        # A lazy built-in first imported inside isolated() keeps its registration afterwards.
        from ponder.plugins import isolated
        from ponder.verify import make_verifier
        with isolated():
            make_verifier("code").close()
        assert "ponder.verify.code" in sys.modules
        make_verifier("code").close()
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ----- installed plugins (in this process) --------------------------------------------------------

PLUGIN_FORMS = {
    # A module whose import registers the name with the kind's decorator.
    "reg_forms_components": """
        from typing import ClassVar, Literal
        from ponder.systems import Component, ComponentConfig, Delta, register_component

        class LoudConfig(ComponentConfig):
            type: Literal["loud"] = "loud"

        @register_component("loud")
        class Loud(Component[LoudConfig]):
            config_type: ClassVar[type[ComponentConfig]] = LoudConfig

            async def run(self, state, ctx):
                return Delta(changed=[ctx.revised(c, c.text.upper(), model=None)
                                      for c in state.candidates])
        """,
    # Objects the registry registers under their entry point's name.
    "reg_forms_objects": """
        from typing import Literal
        from pydantic import BaseModel, ConfigDict
        from ponder.backends import ScriptedBackend
        from ponder.records import Problem
        from ponder.tasks import JsonlTask

        class PairConfig(BaseModel):
            model_config = ConfigDict(extra="forbid")
            kind: Literal["pair"] = "pair"
            reply: str = "#### 2"

        def make_pair(config: PairConfig) -> ScriptedBackend:
            return ScriptedBackend(outputs=[config.reply], name="pair")

        def make_tiny(*, path) -> JsonlTask:
            return JsonlTask(path=path)

        def first_char(text):
            return text[:1] or None
        """,
    # The old style: a module named by an entry point of another name, registering its own names.
    "reg_forms_legacy": """
        from ponder.verify import make_verifier, register_verifier

        @register_verifier("strict-math")
        def make():
            return make_verifier("math")
        """,
}


def test_plugins_of_every_form_load_lazily_and_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_distribution(
        tmp_path / "site",
        "ponder-forms",
        PLUGIN_FORMS,
        {
            "ponder.components": {"loud": "reg_forms_components"},
            "ponder.backends": {"pair": "reg_forms_objects:make_pair"},
            "ponder.tasks": {"tiny": "reg_forms_objects:make_tiny"},
            "ponder.extractors": {"initial": "reg_forms_objects:first_char"},
            "ponder.verifiers": {"legacy-bundle": "reg_forms_legacy"},
        },
    )
    monkeypatch.syspath_prepend(str(root))
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    with isolated():
        assert "reg_forms_components" not in sys.modules  # nothing loads before it is asked for
        assert component_class("loud").__name__ == "Loud"
        assert "reg_forms_objects" not in sys.modules  # one entry point loaded, not the group
        assert "loud" in component_types()

        config = backend_config_type("pair")
        assert config.__name__ == "PairConfig"
        backend = create_backend(config(reply="#### 7"))
        assert backend.identity == "scripted:pair"

        assert [p.reference for p in get_task("tiny", path=data).problems()] == ["2"]
        assert get_extractor("initial")("xyz") == "x"

        # The legacy module registers a name other than its entry point's: a lookup that misses
        # loads the whole group, so it is found; the entry point's own name is no plugin name.
        assert make_verifier("strict-math").name == "math"
        assert "strict-math" in verifier_kinds() and "legacy-bundle" not in verifier_kinds()
    monkeypatch.undo()  # off the path again, so the lookups below see only what is installed
    assert "pair" not in backend_kinds() and "loud" not in component_types()


def test_a_plugin_that_fails_to_load_breaks_only_its_own_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts = tmp_path / "attempts.txt"
    broken = make_distribution(
        tmp_path / "broken",
        "ponder-broken-plugin",
        {
            "reg_broken_mod": f"""
                with open({str(attempts)!r}, "a") as f:
                    f.write("x")
                raise ImportError("needs libfoo, which is not installed")
            """,
            "reg_broken_math": """
                def math(text):
                    return "42"
            """,
        },
        {"ponder.extractors": {"shaky": "reg_broken_mod", "math": "reg_broken_math:math"}},
    )
    fine = make_distribution(
        tmp_path / "fine",
        "ponder-fine-plugin",
        {"reg_fine_mod": "def last_char(text):\n    return text[-1:] or None\n"},
        {"ponder.extractors": {"tail": "reg_fine_mod:last_char"}},
    )
    monkeypatch.syspath_prepend(str(broken))
    monkeypatch.syspath_prepend(str(fine))
    with isolated():
        listed = extractor_names()
        assert {"shaky", "tail", "math", "last_line"} <= set(listed)  # listing still works
        assert get_extractor("tail")("abc") == "c"
        assert get_extractor("math")("#### 5") == "5"  # the built-in keeps its name
        warned = [r.getMessage() for r in caplog.records if r.name == "ponder.plugins"]
        assert any("answer extractor 'math'" in w and "DuplicateNameError" in w for w in warned), (
            warned
        )
        assert any("answer extractor 'shaky'" in w and "libfoo" in w for w in warned), warned
        for _ in range(2):
            with pytest.raises(PluginLoadError) as info:
                get_extractor("shaky")
            message = info.value.message
            assert "answer extractor 'shaky'" in message
            assert "'ponder-broken-plugin'" in message
            assert "ImportError: needs libfoo, which is not installed" in message
            assert isinstance(info.value.__cause__, ImportError)
            assert "pip uninstall ponder-broken-plugin" in str(info.value.hint)
        assert attempts.read_text() == "x"  # loaded once, never retried
        with pytest.raises(UnknownNameError, match="did you mean 'shaky'"):
            get_extractor("shakey")
    monkeypatch.undo()
    assert "shaky" not in extractor_names()


def test_a_system_config_names_the_failed_component_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_distribution(
        tmp_path / "site",
        "ponder-broken-components",
        {"reg_broken_component": "raise RuntimeError('built for another Ponder')\n"},
        {"ponder.components": {"tree_search": "reg_broken_component"}},
    )
    monkeypatch.syspath_prepend(str(root))
    with isolated():
        with pytest.raises(ConfigError) as info:
            SystemConfig.from_data({"layers": [{"type": "generate"}, {"type": "tree_search"}]})
        message = str(info.value)
        assert "layers[1][0].type: component type 'tree_search' comes from" in message
        assert "'ponder-broken-components'" in message and "another Ponder" in message
        # Every other component still validates.
        assert SystemConfig.from_data({"layers": [{"type": "generate"}, {"type": "vote"}]})


def test_two_distributions_with_one_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for dist in ("ponder-twin-a", "ponder-twin-b"):
        module = dist.replace("-", "_")
        root = make_distribution(
            tmp_path / dist,
            dist,
            {module: "def pick(text):\n    return text\n"},
            {"ponder.extractors": {"twin": f"{module}:pick"}},
        )
        monkeypatch.syspath_prepend(str(root))
    with isolated():
        with pytest.raises(DuplicateNameError) as info:
            get_extractor("twin")
        assert "'ponder-twin-a'" in info.value.message and "'ponder-twin-b'" in info.value.message
        assert get_extractor("text")("a  b") == "a b"


# ----- a plugin backend from the command line -------------------------------------------------------

ADDER_PLUGIN = """
    import re
    from typing import Literal

    from pydantic import BaseModel, ConfigDict

    from ponder.backends import ScriptedBackend, register_backend


    class AdderConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        kind: Literal["adder"] = "adder"
        model: str = "adder-1"
        n_parallel: int = 4


    def _answer(prompt, index, params):
        text = prompt if isinstance(prompt, str) else prompt[-1].content
        a, b = re.findall(r"What is (\\d+)\\+(\\d+)", text)[-1]
        return f"{a} plus {b} is {int(a) + int(b)}.\\n#### {int(a) + int(b)}"


    @register_backend("adder", AdderConfig)
    def make(config: AdderConfig) -> ScriptedBackend:
        return ScriptedBackend(fn=_answer, name=config.model, batch=config.n_parallel)
"""


@pytest.fixture
def adder_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a `ponder` process with the adder plugin installed (on PYTHONPATH), and
    a backend plugin that fails to load."""
    root = make_distribution(
        tmp_path / "site",
        "ponder-adder",
        {"ponder_adder_plugin": ADDER_PLUGIN},
        {"ponder.backends": {"adder": "ponder_adder_plugin"}},
    )
    broken = make_distribution(
        tmp_path / "broken",
        "ponder-gpu-backend",
        {"ponder_gpu_backend": "import a_module_that_is_not_installed\n"},
        {"ponder.backends": {"gpu": "ponder_gpu_backend"}},
    )
    path = os.pathsep.join([str(root), str(broken), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}


def ponder(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PONDER, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert result.returncode == code, result.stderr
    return result


def test_a_plugin_backend_works_from_the_cli_like_a_builtin(
    adder_env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text(
        '{"question": "What is 2+2?", "answer": "4"}\n{"question": "What is 3+5?", "answer": "8"}\n'
    )
    db = tmp_path / "p.db"
    common = ["--task", "jsonl", "--data", str(data), "--db", str(db), "--json"]

    out = json.loads(
        ponder(
            adder_env, "sample", "--backend", "adder", "-m", "adder-1", "-n", "3", *common
        ).stdout
    )
    assert out["sampling"]["drawn"] == 6
    assert out["verification"]["statuses"] == {"correct": 6}
    with sqlite3.connect(db) as con:
        texts = [row[0] for row in con.execute("SELECT text FROM samples ORDER BY text")]
    assert texts == ["2 plus 2 is 4.\n#### 4"] * 3 + ["3 plus 5 is 8.\n#### 8"] * 3
    runs = json.loads(ponder(adder_env, "runs", "--db", str(db), "--json").stdout)
    assert [r["model"] for r in runs] == ["scripted:adder-1"]

    # A system config whose model spec names the plugin backend.
    system = tmp_path / "adder-vote.yaml"
    system.write_text(
        "name: adder-vote\n"
        "model: {backend: adder, model: adder-2}\n"
        "layers:\n  - {type: generate, n: 3}\n  - {type: vote}\n"
    )
    out = json.loads(ponder(adder_env, "run", "--system", str(system), *common).stdout)
    assert out["verification"]["system"]["statuses"] == {"correct": 2}
    assert out["baseline"]["model"] == "scripted:adder-2"

    # The broken plugin breaks only its own name, and says which distribution to fix.
    listed = ponder(adder_env, "models")
    assert "adder, gpu, llamacpp, openai, scripted" in listed.stdout
    assert "ponder-gpu-backend" in listed.stderr  # warned once, listing went on
    failed = ponder(adder_env, "sample", "--backend", "gpu", *common, code=2)
    assert "backend 'gpu' comes from the plugin distribution 'ponder-gpu-backend'" in failed.stderr
    assert "a_module_that_is_not_installed" in failed.stderr
