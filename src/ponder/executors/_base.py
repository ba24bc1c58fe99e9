"""What an executor is, and the registry of executor kinds.

An executor decides *where* a run's work happens; the drivers (:mod:`ponder.runs`, systems,
search) decide *what* is done and alone write the store. An executor hands them backends and
verifiers that look like any other: the local executor builds them in this process, the Ray
executor builds each on actors of a cluster and sends every request to one of them. Because a
driver sends the same requests through either, a run's identity, its seeds and its samples do not
depend on the executor.
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import BaseModel

from ponder._registry import lookup, names, register, set_adopter
from ponder.errors import ConfigError

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.verify import Verifier

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Executor(ABC):
    """Where backends run and verification happens. Close it after use (or use ``with``)."""

    name: str = "executor"

    @abstractmethod
    def backend(self, config: BaseModel) -> Backend:
        """The backend described by ``config`` (a backend config, as for
        :func:`ponder.backends.create_backend`), running where this executor runs work."""

    @abstractmethod
    def verifier(self, kind: str) -> Verifier:
        """A verifier of ``kind`` (as :func:`ponder.verify.make_verifier`) that judges where this
        executor runs work; its name, hence the stored verdicts, is the same everywhere."""

    def close(self) -> None:
        """Release what the executor started (idempotent)."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class _ExecutorKind:
    config_type: type[BaseModel]
    factory: Callable[[Any], Executor]


def register_executor(
    kind: str, config_type: type[ConfigT]
) -> Callable[[Callable[[ConfigT], Executor]], Callable[[ConfigT], Executor]]:
    """Register an executor factory under ``kind`` (decorator); ``config_type`` is its pydantic
    config, with a field ``kind: Literal[kind]``."""
    field = config_type.model_fields.get("kind")
    if field is None or kind not in typing.get_args(field.annotation):
        raise ConfigError(
            f"executor {kind!r}: {config_type.__name__} needs a field `kind` that accepts {kind!r}",
            hint=f'declare `kind: Literal["{kind}"] = "{kind}"` on {config_type.__name__}',
        )

    def deco(factory: Callable[[ConfigT], Executor]) -> Callable[[ConfigT], Executor]:
        register("executor", kind, _ExecutorKind(config_type, factory), source=factory)
        return factory

    return deco


def _adopt(kind: str, obj: object) -> _ExecutorKind:
    if isinstance(obj, _ExecutorKind):
        return obj
    raise TypeError(
        f"executor {kind!r}: {obj!r} is not registered with ponder.executors.register_executor"
    )


set_adopter("executor", _adopt)


def _kind(kind: str) -> _ExecutorKind:
    found = lookup("executor", kind)
    if not isinstance(found, _ExecutorKind):
        raise AssertionError(f"executor {kind!r} is registered as {found!r}")
    return found


def executor_kinds() -> list[str]:
    """Names of all executor kinds: built-in and installed plugins."""
    return names("executor")


def executor_config_type(kind: str) -> type[BaseModel]:
    """The pydantic config class of executor ``kind``."""
    return _kind(kind).config_type


def create_executor(config: BaseModel) -> Executor:
    """Start the executor described by ``config`` (its ``kind`` field selects the factory)."""
    kind = getattr(config, "kind", None)
    if not isinstance(kind, str):
        raise ConfigError("executor config has no 'kind' field")
    entry = _kind(kind)
    if not isinstance(config, entry.config_type):
        config = entry.config_type.model_validate(config.model_dump())
    return entry.factory(config)
