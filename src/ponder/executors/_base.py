"""What an executor is, and the registry of executor kinds.

An executor decides *where* a run's work happens; the drivers (:mod:`ponder.runs`, systems,
search) decide *what* is done and alone write the store. An executor hands them backends and
verifiers that look like any other: the local executor builds them in this process, the Ray
executor builds each on actors of a cluster and sends every request to one of them. Because a
driver sends the same requests through either, a run's identity, its seeds and its samples do not
depend on the executor.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from ponder._closing import Closing
from ponder._configured import adopter, build, configured, register_configured
from ponder._registry import names, set_adopter

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.verify import Verifier

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Executor(Closing):
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
        """Release what the executor started (idempotent; nothing by default)."""
        return None


def register_executor(
    kind: str, config_type: type[ConfigT]
) -> Callable[[Callable[[ConfigT], Executor]], Callable[[ConfigT], Executor]]:
    """Register an executor factory under ``kind`` (decorator); ``config_type`` is its pydantic
    config, with a field ``kind: Literal[kind]``."""

    def deco(factory: Callable[[ConfigT], Executor]) -> Callable[[ConfigT], Executor]:
        register_configured("executor", "executor", kind, config_type, factory)
        return factory

    return deco


set_adopter("executor", adopter("executor", "ponder.executors.register_executor"))


def executor_kinds() -> list[str]:
    """Names of all executor kinds: built-in and installed plugins."""
    return names("executor")


def executor_config_type(kind: str) -> type[BaseModel]:
    """The pydantic config class of executor ``kind``."""
    return configured("executor", kind).config_type


def create_executor(config: BaseModel) -> Executor:
    """Start the executor described by ``config`` (its ``kind`` field selects the factory)."""
    executor: Executor = build("executor", "executor", config)
    return executor
