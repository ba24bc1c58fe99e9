"""A search space of inference-time systems, as data: which models generate, which optional layers may
follow (in a fixed order), their knobs, and the constraints every proposed system must meet.

A space is read from YAML/JSON like a system config (errors name the field). A system is *proposed*
by asking a :class:`Suggester` one question per decision (a categorical choice or a number in a
range); an Optuna trial, a seeded random suggester and the exhaustive grid all answer through the same
protocol, so every search algorithm explores exactly the same space. A proposal is an ordinary system
config (validated by :class:`~ponder.systems.SystemConfig`), so ``ponder run`` and ``ponder serve`` use
it as it is.

Constraints: ``max_layers`` is structural and enforced when proposing (a proposal that breaks it is
marked infeasible and never run); ``max_calls`` and ``max_tokens_per_query`` depend on what the models
write (repairs, early stops), so they are enforced at run time: a trial whose mean model calls or
tokens per query exceed them is marked infeasible.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ponder._files import read_user_file
from ponder.errors import ConfigError
from ponder.systems import SystemConfig, component_types, config_error

Scalar = str | int | float | bool | None


class Range(BaseModel):
    """A number between ``low`` and ``high`` (integers when both bounds and the step are)."""

    model_config = ConfigDict(extra="forbid")

    low: float | int
    high: float | int
    step: float | int | None = Field(None, gt=0, description="Grid step (the grid needs one).")
    log: bool = Field(False, description="Search on a log scale (low must be > 0).")

    @model_validator(mode="after")
    def _bounds(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("a log-scale range takes no step")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def grid(self, name: str) -> list[float | int]:
        """Every value of the grid (``step`` apart from ``low``)."""
        if self.step is None:
            raise ConfigError(
                f"{name}: an exhaustive grid needs a step for the range {self.low}..{self.high}",
                hint=f"add `step:` to {name}, or list its values",
            )
        count = int((self.high - self.low) / self.step + 1e-9) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.integer else [round(v, 12) for v in values]


Knob = Range | list[Scalar] | Scalar
"""A searched value: a range, a list of choices, or one fixed value."""


class GenerateSpace(BaseModel):
    """The first layer: samples from one of ``models``."""

    model_config = ConfigDict(extra="forbid")

    models: list[str | dict[str, Any]] = Field(
        min_length=1,
        description="Models that may generate: registered names or model specs, or `installed` "
        "for every embedded model installed here (the pool of `ponder models`).",
    )
    n: Knob = Field(default_factory=lambda: list[Scalar]([1, 4, 8]), description="Samples.")
    temperature: Knob = 0.7
    max_tokens: int = Field(256, ge=1, le=131072)
    fixed: dict[str, Any] = Field(
        default_factory=dict,
        description="Other generate fields set as they are (stop, cot, top_k_tokens, ...).",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _pool(cls, value: Any) -> Any:
        if value != "installed":
            return value
        from ponder.models import MODELS

        installed = [name for name, entry in MODELS.items() if entry.installed()]
        if not installed:
            raise ValueError("`installed`: no embedded model is installed (see `ponder models`)")
        return installed


class LayerSpace(BaseModel):
    """A layer that may follow generation: a component ``type``, whether it may be left out, the
    component fields searched (``knobs``) and those set as they are (``fixed``)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    optional: bool = True
    with_previous: bool = Field(
        False,
        description="In the system exactly when the layer before it is (e.g. unit_test_eval "
        "after unit_tests); asks no decision of its own.",
    )
    knobs: dict[str, Knob] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        names = sorted(component_types())
        if value not in names:
            raise ValueError(f"unknown component type {value!r}; choose one of: {', '.join(names)}")
        return value


class Constraints(BaseModel):
    """Limits every proposed system must meet (see the module doc for when each is enforced)."""

    model_config = ConfigDict(extra="forbid")

    max_layers: int | None = Field(None, ge=1, description="Layers, generation included.")
    max_calls: float | None = Field(None, gt=0, description="Mean model calls per query.")
    max_tokens_per_query: float | None = Field(None, gt=0, description="Mean tokens per query.")


class SearchSpace(BaseModel):
    """What ``ponder search`` may build: generation, then optional layers in the order given."""

    model_config = ConfigDict(extra="forbid")

    name: str = "space"
    description: str = ""
    generate: GenerateSpace
    layers: list[LayerSpace] = Field(default_factory=list)
    extractor: str | None = Field(
        None, description="The systems' answer extractor (default: the system default, math)."
    )
    constraints: Constraints = Field(default_factory=Constraints)

    @classmethod
    def from_data(cls, data: Any, *, source: str | None = None) -> SearchSpace:
        """Validate a space mapping.

        Raises:
            ConfigError: listing every problem as ``path: what is wrong``.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"a search space must be a mapping{f' in {source}' if source else ''}, "
                f"got {type(data).__name__}",
                hint="start with `generate:` (see configs/search/*.yaml)",
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise config_error(
                exc, source, what="search space", examples="configs/search/"
            ) from None

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Read a space from a YAML or JSON file."""
        raw = read_user_file(Path(path), "search space", hint="check the path of the space file")
        try:
            data = yaml.safe_load(raw.decode("utf-8", errors="replace"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        return cls.from_data(data, source=str(path))

    def digest(self) -> str:
        """A hash of everything that defines the space (names a study, detects a changed space)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class Suggester(Protocol):
    """Answers the questions a proposal asks: one per decision, each with a stable ``name``."""

    def choose(self, name: str, choices: Sequence[Any]) -> Any:
        """One of ``choices``."""
        ...

    def number(self, name: str, knob: Range) -> float | int:
        """A value in ``knob``'s range."""
        ...


@dataclass(frozen=True)
class Proposal:
    """A proposed system: its config (a valid system config mapping), the decisions that made it,
    and the constraints it breaks (empty when feasible)."""

    config: dict[str, Any]
    params: dict[str, Any]
    violations: list[str] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return not self.violations


def _value(suggester: Suggester, name: str, knob: Knob) -> Any:
    if isinstance(knob, Range):
        return suggester.number(name, knob)
    if isinstance(knob, list):
        if not knob:
            raise ConfigError(f"{name}: an empty list of choices", hint="list at least one value")
        return knob[0] if len(knob) == 1 else suggester.choose(name, knob)
    return knob


def propose(space: SearchSpace, suggester: Suggester) -> Proposal:
    """Ask ``suggester`` every decision of ``space`` and build the system config it describes."""
    params: dict[str, Any] = {}

    def ask(name: str, knob: Any) -> Any:
        value = _value(suggester, name, knob)
        params[name] = value
        return value

    gen = space.generate
    labels = [m if isinstance(m, str) else json.dumps(m, sort_keys=True) for m in gen.models]
    label = ask("generate.model", labels)
    model = gen.models[labels.index(label)]
    layers: list[dict[str, Any]] = [
        {
            "type": "generate",
            "n": ask("generate.n", gen.n),
            "temperature": ask("generate.temperature", gen.temperature),
            "max_tokens": gen.max_tokens,
            **gen.fixed,
        }
    ]
    previous_in = True
    for i, layer in enumerate(space.layers):
        prefix = f"layers[{i}].{layer.type}"
        if layer.with_previous:
            if not previous_in:
                continue
        elif layer.optional and not ask(f"{prefix}.use", [True, False]):
            previous_in = False
            continue
        previous_in = True
        component = {"type": layer.type, **layer.fixed}
        for key, knob in layer.knobs.items():
            component[key] = ask(f"{prefix}.{key}", knob)
        layers.append(component)
    config = {
        "name": f"{space.name}-{_short(params)}",
        "description": f"proposed from search space {space.name!r}",
        "model": model,
        "layers": layers,
    }
    if space.extractor is not None:
        config["extractor"] = space.extractor
    violations = []
    try:
        SystemConfig.from_data(config, source=f"a proposal of search space {space.name!r}")
    except ConfigError as exc:
        # A combination the space allows but a system cannot be (e.g. a layer that needs one left
        # out before it): infeasible, never run, and the note says why.
        violations.append(f"not a valid system: {exc.message}")
    limit = space.constraints.max_layers
    if limit is not None and len(layers) > limit:
        violations.append(f"{len(layers)} layers, more than max_layers = {limit}")
    return Proposal(config=config, params=params, violations=violations)


def _short(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]


class RandomSuggester:
    """Uniform random decisions (log-uniform on log ranges) from a seeded generator."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def choose(self, name: str, choices: Sequence[Any]) -> Any:
        return choices[self._rng.randrange(len(choices))]

    def number(self, name: str, knob: Range) -> float | int:
        if knob.step is not None:
            return self._rng.choice(knob.grid(name))
        if knob.log:
            value = math.exp(self._rng.uniform(math.log(knob.low), math.log(knob.high)))
        else:
            value = self._rng.uniform(knob.low, knob.high)
        return round(value) if knob.integer else value


class _Replay:
    """Answers decisions from a fixed list of option indices, recording how many options each had."""

    def __init__(self, path: Sequence[int]) -> None:
        self.path = list(path)
        self.sizes: list[int] = []

    def _pick(self, options: Sequence[Any]) -> Any:
        depth = len(self.sizes)
        self.sizes.append(len(options))
        return options[self.path[depth] if depth < len(self.path) else 0]

    def choose(self, name: str, choices: Sequence[Any]) -> Any:
        return self._pick(choices)

    def number(self, name: str, knob: Range) -> float | int:
        value: float | int = self._pick(knob.grid(name))
        return value


def grid(space: SearchSpace) -> Iterator[Proposal]:
    """Every system of the space, once each (ranges need a ``step``), in a fixed order.

    Decisions depend on earlier ones (a left-out layer asks nothing about its knobs), so the grid is
    walked as a tree: each proposal is replayed from a path of option indices, and the next path is
    the odometer increment over the options that path actually met.
    """
    path: list[int] = []
    for _ in itertools.count():
        replay = _Replay(path)
        yield propose(space, replay)
        full = [path[i] if i < len(path) else 0 for i in range(len(replay.sizes))]
        # Increment the deepest decision that has options left; drop the ones after it.
        for depth in range(len(full) - 1, -1, -1):
            if full[depth] + 1 < replay.sizes[depth]:
                path = [*full[:depth], full[depth] + 1]
                break
        else:
            return
