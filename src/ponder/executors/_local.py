"""The local executor: everything in this process (the default)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from ponder.executors._base import Executor, register_executor

if TYPE_CHECKING:
    from ponder.backends import Backend
    from ponder.verify import Verifier


class LocalConfig(BaseModel):
    """Config of the local executor (it has no options)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local"] = "local"


class LocalExecutor(Executor):
    """Backends and verifiers in this process; requests run concurrently on its event loop."""

    name = "local"

    def backend(self, config: BaseModel) -> Backend:
        from ponder.backends import create_backend

        return create_backend(config)

    def verifier(self, kind: str) -> Verifier:
        from ponder.verify import make_verifier

        return make_verifier(kind)


@register_executor("local", LocalConfig)
def _make_local(config: LocalConfig) -> LocalExecutor:
    return LocalExecutor()
