"""Import of Archon's JSON config format (ScalingIntelligence/Archon).

Archon configs look like::

    {"name": "...", "layers": [[{"type": "generator", "model": "Qwen/Qwen2-72B-Instruct",
                                 "model_type": "Together_API", "temperature": 0.7,
                                 "max_tokens": 2048, "samples": 5}],
                               [{"type": "ranker", "model": ..., "top_k": 3}], ...]}

Component names map one to one (generator -> generate, critic -> critique, ranker -> rank,
fuser -> fuse, verifier -> judge in accept mode with filtering, unit_test_generator -> unit_tests,
unit_test_evaluator -> unit_test_eval), so ``layers[i][j]`` of the Archon config is ``layers[i][j]``
of the imported one. Archon's model names (hosted APIs) have no local equivalent: each one is
mapped through ``model_map`` (keyed by model name, or ``"<model_type>:<model>"``), or runs on
``default_model``; registered embedded model names map to themselves.

Differences by design: Ponder draws a generator's samples in one request, runs the components of a
layer concurrently, and answers with the first candidate (Archon picks a random one when several
remain).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ponder.errors import ConfigError
from ponder.models import MODELS
from ponder.systems._config import SystemConfig

ARCHON_TYPES = {
    "generator": "generate",
    "critic": "critique",
    "ranker": "rank",
    "fuser": "fuse",
    "verifier": "judge",
    "unit_test_generator": "unit_tests",
    "unit_test_evaluator": "unit_test_eval",
}
"""Archon component type -> Ponder component type."""

MODEL_TYPES = frozenset(
    {
        "Together_API",
        "OpenAI_API",
        "Anthropic_API",
        "Groq_API",
        "Google_API",
        "Bedrock_API",
        "tgi",
        "vLLM",
    }
)
"""Archon's built-in model types (custom generators cannot be imported)."""

_COMMON = {"type", "model", "model_type", "temperature", "max_tokens"}
# Keys Archon itself ignores for a component (they change nothing there, so dropping them is exact):
# max_context_length is only read by commented-out code, a generator's or fuser's top_k is unused,
# and single-reply components use only the first of their `samples` replies.
_IGNORED: dict[str, set[str]] = {
    "generator": {"max_context_length", "top_k"},
    "critic": {"max_context_length", "samples"},
    "ranker": {"max_context_length", "samples", "ranker_batch_size"},
    "fuser": {"max_context_length", "top_k"},
    "verifier": {"max_context_length", "samples"},
    "unit_test_generator": {"max_context_length", "samples"},
    "unit_test_evaluator": {
        "max_context_length",
        "samples",
        "unit_test_cap",
        # Ponder's evaluator never sees unit tests inside the query, which is what this removes.
        "remove_unit_tests_from_prompt",
    },
}
_MAPPED: dict[str, set[str]] = {
    # no_system drops Archon's added "You are a helpful assistant" message; Ponder adds none anyway.
    "generator": {"samples", "no_system"},
    "critic": set(),
    "ranker": {"top_k", "use_critiques"},
    "fuser": {"samples", "length_control"},
    "verifier": {"first_k"},
    "unit_test_generator": {"unit_test_cap"},
    "unit_test_evaluator": {"top_k", "first_k", "first_pass"},
}

ModelTarget = str | Mapping[str, Any]
"""What an Archon model maps to: a Ponder model ref (a name or a spec mapping)."""


def looks_like_archon(data: Any) -> bool:
    """Whether ``data`` is an Archon config (its component types are Archon's names)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("layers"), list):
        return False
    found = [
        c.get("type")
        for layer in data["layers"]
        for c in _layer_items(layer)
        if isinstance(c, Mapping)
    ]
    return bool(found) and all(t in ARCHON_TYPES for t in found)


def _layer_items(layer: Any) -> list[Any]:
    if isinstance(layer, Mapping):  # Archon's older form: {"models": [...], "branches": 1}
        models = layer.get("models")
        return models if isinstance(models, list) else []
    return layer if isinstance(layer, list) else []


def convert_archon(
    data: Mapping[str, Any],
    *,
    model_map: Mapping[str, ModelTarget] | None = None,
    default_model: ModelTarget | None = None,
) -> dict[str, Any]:
    """An Archon config as a Ponder config mapping (validate it with ``SystemConfig.from_data``).

    Raises:
        ConfigError: listing every key or value that cannot be mapped, by layer and component.
    """
    models = dict(model_map or {})
    problems: list[str] = []
    for key in data:
        if key == "custom" and not data[key]:
            continue
        if key == "custom":
            problems.append("custom: Archon custom components cannot be imported")
        elif key not in ("name", "layers"):
            problems.append(f"{key}: unknown top-level key (Archon configs have name and layers)")
    raw_layers = data.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        problems.append("layers: must be a non-empty list of layers")
        raw_layers = []
    layers: list[list[dict[str, Any]]] = []
    for i, layer in enumerate(raw_layers):
        if isinstance(layer, Mapping):
            extra = sorted(set(layer) - {"models", "branches"})
            if extra:
                problems.append(f"layers[{i}]: cannot map key(s) {', '.join(extra)}")
            if layer.get("branches", 1) != 1:
                problems.append(
                    f"layers[{i}].branches: {layer['branches']!r} cannot be mapped (only 1)"
                )
        elif not isinstance(layer, list):
            problems.append(f"layers[{i}]: must be a list of components")
            continue
        converted = []
        for j, item in enumerate(_layer_items(layer)):
            where = f"layers[{i}][{j}]"
            if not isinstance(item, Mapping):
                problems.append(f"{where}: must be a mapping")
                continue
            converted.append(_component(item, where, models, default_model, problems.append))
        layers.append(converted)
    if problems:
        raise ConfigError(
            "cannot import Archon config: " + "; ".join(problems),
            hint=_MODEL_HINT if any("no local equivalent" in p for p in problems) else None,
        )
    out: dict[str, Any] = {"name": f"archon:{data.get('name', 'system')}", "layers": layers}
    if default_model is not None:
        out["model"] = default_model
    out["description"] = "imported from an Archon config"
    return out


_MODEL_HINT = (
    "map each Archon model to a local one, e.g. model_map={'Qwen/Qwen2-72B-Instruct': "
    "'qwen2.5-coder-0.5b'} (CLI: --model-map 'Qwen/Qwen2-72B-Instruct=qwen2.5-coder-0.5b'), "
    "or give a default model for all of them (CLI: --default-model qwen2.5-coder-0.5b)"
)


def _component(
    item: Mapping[str, Any],
    where: str,
    models: Mapping[str, ModelTarget],
    default_model: ModelTarget | None,
    problem: Callable[[str], None],
) -> dict[str, Any]:
    kind = item.get("type")
    if kind not in ARCHON_TYPES:
        known = ", ".join(ARCHON_TYPES)
        problem(f"{where}.type: {kind!r} cannot be mapped (Archon types: {known})")
        return {}
    where = f"{where} ({kind})"
    out: dict[str, Any] = {"type": ARCHON_TYPES[kind]}
    allowed = _COMMON | _IGNORED[kind] | _MAPPED[kind]
    for key in item:
        if key not in allowed:
            problem(f"{where}: key {key!r} cannot be mapped")
    for key in ("temperature", "max_tokens"):
        if key in item:
            out[key] = item[key]
    model = item.get("model")
    model_type = item.get("model_type")
    if model_type is not None and model_type not in MODEL_TYPES:
        problem(
            f"{where}.model_type: {model_type!r} cannot be mapped (a custom Archon generator; "
            f"known: {', '.join(sorted(MODEL_TYPES))})"
        )
    if model == "llm-blender/PairRM":
        problem(
            f"{where}.model: the PairRM reward-model ranker cannot be mapped; "
            "use an LLM ranker (any chat model) instead"
        )
    elif not isinstance(model, str):
        problem(f"{where}.model: must be a model name (got {model!r})")
    else:
        target = models.get(f"{model_type}:{model}", models.get(model))
        if target is None and model in MODELS:
            target = model
        if target is not None:
            out["model"] = target
        elif default_model is None:
            problem(f"{where}.model: {model!r} ({model_type}) has no local equivalent")

    def positive(key: str) -> Any:
        value = item[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problem(f"{where}.{key}: must be a whole number >= 1 (got {value!r})")
        return value

    if kind == "generator":
        if "samples" in item:
            out["n"] = positive("samples")
    elif kind == "ranker":
        if "top_k" in item:
            out["top_k"] = positive("top_k")
        # Archon's ranker shows critiques only when asked to.
        out["use_critiques"] = bool(item.get("use_critiques", False))
    elif kind == "fuser":
        if "samples" in item:
            out["n"] = positive("samples")
        if item.get("length_control"):
            out["concise"] = True
    elif kind == "verifier":
        out.update(mode="accept", filter=True)
        if item.get("first_k") is not None:
            out["top_k"] = positive("first_k")
    elif kind == "unit_test_generator":
        if item.get("unit_test_cap") is not None:
            out["max_tests"] = positive("unit_test_cap")
    elif kind == "unit_test_evaluator":
        # Archon ranks by tests passed (stable) and returns the first first_k candidates that pass
        # every test, else the top_k; with a stable sort both are the first k of the ranking.
        first_k = item.get("first_k")
        if first_k is None and item.get("first_pass"):
            first_k = 1
        if first_k is not None:
            out["top_k"] = positive("first_k") if "first_k" in item else 1
        elif item.get("top_k") is not None:
            out["top_k"] = positive("top_k")
        else:
            out["top_k"] = None  # Archon keeps them all, ranked
    return out


def import_archon(
    data: Mapping[str, Any],
    *,
    model_map: Mapping[str, ModelTarget] | None = None,
    default_model: ModelTarget | None = None,
    source: str | None = None,
) -> SystemConfig:
    """Validate an Archon config as a Ponder :class:`SystemConfig` (see :func:`convert_archon`)."""
    converted = convert_archon(data, model_map=model_map, default_model=default_model)
    return SystemConfig.from_data(converted, source=source)
