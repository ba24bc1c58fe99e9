"""The Backend protocol and the backend registry."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from ponder.errors import ConfigError
from ponder.records import Generation, Prompt, SamplingParams


@runtime_checkable
class Backend(Protocol):
    """Generates n completions of one prompt.

    Implementations must draw all n completions of a request in a way that lets the engine share the prompt
    (one request with ``n`` where the engine supports it) and must report per-completion token counts.
    ``params.seed`` is the seed for this request; the sampler derives it from the run's base seed.
    """

    @property
    def identity(self) -> str:
        """A stable string naming backend + model; part of a run's identity."""
        ...

    @property
    def max_batch(self) -> int:
        """How many sequences this backend decodes together efficiently (used to size requests)."""
        ...

    async def generate(self, prompt: Prompt, n: int, params: SamplingParams) -> Generation:
        """Return ``n`` completions of ``prompt``."""
        ...

    async def aclose(self) -> None:
        """Release engines, connections and threads."""
        ...


ConfigT = TypeVar("ConfigT", bound=BaseModel)
BackendFactory = Callable[[Any], Backend]

_FACTORIES: dict[str, tuple[type[BaseModel], BackendFactory]] = {}

# Built-in backends whose modules load on first use (the openai client alone costs ~0.3 s to import).
_LAZY_BUILTINS = {"openai": "ponder.backends._openai"}


def register_backend(
    kind: str, config_type: type[ConfigT]
) -> Callable[[Callable[[ConfigT], Backend]], Callable[[ConfigT], Backend]]:
    """Register a backend factory under ``kind`` (decorator).

    Plugins register from a module named in the ``ponder.backends`` entry-point group.
    """

    def deco(factory: Callable[[ConfigT], Backend]) -> Callable[[ConfigT], Backend]:
        _FACTORIES[kind] = (config_type, factory)
        return factory

    return deco


def _load_plugins() -> None:
    for module in _LAZY_BUILTINS.values():
        import_module(module)
    for ep in entry_points(group="ponder.backends"):
        ep.load()


def backend_kinds() -> list[str]:
    """Names of all registered backend kinds."""
    _load_plugins()
    return sorted(_FACTORIES)


def backend_config_type(kind: str) -> type[BaseModel]:
    """The pydantic config class for backend ``kind``."""
    if kind not in _FACTORIES and kind in _LAZY_BUILTINS:
        import_module(_LAZY_BUILTINS[kind])
    if kind not in _FACTORIES:
        _load_plugins()
    if kind not in _FACTORIES:
        raise ConfigError(
            f"unknown backend {kind!r}",
            hint=f"choose one of: {', '.join(backend_kinds())}",
        )
    return _FACTORIES[kind][0]


def create_backend(config: BaseModel) -> Backend:
    """Instantiate the backend described by ``config`` (its ``kind`` field selects the factory)."""
    kind = getattr(config, "kind", None)
    if not isinstance(kind, str):
        raise ConfigError(
            "backend config has no 'kind' field", hint="set kind: llamacpp|openai|..."
        )
    config_type, factory = (backend_config_type(kind), _FACTORIES[kind][1])
    if not isinstance(config, config_type):
        config = config_type.model_validate(config.model_dump())
    return factory(config)
