"""Components: the registry, the config base classes, and what a component returns (a Delta).

A component is a class with a pydantic ``config_type`` whose ``type`` field is a ``Literal`` of the
name it is registered under::

    class ShoutConfig(ComponentConfig):
        type: Literal["shout"] = "shout"

    @register_component("shout")
    class Shout(Component[ShoutConfig]):
        config_type = ShoutConfig

        async def run(self, state: State, ctx: RunContext) -> Delta:
            changed = [ctx.revised(c, c.text.upper(), model=None) for c in state.candidates]
            return Delta(changed=changed)

Plugins: the ``ponder.components`` entry-point group, named after the component type (a module that
registers with :func:`register_component`, or the Component class itself).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from ponder._registry import loaded, lookup, names, registering, set_adopter
from ponder.errors import ConfigError
from ponder.records import SamplingParams
from ponder.systems._models import ModelRef
from ponder.systems._prompts import check_template
from ponder.systems._state import Candidate, Critique, State

if TYPE_CHECKING:
    from ponder.systems._context import RunContext

Placement = Literal["append", "prepend", "replace"]


class ComponentConfig(BaseModel):
    """Fields every component has."""

    model_config = ConfigDict(extra="forbid")

    type: str
    label: str | None = Field(
        None, description="Name in traces, usage and scores (default: the type)."
    )

    # What the component needs and makes; the system checks the order of layers against these.
    needs_candidates: ClassVar[bool] = True
    makes_candidates: ClassVar[bool] = False
    makes_unit_tests: ClassVar[bool] = False
    needs_unit_tests: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.label or self.type

    def model_refs(self) -> list[ModelRef | None]:
        """The models this component calls (None: the system default)."""
        return []

    def describe(self) -> str:
        """A short summary such as ``rank(top_k=3)``."""
        return self.type


class ModelComponentConfig(ComponentConfig):
    """Fields of components that call a model: the model, sampling, prompts, repair retries."""

    model: ModelRef | None = Field(None, description="Default: the system's model.")
    temperature: float = Field(0.2, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k_tokens: int = Field(0, ge=0, description="Sample from the k likeliest tokens; 0: off.")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="Drop tokens below min_p x the top one.")
    max_tokens: int = Field(512, ge=1, le=131072)
    stop: list[str] = Field(default_factory=list)
    system_prompt: str | None = Field(
        None, description="Replaces the component's built-in system message ('' for none)."
    )
    template: str | None = Field(
        None, description="Replaces the built-in user prompt; uses the same $placeholders."
    )
    repair_retries: int | None = Field(
        None,
        ge=0,
        le=10,
        description="Repair prompts after an unparseable reply (default: the system's).",
    )

    template_placeholders: ClassVar[frozenset[str]] = frozenset({"query"})

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value, cls.template_placeholders)
        return value

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: list[str]) -> list[str]:
        if any(s == "" for s in value):
            raise ValueError("stop strings must be non-empty")
        return value

    @model_serializer(mode="wrap")
    def _omit_truncation_off(self, handler: Any) -> Any:
        # Left out while off, so a config's dump (hence a system run's id) is what it was before
        # these fields existed; ``top_k_tokens`` is not ``top_k``, which rank/judge use for candidates.
        data = handler(self)
        for key in ("top_k_tokens", "min_p"):
            if isinstance(data, dict) and data.get(key) == 0:
                del data[key]
        return data

    def model_refs(self) -> list[ModelRef | None]:
        return [self.model]

    def sampling(self, seed: int, **overrides: Any) -> SamplingParams:
        """Sampling parameters of one call."""
        values: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k_tokens,
            "min_p": self.min_p,
            "max_tokens": self.max_tokens,
            "stop": tuple(self.stop),
            "seed": seed,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingParams(**values)


@dataclass
class Delta:
    """What a component did to the state; the layer merges the deltas of its components.

    Attributes:
        new: Candidates it produced.
        placement: Where ``new`` goes: after the surviving candidates (``append``), before them
            (``prepend``), or instead of them (``replace``).
        changed: Candidates it changed in place (same id, a higher version).
        keep: Ids it kept, or None when it does not select.
        reorder: Whether ``keep`` is a new order (rank, vote) or only a filter (keeps the order).
        scores: Its score of each candidate, by candidate id (stored under its label).
        critiques: Critiques it wrote.
        unit_tests: Unit tests it wrote.
    """

    new: list[Candidate] = field(default_factory=list)
    placement: Placement = "append"
    changed: list[Candidate] = field(default_factory=list)
    keep: list[str] | None = None
    reorder: bool = False
    scores: dict[str, float] = field(default_factory=dict)
    critiques: list[Critique] = field(default_factory=list)
    unit_tests: list[str] = field(default_factory=list)


CfgT = TypeVar("CfgT", bound=ComponentConfig)


class Component(ABC, Generic[CfgT]):
    """A unit of a system: reads the state, returns a :class:`Delta`.

    Components hold only their config; everything about one run (backends, seeds, the trace) comes
    in through the :class:`~ponder.systems.RunContext`, so one instance serves concurrent queries.
    """

    config_type: ClassVar[type[ComponentConfig]]

    def __init__(self, config: CfgT) -> None:
        self.config = config

    @abstractmethod
    async def run(self, state: State, ctx: RunContext) -> Delta:
        """Do the component's work on ``state``."""


C = TypeVar("C", bound=type[Component[Any]])


def _adopt(name: str, obj: object) -> type[Component[Any]]:
    """Check that ``obj`` can be the component ``name``: a Component class whose
    ``config_type.type`` is ``Literal[name]``."""
    if not (isinstance(obj, type) and issubclass(obj, Component)):
        raise ConfigError(f"component plugin {name!r}: {obj!r} is not a Component class")
    annotation = obj.config_type.model_fields["type"].annotation
    if get_args(annotation) != (name,):
        raise ConfigError(
            f"component {obj.__name__}: config_type.type must be Literal[{name!r}]",
            hint=f'declare `type: Literal["{name}"] = "{name}"` on {obj.config_type.__name__}',
        )
    return obj


set_adopter("component", _adopt)


def register_component(name: str) -> Callable[[C], C]:
    """Register a component class under ``name`` (decorator).

    Raises:
        ConfigError: the class's ``config_type.type`` is not ``Literal[name]``.
        DuplicateNameError: another class already has the name.
    """
    return registering("component", name)


def component_types() -> dict[str, type[Component[Any]]]:
    """All registered component classes by name (built-ins and plugins that load)."""
    return cast(dict[str, type[Component[Any]]], loaded("component"))


def component_names() -> list[str]:
    """Names of all component types, including plugins that failed to load (their lookup says why)."""
    return names("component")


def component_class(name: str) -> type[Component[Any]]:
    """The component class registered as ``name``.

    Raises:
        UnknownNameError: no such component (the message lists the valid ones).
        PluginLoadError: the plugin that provides it failed to load.
    """
    return cast(type[Component[Any]], lookup("component", name))
