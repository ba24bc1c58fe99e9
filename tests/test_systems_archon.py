"""Archon configs in the forms the published ones use, imported through ``System.load``.

The fixtures are configs written here, one per form (not copies of Archon's files). Each form is
imported and checked on its own, and runs one query on the real embedded model (max_tokens <= 32).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ponder.errors import ConfigError
from ponder.systems import ArchonImportWarning, System
from ponder.systems.components import FuseConfig, GenerateConfig, RankConfig

TEST_MODEL = "smollm2-135m"


def gen(model: str = "Qwen/Qwen2-72B-Instruct", **extra: Any) -> dict[str, Any]:
    return {
        "type": "generator",
        "model": model,
        "model_type": "Together_API",
        "temperature": 0.7,
        "max_tokens": 24,
        "samples": 1,
        **extra,
    }


def comp(kind: str, **extra: Any) -> dict[str, Any]:
    return {**gen(), "type": kind, **extra}


# One config per form (written for these tests).
LIST_LAYERS = {"name": "list", "layers": [[gen(samples=2)], [comp("fuser")]]}
SINGLE_OBJECT = {"name": "single", "layers": [gen(samples=2), comp("fuser")]}
BRANCHES = {
    "name": "branches",
    "layers": [
        {"branches": 3, "models": [gen()]},
        {"branches": 1, "models": [comp("fuser")]},
    ],
}
HUGE_MAX_TOKENS = {"name": "huge", "layers": [[gen(max_tokens=200000)]]}
NO_LOCAL_MEANING = {
    "name": "extras",
    "layers": [
        [gen(checkpoint=""), gen(checkpoint="", top_k=1)],
        [comp("critic", ranker_batch_size=16, top_k=3)],
        [comp("verifier", batch_num=2)],
        [
            comp(
                "fuser",
                checkpoint="",
                length_contorl=True,
                top_k_generations=2,
                fuse_generations_count=1,
                ranker_config={"ranker_checkpoint": "llm-blender/PairRM"},
                remove_unit_tests_from_prompt=True,
            )
        ],
    ],
}
PAIRRM = {
    "name": "pairrm",
    "layers": [
        [gen(samples=2)],
        [
            {
                "type": "ranker",
                "model": "llm-blender/PairRM",
                "model_type": "",
                "top_k": 1,
                "temperature": 0.7,
                "max_tokens": 24,
                "ranker_batch_size": 16,
            }
        ],
    ],
}
FORMS = {
    "list": LIST_LAYERS,
    "single-object": SINGLE_OBJECT,
    "branches": BRANCHES,
    "huge-max-tokens": HUGE_MAX_TOKENS,
    # The keys without local meaning of NO_LOCAL_MEANING, on two components (fewer model calls).
    "no-local-meaning": {
        "name": "extras-run",
        "layers": [
            [gen(checkpoint="", samples=2)],
            [comp("fuser", length_contorl=True, ranker_batch_size=16, top_k_generations=2)],
        ],
    },
    "pairrm": PAIRRM,
}


@pytest.fixture(scope="module")
def smol() -> Iterator[Any]:
    """The small real model on one engine thread (two threads wait on each other on a busy
    2-core machine)."""
    from ponder.backends import LlamaCppBackend, LlamaCppConfig

    backend = LlamaCppBackend(
        LlamaCppConfig(model=TEST_MODEL, n_parallel=4, ctx_per_sequence=1024, threads=1)
    )
    try:
        yield backend
    finally:
        backend.close()


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / f"{data['name']}.json"
    path.write_text(json.dumps(data))
    return path


def load(path: Path, **kwargs: Any) -> tuple[System, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        system = System.load(path, **kwargs)
    found = [str(w.message) for w in caught if issubclass(w.category, ArchonImportWarning)]
    return system, found


def test_list_and_single_object_layers_are_the_same_system(tmp_path: Path) -> None:
    a, warned_a = load(write(tmp_path, LIST_LAYERS), default_model=TEST_MODEL)
    b, warned_b = load(write(tmp_path, SINGLE_OBJECT), default_model=TEST_MODEL)
    assert a.config.layers == b.config.layers
    assert a.config.describe() == "generate(n=2) -> fuse"
    assert warned_a == warned_b == []


def test_branches_repeat_the_layers_components(tmp_path: Path) -> None:
    system, warned = load(write(tmp_path, BRANCHES), default_model=TEST_MODEL)
    assert system.config.describe() == "generate(n=1) + generate(n=1) + generate(n=1) -> fuse"
    assert len(warned) == 1 and "layers[0].branches 3" in warned[0]


def test_max_tokens_beyond_any_context_is_lowered_with_a_warning(tmp_path: Path) -> None:
    system, warned = load(write(tmp_path, HUGE_MAX_TOKENS), default_model=TEST_MODEL)
    (generate,) = system.config.layers[0]
    assert isinstance(generate, GenerateConfig) and generate.max_tokens == 131072
    assert len(warned) == 1
    assert "layers[0][0] (generator).max_tokens 200000 lowered to 131072" in warned[0]
    assert "context" in warned[0]


def test_keys_without_local_meaning_are_named_in_one_warning(tmp_path: Path) -> None:
    system, warned = load(write(tmp_path, NO_LOCAL_MEANING), default_model=TEST_MODEL)
    assert len(warned) == 1
    for key in (
        "checkpoint",
        "ranker_batch_size",
        "batch_num",
        "length_contorl",
        "top_k_generations",
        "fuse_generations_count",
        "ranker_config",
        "remove_unit_tests_from_prompt",
    ):
        assert key in warned[0]
    assert "checkpoint at layers[0][0], layers[0][1], layers[3][0]: a hosted model's" in warned[0]
    # Keys Archon itself ignores (a generator's or critic's top_k) are dropped without a word.
    assert re.search(r"\btop_k at", warned[0]) is None
    # The misspelled key is ignored, as Archon does: the fuser gets no length control.
    fuse = system.config.layers[3][0]
    assert isinstance(fuse, FuseConfig) and fuse.concise is False
    assert "changes:" in system.config.description


def test_pairrm_ranks_pairwise_with_a_chat_model(tmp_path: Path) -> None:
    path = write(tmp_path, PAIRRM)
    system, warned = load(path, default_model=TEST_MODEL)
    rank = system.config.layers[1][0]
    assert isinstance(rank, RankConfig) and (rank.mode, rank.top_k) == ("pairwise", 1)
    assert rank.model is None  # the default model
    assert len(warned) == 1 and "PairRM" in warned[0] and "pairwise" in warned[0]
    assert "ranker_batch_size" in warned[0]
    mapped, _ = load(
        path, model_map={"llm-blender/PairRM": TEST_MODEL, "Qwen/Qwen2-72B-Instruct": TEST_MODEL}
    )
    assert mapped.config.layers[1][0].model_dump()["model"] == TEST_MODEL
    with pytest.raises(ConfigError, match="the PairRM reward model has no local equivalent"):
        System.load(path, model_map={"Qwen/Qwen2-72B-Instruct": TEST_MODEL})


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"name": "early", "layers": [[gen(), comp("fuser")], [comp("critic")]]},
            "layers[0][1] (fuser): no earlier layer makes candidates for it, and Archon itself "
            "fails on this config (its fuser asserts at least one candidate)",
        ),
        (
            {"name": "typo", "layers": [[gen(temprature=0.2)]]},
            "layers[0][0] (generator): key 'temprature' cannot be mapped (did you mean "
            "'temperature'?)",
        ),
        (
            {"name": "custom", "layers": [[gen(model_type="My_Generator")]]},
            "layers[0][0] (generator).model_type: 'My_Generator' cannot be mapped",
        ),
        (
            {
                "name": "pairrm-typed",
                "layers": [[gen()], [comp("critic", model="llm-blender/PairRM", model_type="")]],
            },
            "layers[1][0] (critic).model_type: '' cannot be mapped",
        ),
        (
            {"name": "branches", "layers": [{"branches": "two", "models": [gen()]}]},
            "layers[0].branches: must be a whole number >= 1 (got 'two')",
        ),
    ],
)
def test_what_cannot_be_mapped_says_exactly_why(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError, match="cannot import Archon config") as info:
        System.load(write(tmp_path, data), default_model=TEST_MODEL)
    assert expected in info.value.message


@pytest.mark.embedded
@pytest.mark.parametrize("form", list(FORMS))
def test_each_form_answers_a_query_on_the_embedded_model(
    form: str, tmp_path: Path, smol: Any
) -> None:
    data = json.loads(json.dumps(FORMS[form]))
    backends: dict[str, Any] = {"smol": smol}
    if form == "huge-max-tokens":
        # A context of 128 tokens, so that "the context minus the prompt" is a short reply.
        from ponder.backends import LlamaCppBackend, LlamaCppConfig

        backends["smol"] = LlamaCppBackend(
            LlamaCppConfig(model=TEST_MODEL, n_parallel=1, ctx_per_sequence=128, threads=1)
        )
    path = write(tmp_path, data)
    imported, warned = load(path, default_model="smol", backends=backends)
    assert (warned != []) == (form in ("branches", "huge-max-tokens", "no-local-meaning", "pairrm"))
    # No repair prompts: a few calls per form, whatever the small model replies.
    config = imported.config.model_copy(update={"repair_retries": 0})
    system = System(config, backends=backends)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = system.run("What is 2+3? Answer briefly.")
    finally:
        system.close()
        if form == "huge-max-tokens":
            backends["smol"].close()
    assert result.answer.strip()
    calls = [c for e in result.trace.events for c in e.calls]
    assert calls and all(c.error is None for c in calls)
    if form == "huge-max-tokens":
        (call,) = calls
        (note,) = result.trace.events[0].notes
        found = re.search(r"max_tokens 131072 lowered to (\d+) .*context of (\d+) tokens", note)
        assert found is not None, note
        limit, context = int(found[1]), int(found[2])
        assert call.params.max_tokens == limit and context <= 512  # llama.cpp rounds 128 up
        assert call.prompt_tokens + call.completion_tokens <= context
        assert any("limited to the context" in str(w.message) for w in caught)
    else:
        assert all(c.params.max_tokens <= 32 for c in calls)
    if form == "pairrm":
        assert any(c.purpose.startswith("compare") for c in calls)
    if form == "branches":
        assert len(result.trace.events) == 4  # three generators, one fuser
