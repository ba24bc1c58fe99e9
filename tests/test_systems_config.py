"""System configs: validation messages, shipped configs, files, plugins, Archon import."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from ponder.errors import ConfigError, NotFoundError, UserError
from ponder.plugins import unregister
from ponder.systems import (
    Component,
    ComponentConfig,
    Delta,
    RunContext,
    State,
    System,
    SystemConfig,
    convert_archon,
    looks_like_archon,
    parse_model,
    parse_model_map,
    register_component,
    with_token_cap,
    with_truncation,
)
from ponder.systems.components import GenerateConfig, RankConfig, VoteConfig
from tests.test_systems_components import RANK, SCORE, answers, scripted

# The Archon fixtures here carry keys without local meaning (ranker_batch_size); the warning that names
# them is tested in test_systems_archon.py and would only be noise here.
pytestmark = pytest.mark.filterwarnings("ignore::ponder.systems.ArchonImportWarning")

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHIPPED = [
    "sample-8-vote.yaml",
    "sample-8-critique-rank-fuse.yaml",
    "self-refine-3.yaml",
    "ensemble-fuse.yaml",
    "best-of-8-judge.yaml",
    "cot.yaml",
]


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        SystemConfig.from_data(data)
    return info.value.message


# ----- validation messages ----------------------------------------------------------------------

GEN = {"type": "generate", "n": 4}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"layers": [[GEN], [{"type": "rank", "top_k": 0}]]},
            "layers[1][0].top_k: must be >= 1 (got 0)",
        ),
        (
            {"layers": [[{"type": "generate", "nn": 8}]]},
            "layers[0][0].nn: is not a known field (did you mean 'n'?)",
        ),
        (
            {"layers": [[{"type": "rnak"}]]},
            "layers[0][0].type: unknown component type 'rnak' (did you mean 'rank'?)",
        ),
        ({"layers": [[{"n": 3}]]}, "layers[0][0]: a component needs a 'type'"),
        (
            {"layers": [[GEN], [{"type": "judge", "mode": "accept", "min_score": 5}]]},
            "layers[1][0]: min_score applies to mode 'score' only",
        ),
        (
            {"layers": [[{"type": "generate", "models": [{"model": "a", "samples": 2}]}]]},
            "layers[0][0].models[0].samples: is not a known field",
        ),
        (
            {"layers": [[{"type": "generate", "model": {"backend": "llamacpp", "n_parallel": 0}}]]},
            "layers[0][0].model: invalid llamacpp backend option(s): n_parallel",
        ),
        (
            {"layers": [[{"type": "generate", "model": {"backend": "nope"}}]]},
            "layers[0][0].model: unknown backend 'nope'",
        ),
        (
            {"layers": [[{"type": "generate", "model": {"model": "x"}}]]},
            "layers[0][0].model: a model spec needs 'backend'",
        ),
        (
            {"layers": [[{"type": "generate", "model": 42}]]},
            "layers[0][0].model: must be a model name or a mapping like {backend: llamacpp",
        ),
        (
            {"layers": [[{"type": "generate", "model": {"backend": "llamacpp", "modle": "x"}}]]},
            "modle: is not an option (did you mean 'model'?)",
        ),
        (
            {"layers": [[{"type": "generate", "template": "Q: $question"}]]},
            "layers[0][0].template: the template uses unknown placeholder(s) $question",
        ),
        (
            {"layers": [[GEN], [{"type": "vote", "tie_break": "coin"}]]},
            "layers[1][0].tie_break: input should be 'first' or 'random' (got 'coin')",
        ),
        ({"layers": [[GEN]], "extractor": "zzz"}, "extractor: unknown answer extractor 'zzz'"),
        ({"layers": [[GEN]], "seeed": 1}, "seeed: is not a known field (did you mean 'seed'?)"),
        ({"layers": []}, "layers: must have at least 1 item(s)"),
        ({"name": "x"}, "layers: is required"),
        (
            {"layers": [[{"type": "rank"}]]},
            "layers[0][0] (rank) needs candidates, but no earlier layer makes any",
        ),
        (
            {"layers": [[GEN], [{"type": "unit_test_eval"}]]},
            "layers[1][0] (unit_test_eval) needs unit tests",
        ),
        (
            {"layers": [[{"type": "generate", "model": "a", "models": [{"n": 2}]}]]},
            "set either model (one model) or models (an ensemble), not both",
        ),
    ],
)
def test_errors_name_the_field_and_the_fix(data: dict[str, Any], expected: str) -> None:
    assert expected in error_of(data)


def test_all_problems_are_reported_at_once() -> None:
    message = error_of(
        {"layers": [[{"type": "generate", "n": 0}], [{"type": "rank", "top_k": 0}]], "seed": -1}
    )
    assert "seed: must be >= 0 (got -1)" in message
    assert "layers[0][0].n: must be >= 1 (got 0)" in message
    assert "layers[1][0].top_k: must be >= 1 (got 0)" in message


def test_secret_looking_values_are_not_echoed() -> None:
    spec = {"backend": "openai", "base_url": "http://x/v1", "model": "m", "api_key_env": 5}
    message = error_of({"layers": [[{"type": "generate", "model": spec}]]})
    assert "api_key_env" in message and "5" not in message.split("api_key_env")[1][:20]


def test_a_config_is_data() -> None:
    config = SystemConfig.from_data(
        {
            "name": "v",
            "model": {"backend": "llamacpp", "model": "smollm2-135m"},
            "layers": [{"type": "generate", "n": 8}, {"type": "vote"}],
        }
    )
    assert config.describe() == "generate(n=8) -> vote"
    assert isinstance(config.layers[0][0], GenerateConfig)
    dumped = config.model_dump(mode="json")
    assert dumped["model"] == {"backend": "llamacpp", "model": "smollm2-135m"}
    assert dumped["layers"][0][0]["n"] == 8
    again = SystemConfig.from_data(json.loads(json.dumps(dumped)))
    assert again.model_dump() == config.model_dump()
    # The base class validates through the typed one too.
    assert SystemConfig.model_validate(dumped).describe() == config.describe()


def test_a_config_from_python_objects() -> None:
    config = SystemConfig(
        layers=[[GenerateConfig(n=4)], [RankConfig(top_k=2), VoteConfig(keep="all")]]
    )
    assert config.describe() == "generate(n=4) -> rank(listwise, top_k=2) + vote(keep=all)"
    assert config.model_dump()["layers"][1][0]["top_k"] == 2


# ----- shipped configs and files ---------------------------------------------------------------


def test_the_example_configs_are_shipped() -> None:
    assert {p.name for p in CONFIGS.glob("*.yaml")} >= set(SHIPPED)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    system = System.load(path)  # validates; creates no backend
    assert system.config.name == path.stem
    assert system.pool.created == []


def test_shipped_configs_use_the_embedded_models() -> None:
    for name in SHIPPED:
        config = System.load(CONFIGS / name).config
        assert config.model is not None and not isinstance(config.model, str)
        assert config.model.backend == "llamacpp"
        assert config.model.options["model"] == "qwen2.5-coder-0.5b"
    ensemble = System.load(CONFIGS / "ensemble-fuse.yaml").config
    models = [c.model_dump(mode="json")["model"] for c in ensemble.layers[0]]
    assert models == [{"backend": "llamacpp", "model": "smollm2-135m"}, None]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        System.load(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="cannot read system config"):
        System.load(tmp_path)  # a folder
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        System.load(latin1)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\nlayers:\n  - type: [generate\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        System.load(bad_yaml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"layers": [}')
    with pytest.raises(ConfigError, match="invalid JSON at line 1, column 13"):
        System.load(bad_json)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        System.load(not_mapping)
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("layers:\n  - type: generate\n    n: 0\n")
    with pytest.raises(
        ConfigError, match=r"invalid system config .*invalid.yaml: layers\[0\]\[0\].n"
    ):
        System.load(invalid)


def test_json_config_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "j", "layers": [[{"type": "generate", "n": 2}]]}))
    assert System.load(path).config.describe() == "generate(n=2)"


def test_unknown_verifier_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"layers\[1\]\[0\].verifier: unknown verifier 'tests'"):
        System.from_dict({"layers": [[GEN], [{"type": "verify", "verifier": "tests"}]]})


# ----- plugins ------------------------------------------------------------------------------------


class ShoutConfig(ComponentConfig):
    type: Literal["shout"] = "shout"
    times: int = 1


@pytest.fixture
def shout() -> Iterator[None]:
    @register_component("shout")
    class Shout(Component[ShoutConfig]):
        config_type: ClassVar[type[ComponentConfig]] = ShoutConfig

        async def run(self, state: State, ctx: RunContext) -> Delta:
            times = self.config.times
            return Delta(
                changed=[
                    ctx.revised(c, c.text.upper() + "!" * times, model=None)
                    for c in state.candidates
                ]
            )

    yield
    unregister("component", "shout")


@pytest.mark.usefixtures("shout")
def test_a_registered_component_can_be_configured_and_run() -> None:
    backend = scripted(default="hi #### 1")
    config = {"layers": [{"type": "generate"}, {"type": "shout", "times": 2}]}
    with System.from_dict(config, default_backend=backend) as system:
        result = system.run("q")
    assert result.answer == "HI #### 1!!"
    assert "layers[1][0].times: must be" not in str(result.trace)
    with pytest.raises(ConfigError, match=r"layers\[1\]\[0\].tims: is not a known field"):
        SystemConfig.from_data({"layers": [{"type": "generate"}, {"type": "shout", "tims": 2}]})


def test_registration_checks_the_type_literal() -> None:
    with pytest.raises(ConfigError, match="must be Literal"):

        @register_component("not-shout")
        class Wrong(Component[ShoutConfig]):
            config_type: ClassVar[type[ComponentConfig]] = ShoutConfig

            async def run(self, state: State, ctx: RunContext) -> Delta:
                return Delta()


# ----- Archon import ------------------------------------------------------------------------------

ARCHON_UNIT_TESTS = {
    "name": "gpt-4o-5-samples-unit-tests-then-verifier",
    "layers": [
        [
            {
                "type": "unit_test_generator",
                "model": "gpt-4o-2024-05-13",
                "model_type": "OpenAI_API",
                "temperature": 0.7,
                "max_tokens": 2048,
                "samples": 1,
                "unit_test_cap": 3,
            }
        ],
        [
            {
                "type": "generator",
                "model": "gpt-4o-2024-05-13",
                "model_type": "OpenAI_API",
                "top_k": 1,
                "temperature": 0.7,
                "max_tokens": 512,
                "samples": 5,
            }
        ],
        [
            {
                "type": "unit_test_evaluator",
                "model": "gpt-4o-2024-05-13",
                "model_type": "OpenAI_API",
                "temperature": 0.7,
                "max_tokens": 2048,
                "remove_unit_tests_from_prompt": True,
                "samples": 1,
                "top_k": 1,
                "first_k": 3,
            }
        ],
        [
            {
                "type": "verifier",
                "model": "gpt-4o-2024-05-13",
                "model_type": "OpenAI_API",
                "temperature": 0.7,
                "max_tokens": 2048,
                "samples": 1,
                "first_k": 1,
            }
        ],
    ],
}

ARCHON_ENSEMBLE = {
    "name": "two-models-rank-critic-fuse",
    "layers": [
        [
            {
                "type": "generator",
                "model": "Qwen/Qwen2-72B-Instruct",
                "model_type": "Together_API",
                "temperature": 0.7,
                "max_tokens": 2048,
                "samples": 2,
            },
            {
                "type": "generator",
                "model": "meta-llama/Llama-3-70b-chat-hf",
                "model_type": "Together_API",
                "temperature": 0.7,
                "max_tokens": 2048,
                "samples": 2,
            },
        ],
        [
            {
                "type": "ranker",
                "model": "Qwen/Qwen2-72B-Instruct",
                "model_type": "Together_API",
                "top_k": 3,
                "temperature": 0.7,
                "max_tokens": 2048,
                "ranker_batch_size": 16,
                "use_critiques": False,
            }
        ],
        [
            {
                "type": "critic",
                "model": "Qwen/Qwen2-72B-Instruct",
                "model_type": "Together_API",
                "temperature": 0.7,
                "max_tokens": 2048,
                "samples": 1,
                "max_context_length": 8192,
            }
        ],
        [
            {
                "type": "fuser",
                "model": "Qwen/Qwen2-72B-Instruct",
                "model_type": "Together_API",
                "temperature": 0.7,
                "max_tokens": 2048,
                "samples": 1,
                "length_control": True,
            }
        ],
    ],
}


class TestArchon:
    def test_recognised(self) -> None:
        assert looks_like_archon(ARCHON_UNIT_TESTS) and looks_like_archon(ARCHON_ENSEMBLE)
        assert not looks_like_archon({"layers": [[{"type": "generate"}]]})

    def test_components_map_one_to_one(self) -> None:
        config = System.from_archon(ARCHON_ENSEMBLE, default_model="smollm2-135m").config
        assert config.name == "archon:two-models-rank-critic-fuse"
        assert config.model == "smollm2-135m"
        assert config.describe() == (
            "generate(n=2) + generate(n=2) -> rank(listwise, top_k=3) -> critique -> fuse"
        )
        rank = config.layers[1][0]
        assert isinstance(rank, RankConfig) and rank.use_critiques is False
        assert config.layers[0][0].model_dump()["max_tokens"] == 2048
        assert config.layers[3][0].model_dump()["concise"] is True

    def test_model_map_by_name_or_type_and_name(self) -> None:
        converted = convert_archon(
            ARCHON_ENSEMBLE,
            model_map={
                "Qwen/Qwen2-72B-Instruct": "qwen2.5-coder-0.5b",
                "Together_API:meta-llama/Llama-3-70b-chat-hf": {
                    "backend": "llamacpp",
                    "model": "smollm2-135m",
                },
            },
        )
        first, second = converted["layers"][0]
        assert first["model"] == "qwen2.5-coder-0.5b"
        assert second["model"] == {"backend": "llamacpp", "model": "smollm2-135m"}
        assert "model" not in converted

    def test_unit_test_pipeline_runs_end_to_end(self) -> None:
        def evaluate(text: str, _: int) -> str:
            ok = "#### 4" in text
            return "\n".join(f"{i}: {'PASS' if ok else 'FAIL'}" for i in (1, 2, 3))

        backend = scripted(
            ("short checks", "- says 4\n- is short\n- shows work\n- is polite"),
            ('"<number>: PASS"', evaluate),
            ('"Verdict: REJECT"', "Verdict: ACCEPT"),
            default=answers("3", "4", "4", "5", "4"),
        )
        system = System.from_archon(
            ARCHON_UNIT_TESTS,
            model_map={"gpt-4o-2024-05-13": "gpt"},
            backends={"gpt": backend},
        )
        assert system.config.describe() == (
            "unit_tests(max=3) -> generate(gpt x5) -> unit_test_eval(top_k=3) -> judge(accept, top_k=1)"
        )
        with system:
            result = system.run("What is 2+2?")
        assert result.extracted == "4"
        assert result.trace.unit_tests == ["says 4", "is short", "shows work"]
        # Archon passes the tests to later generators with the query.
        generate_prompt = result.trace.events[1].calls[0].prompt
        assert isinstance(generate_prompt, list) and "- shows work" in generate_prompt[-1].content
        assert [c.id for c in result.candidates] == ["L1.0.2"]

    def test_embedded_model_names_map_to_themselves(self) -> None:
        data = {
            "name": "local",
            "layers": [[{"type": "generator", "model": "smollm2-135m", "model_type": "vLLM"}]],
        }
        assert System.from_archon(data).config.layers[0][0].model_dump()["model"] == "smollm2-135m"

    def test_older_layer_form(self) -> None:
        data = {
            "name": "old",
            "layers": [
                {
                    "branches": 1,
                    "models": [
                        {"type": "generator", "model": "smollm2-135m", "model_type": "vLLM"}
                    ],
                }
            ],
        }
        assert System.from_archon(data).config.describe() == "generate(smollm2-135m x1)"

    def test_load_detects_archon_json(self, tmp_path: Path) -> None:
        path = tmp_path / "archon.json"
        path.write_text(json.dumps(ARCHON_ENSEMBLE))
        system = System.load(path, default_model="qwen2.5-coder-0.5b")
        assert system.config.name.startswith("archon:")
        with pytest.raises(ConfigError, match="no local equivalent"):
            System.load(path)

    def test_unmapped_model_names_the_component_and_the_fix(self) -> None:
        with pytest.raises(ConfigError) as info:
            System.from_archon(ARCHON_ENSEMBLE, model_map={"Qwen/Qwen2-72B-Instruct": "x"})
        message = info.value.message
        assert (
            "layers[0][1] (generator).model: 'meta-llama/Llama-3-70b-chat-hf' (Together_API) "
            "has no local equivalent" in message
        )
        assert "layers[1]" not in message  # the ranker's model is mapped
        assert info.value.hint is not None and "--model-map" in info.value.hint

    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            (
                lambda d: d["layers"][1][0].update(temperature_schedule="x"),
                "layers[1][0] (ranker): key 'temperature_schedule' cannot be mapped",
            ),
            (
                lambda d: d["layers"][2][0].update(type="summarizer"),
                "layers[2][0].type: 'summarizer' cannot be mapped",
            ),
            (
                lambda d: d.update(custom=True),
                "custom: Archon custom components cannot be imported",
            ),
            (
                lambda d: d["layers"][0][0].update(model_type="My_Generator"),
                "layers[0][0] (generator).model_type: 'My_Generator' cannot be mapped",
            ),
            (
                lambda d: d["layers"][3][0].update(samples=0),
                "layers[3][0] (fuser).samples: must be a whole number >= 1 (got 0)",
            ),
            (
                lambda d: d["layers"].__setitem__(1, {"branches": 0, "models": d["layers"][1]}),
                "layers[1].branches: must be a whole number >= 1 (got 0)",
            ),
        ],
    )
    def test_unmappable_keys_are_errors(self, change: Any, expected: str) -> None:
        data = json.loads(json.dumps(ARCHON_ENSEMBLE))
        change(data)
        with pytest.raises(ConfigError, match="cannot import Archon config") as info:
            System.from_archon(data, default_model="smollm2-135m")
        assert expected in info.value.message

    def test_values_are_validated_after_mapping(self) -> None:
        data = json.loads(json.dumps(ARCHON_ENSEMBLE))
        data["layers"][1][0]["temperature"] = -1
        with pytest.raises(ConfigError, match=r"layers\[1\]\[0\].temperature: must be >= 0.0"):
            System.from_archon(data, default_model="smollm2-135m")


def test_archon_ranker_and_critic_run_on_scripted_models() -> None:
    backend = scripted(
        (RANK, "Ranking: [4] > [3] > [2] > [1]"),
        ("Strengths:", "\n".join(f"[{i}]\nStrengths: s\nWeaknesses: w" for i in (1, 2, 3))),
        ("Treat them as material", "fused #### 4"),
        (SCORE, "Score: 5"),
        default=answers("1", "2", "3", "4"),
    )
    with System.from_archon(ARCHON_ENSEMBLE, default_model="m", backends={"m": backend}) as s:
        result = s.run("q")
    assert result.answer == "fused #### 4"
    assert result.trace.layers[1].candidate_ids == ["L0.1.2", "L0.1.1", "L0.0.2"]
    # The ranker had use_critiques false; the fuser saw the critic's reviews.
    fuse_prompt = result.trace.events[-1].calls[0].prompt
    assert isinstance(fuse_prompt, list) and "Review of [1]" in fuse_prompt[-1].content


# ----- model choices at load time (the rules behind --model / --default-model / --model-map) -----

EMBEDDED_TUNED = {
    "name": "tuned",
    "model": {"backend": "llamacpp", "model": "qwen2.5-coder-0.5b", "threads": 1, "n_parallel": 4},
    "layers": [[{"type": "generate", "n": 2}]],
}


class TestLoadWithModels:
    def test_a_model_name_keeps_the_embedded_engine_options(self) -> None:
        config = System.load(EMBEDDED_TUNED, model="smollm2-135m").config
        assert config.model is not None and config.model.model_dump() == {
            "backend": "llamacpp",
            "model": "smollm2-135m",
            "threads": 1,
            "n_parallel": 4,
        }

    def test_a_spec_replaces_the_default_model_whole(self) -> None:
        spec = {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}
        for given in (spec, json.dumps(spec)):  # a mapping, or JSON text as on a command line
            config = System.load(EMBEDDED_TUNED, model=given).config
            assert config.model is not None and config.model.model_dump() == spec

    def test_a_name_of_a_callers_backend_stays_a_name(self) -> None:
        backend = scripted(default="#### 1")
        system = System.load(EMBEDDED_TUNED, model="mine", backends={"mine": backend})
        assert system.config.model == "mine"
        with system:
            assert system.run("q").answer == "#### 1"

    def test_sources_file_mapping_and_config(self, tmp_path: Path) -> None:
        path = tmp_path / "tuned.json"
        path.write_text(json.dumps(EMBEDDED_TUNED))
        config = SystemConfig.from_data(EMBEDDED_TUNED)
        loaded = [
            System.load(s, model="smollm2-135m").config for s in (path, EMBEDDED_TUNED, config)
        ]
        assert loaded[0] == loaded[1] == loaded[2]

    def test_archon_defaults_follow_model_and_map(self) -> None:
        config = System.load(ARCHON_ENSEMBLE, model="smollm2-135m").config
        # Every Archon model runs on `model` when no default model is given.
        assert config.model is not None and config.model.model_dump()["model"] == "smollm2-135m"
        config = System.load(
            ARCHON_ENSEMBLE,
            default_model="smollm2-135m",
            model_map={"Qwen/Qwen2-72B-Instruct": '{"backend": "llamacpp", "model": "m.gguf"}'},
        ).config
        assert config.layers[0][0].model_dump()["model"] == {
            "backend": "llamacpp",
            "model": "m.gguf",
        }
        assert config.layers[0][1].model_dump()["model"] is None  # the default

    def test_archon_choices_for_a_ponder_config_are_errors(self) -> None:
        for kwargs in ({"default_model": "smollm2-135m"}, {"model_map": {"a": "b"}}):
            with pytest.raises(ConfigError, match="Archon configs only"):
                System.load(EMBEDDED_TUNED, **kwargs)

    def test_token_truncation_reaches_every_component_that_calls_a_model(self) -> None:
        data = {
            "name": "t",
            "layers": [
                [{"type": "generate", "n": 2, "min_p": 0.1}],
                {"type": "vote"},
                {"type": "fuse"},
            ],
        }
        config = System.load(data, top_k=40, min_p=0.05).config
        generate, vote, fuse = config.layers[0][0], config.layers[1][0], config.layers[2][0]
        assert isinstance(generate, GenerateConfig) and isinstance(vote, VoteConfig)
        assert (generate.top_k_tokens, generate.min_p) == (40, 0.05)
        assert (fuse.model_dump()["top_k_tokens"], fuse.model_dump()["min_p"]) == (40, 0.05)
        assert vote == SystemConfig.from_data(data).layers[1][0]  # calls no model: unchanged
        # None keeps the config's value; nothing given is the config itself.
        only_k = with_truncation(SystemConfig.from_data(data), top_k=5)
        assert only_k.layers[0][0].model_dump()["min_p"] == 0.1
        assert only_k.layers[0][0].model_dump()["top_k_tokens"] == 5
        assert System.load(data).config == SystemConfig.from_data(data)
        with pytest.raises(ConfigError, match="min_p"):
            System.load(data, min_p=2.0)

    def test_a_token_cap_lowers_every_token_limit_above_it(self) -> None:
        data = {
            "name": "cap",
            "layers": [
                {"type": "generate", "models": [{"n": 2, "max_tokens": 900}, {"n": 1}]},
                {"type": "refine", "max_tokens": 40, "critic_max_tokens": 700},
                {
                    "type": "beam_search",
                    "steps": {"max_step_tokens": 160},
                    "scorer": {"kind": "judge", "mode": "score", "max_tokens": 300},
                    "budget_tokens": 4000,
                },
                {"type": "vote"},
            ],
        }
        capped = System.load(data, max_tokens=64).config.model_dump(mode="json")
        generate, refine, beam, vote = (layer[0] for layer in capped["layers"])
        assert generate["max_tokens"] == 64
        assert [m["max_tokens"] for m in generate["models"]] == [64, None]  # None: the layer's
        assert (refine["max_tokens"], refine["critic_max_tokens"]) == (40, 64)  # 40 stands
        assert beam["steps"]["max_step_tokens"] == 64 and beam["scorer"]["max_tokens"] == 64
        assert beam["budget_tokens"] == 4000  # a budget is not a limit of one call
        plain = SystemConfig.from_data(data).model_dump(mode="json")
        assert vote == plain["layers"][3][0]
        assert with_token_cap(SystemConfig.from_data(data), 10_000).model_dump(mode="json") == plain
        with pytest.raises(ConfigError, match="max_tokens must be >= 1"):
            System.load(data, max_tokens=0)

    def test_an_ensemble_config_takes_the_model_and_sampling_flags(self) -> None:
        # Each flag rebuilds the config from its dump, which must load again (regression:
        # `ponder run --model` on a config with an ensemble generate was refused).
        data = {"name": "e", "layers": [{"type": "generate", "models": [{"n": 2}, {"n": 1}]}]}
        config = System.load(data, model="smollm2-135m", top_k=5, max_tokens=32).config
        assert [m.n for m in config.layers[0][0].members()] == [2, 1]
        with pytest.raises(ConfigError, match="set n on each member"):
            SystemConfig.from_data({**data, "layers": [[{**data["layers"][0], "n": 2}]]})

    def test_model_text_and_map_items(self) -> None:
        assert parse_model(" smollm2-135m ") == "smollm2-135m"
        assert parse_model('{"backend": "scripted"}') == {"backend": "scripted"}
        with pytest.raises(ConfigError, match="--default-model: invalid JSON model spec"):
            parse_model("{backend", what="--default-model")
        pairs = parse_model_map(["Together_API:Qwen/Qwen2=smollm2-135m", 'a={"backend": "x"}'])
        assert pairs == {"Together_API:Qwen/Qwen2": "smollm2-135m", "a": {"backend": "x"}}
        with pytest.raises(ConfigError, match="expected ARCHON_MODEL=MODEL"):
            parse_model_map(["no-equals-sign"])
        with pytest.raises(ConfigError, match=r"backend option\(s\): slots: is not an option"):
            System.load(EMBEDDED_TUNED, model={"backend": "llamacpp", "slots": 2})
