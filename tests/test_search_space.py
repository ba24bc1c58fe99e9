"""Search spaces (issue 15, first part): validation, proposals as valid system configs, constraints, grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ponder.errors import ConfigError
from ponder.search import (
    RandomSuggester,
    Range,
    SearchSpace,
    check_same_space,
    differences,
    grid,
    propose,
    study_name,
)
from ponder.systems import SystemConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "search"

SPACE: dict[str, Any] = {
    "name": "t",
    "generate": {
        "models": ["smollm2-135m", {"backend": "scripted", "name": "s"}],
        "n": [1, 4],
        "temperature": {"low": 0.2, "high": 1.0, "step": 0.4},
    },
    "layers": [
        {"type": "critique"},
        {"type": "rank", "knobs": {"top_k": [1, 2]}},
        {"type": "vote", "optional": False},
    ],
    "constraints": {"max_layers": 3},
}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"layers": [{"type": "rnak"}]},
            r"invalid search space: layers\[0\]\.type: unknown component type 'rnak'",
        ),
        ({"generate": {"models": []}}, "generate.models"),
        ({"generate": {"models": ["m"], "temperature": {"low": 1, "high": 0.5}}}, "low .* below"),
        ({"generate": {"models": ["m"], "n": {"low": 0, "high": 4, "log": True}}}, "log-scale"),
        ({"constraints": {"max_layers": 0}}, "constraints.max_layers"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_spaces_name_the_field(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SearchSpace.from_data({**SPACE, **change})


def test_a_proposal_is_a_valid_system_config_and_says_what_chose_it() -> None:
    space = SearchSpace.from_data(SPACE)
    proposal = propose(space, RandomSuggester(1))
    config = SystemConfig.from_data(proposal.config)
    assert config.layers[0][0].type == "generate" and config.layers[-1][0].type == "vote"
    assert proposal.params["generate.model"] in (
        "smollm2-135m",
        '{"backend": "scripted", "name": "s"}',
    )
    assert proposal.params["generate.temperature"] in (0.2, 0.6, 1.0)
    assert propose(space, RandomSuggester(1)) == proposal  # seeded
    assert len({str(propose(space, RandomSuggester(s)).params) for s in range(20)}) > 5


def test_grid_walks_every_system_once_and_flags_broken_constraints() -> None:
    space = SearchSpace.from_data(SPACE)
    proposals = list(grid(space))
    # 2 models x 2 n x 3 temperatures x critique (2) x rank (left out, top_k 1, top_k 2).
    assert len(proposals) == 2 * 2 * 3 * 2 * 3
    assert len({str(p.params) for p in proposals}) == len(proposals)
    infeasible = [p for p in proposals if not p.feasible]
    # Generation + critique + rank + vote = 4 layers > 3.
    assert len(infeasible) == 2 * 2 * 3 * 2
    assert all(len(p.config["layers"]) > 3 for p in infeasible)
    assert all(len(p.config["layers"]) <= 3 for p in proposals if p.feasible)
    assert "more than max_layers = 3" in infeasible[0].violations[0]


def test_random_proposals_always_respect_the_structure() -> None:
    space = SearchSpace.from_data(
        {
            **SPACE,
            "generate": {
                **SPACE["generate"],
                "temperature": {"low": 0.1, "high": 2.0, "log": True},
            },
        }
    )
    for seed in range(50):
        p = propose(space, RandomSuggester(seed))
        assert 0.1 <= p.params["generate.temperature"] <= 2.0
        assert p.feasible == (len(p.config["layers"]) <= 3)


def test_grid_needs_a_step_on_ranges() -> None:
    space = SearchSpace.from_data(
        {**SPACE, "generate": {**SPACE["generate"], "temperature": {"low": 0.1, "high": 1.0}}}
    )
    with pytest.raises(
        ConfigError, match=r"generate\.temperature: an exhaustive grid needs a step"
    ):
        list(grid(space))
    assert Range(low=1, high=4, step=1).grid("x") == [1, 2, 3, 4]


def test_shipped_spaces_load_and_propose(tmp_path: Path) -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        space = SearchSpace.load(path)
        assert all(SystemConfig.from_data(p.config) for p in grid(space))
        assert space.digest() == SearchSpace.load(path).digest()
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        (CONFIGS / "small.yaml").read_text().replace("max_layers: 4", "max_layers: 3")
    )
    assert SearchSpace.load(changed).digest() != SearchSpace.load(CONFIGS / "small.yaml").digest()


def test_a_study_is_named_by_space_task_and_split_and_refuses_a_changed_space() -> None:
    space = SearchSpace.from_data(SPACE)
    task = {"name": "gsm8k", "data": "abc"}
    name = study_name(space, task, 0)
    assert name.startswith("search-t-") and name == study_name(
        SearchSpace.from_data(SPACE), task, 0
    )
    assert name != study_name(space, task, 1) and name != study_name(
        space, {**task, "data": "x"}, 0
    )
    stored = space.model_dump(mode="json")
    changed = SearchSpace.from_data({**SPACE, "constraints": {"max_layers": 4}})
    # An edited space keeps its study's name, so rerunning finds the study and is refused below.
    assert study_name(changed, task, 0) == name
    assert study_name(space, task, 0, settings={"dev": 5}) != name
    check_same_space(stored, space, name)  # the same space resumes
    with pytest.raises(ConfigError, match=r"constraints\.max_layers: 3 -> 4") as info:
        check_same_space(stored, changed, name)
    assert "another `name:`" in str(info.value.hint)
    assert differences({"a": [1, 2]}, {"a": [1, 3], "b": 0}) == ["a[1]: 2 -> 3", "b: added (0)"]


def test_a_layer_with_previous_follows_the_one_before_and_invalid_systems_are_infeasible() -> None:
    space = SearchSpace.from_data(
        {
            "generate": {"models": ["m"], "n": 4},
            "layers": [
                {"type": "unit_tests"},
                {"type": "unit_test_eval", "with_previous": True},
                {"type": "vote"},
            ],
        }
    )
    proposals = list(grid(space))
    assert len(proposals) == 4  # tests in/out x vote in/out: the eval asks nothing
    for p in proposals:
        types = [layer["type"] for layer in p.config["layers"]]
        assert ("unit_tests" in types) == ("unit_test_eval" in types)
        assert p.feasible
    # Left independent, an eval without the tests before it is proposed but never feasible.
    loose = SearchSpace.from_data(
        {
            "generate": {"models": ["m"], "n": 4},
            "layers": [{"type": "unit_tests"}, {"type": "unit_test_eval"}],
        }
    )
    bad = [p for p in grid(loose) if not p.feasible]
    assert len(bad) == 1 and "not a valid system" in bad[0].violations[0]


def test_installed_means_every_embedded_model_installed_here() -> None:
    from ponder.models import MODELS

    space = SearchSpace.from_data({"generate": {"models": "installed", "n": 1}})
    assert space.generate.models == [n for n, e in MODELS.items() if e.installed()]
    assert all(MODELS[str(n)].installed() for n in space.generate.models)
    assert len(space.generate.models) < len(MODELS) or all(e.installed() for e in MODELS.values())
    assert "smollm2-135m" in space.generate.models  # the test model is always installed
    with pytest.raises(ConfigError, match=r"generate\.models"):
        SearchSpace.from_data({"generate": {"models": "everything", "n": 1}})
