"""Import of Archon's JSON config format (ScalingIntelligence/Archon).

Archon configs look like::

    {"name": "...", "layers": [[{"type": "generator", "model": "Qwen/Qwen2-72B-Instruct",
                                 "model_type": "Together_API", "temperature": 0.7,
                                 "max_tokens": 2048, "samples": 5}],
                               [{"type": "ranker", "model": ..., "top_k": 3}], ...]}

Component names map one to one (generator -> generate, critic -> critique, ranker -> rank,
fuser -> fuse, verifier -> judge in accept mode with filtering, unit_test_generator -> unit_tests,
unit_test_evaluator -> unit_test_eval), so ``layers[i][j]`` of the Archon config is ``layers[i][j]``
of the imported one (except where ``branches`` repeats a layer's components). Archon's model names
(hosted APIs) have no local equivalent: each one is mapped through ``model_map`` (keyed by model
name, or ``"<model_type>:<model>"``), or runs on ``default_model``; registered embedded model names
map to themselves.

Forms of the published configs that are imported:

* a layer as a list of components; as a single component object; or in the older form
  ``{"models": [...], "branches": k}``, where the layer's components are repeated ``k`` times
  (``archon-1-110bFuser-5-110bM``: five 110B generators; today's Archon code reads only ``models``);
* ``max_tokens`` above what any local model holds: lowered to the largest value a component takes,
  and at run time every call is limited to the model's context minus its prompt (recorded in the
  trace);
* the PairRM reward-model ranker (``llm-blender/PairRM``, ``model_type`` ``""``): a pairwise rank by
  a chat model (``model_map["llm-blender/PairRM"]``, else ``default_model``);
* keys with a local equivalent are mapped (``samples``, ``top_k``, ``first_k``, ``first_pass``,
  ``use_critiques``, ``length_control``, ``unit_test_cap``, ``no_system``); keys Archon reads but that
  change nothing there are dropped (``max_context_length``, a generator's ``top_k``, ...); keys with
  no local meaning (batch sizes, checkpoints, an older fuser's pre-ranking, the misspelled
  ``length_contorl``, ...) are accepted, and one :class:`ArchonImportWarning` per config names them
  (with every other change the import made; the same notes go into the config's description).

What cannot be imported raises a :class:`~ponder.errors.ConfigError` naming each field: unknown
component types or keys, custom components and generators, models without a mapping, and a
component that needs candidates in a layer before any generator (Archon itself fails on those: its
fuser asserts at least one candidate).

Differences by design: Ponder draws a generator's samples in one request, runs the components of a
layer concurrently, and answers with the first candidate (Archon picks a random one when several
remain).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ponder.errors import ConfigError
from ponder.models import MODELS
from ponder.systems._component import ModelComponentConfig
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

PAIRRM = "llm-blender/PairRM"
"""Archon's reward-model ranker; imported as a pairwise rank by a chat model."""


class ArchonImportWarning(UserWarning):
    """An Archon config was imported with changes (keys without local meaning, clamped values,
    a reward model replaced); the message names each one."""


_COMMON = {"type", "model", "model_type", "temperature", "max_tokens"}
# Keys Archon itself ignores for a component (they change nothing there, so dropping them is exact):
# max_context_length is only read by commented-out code, a generator's, critic's or fuser's top_k is
# unused, single-reply components use only the first of their `samples` replies, and Archon's fuser
# shows critiques whatever its use_critiques says (as Ponder's fuse does by default).
_IGNORED: dict[str, set[str]] = {
    "generator": {"max_context_length", "top_k"},
    "critic": {"max_context_length", "samples", "top_k"},
    "ranker": {"max_context_length", "samples"},
    "fuser": {"max_context_length", "top_k", "use_critiques"},
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
# Keys of published configs that have no local meaning: accepted, and named in the one warning.
_NO_LOCAL_MEANING: dict[str, str] = {
    "checkpoint": "a hosted model's checkpoint; local weights come from the model mapping",
    "ranker_batch_size": "a batch size of the PairRM reward model",
    "batch_num": "a batch setting today's Archon verifier does not read",
    "top_k_generations": "an older fuser's pre-ranking, which today's Archon fuser does not read",
    "fuse_generations_count": "an older fuser's setting, which today's Archon fuser does not read",
    "ranker_config": "an older fuser's PairRM pre-ranking, which today's Archon fuser does not read",
    "remove_unit_tests_from_prompt": "read by Archon's unit_test_evaluator only",
    "length_contorl": "a misspelling of length_control that Archon ignores, so no length control",
}
_MAX_TOKENS_LIMIT = max(
    (m.le for m in ModelComponentConfig.model_fields["max_tokens"].metadata if hasattr(m, "le")),
    default=131072,
)

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
    if isinstance(layer, Mapping) and "type" in layer:  # a layer of one component, unwrapped
        return [layer]
    if isinstance(layer, Mapping):  # Archon's older form: {"models": [...], "branches": 1}
        models = layer.get("models")
        return models if isinstance(models, list) else []
    return layer if isinstance(layer, list) else []


class _Notes:
    """What the import changed, gathered into one warning: ``key -> where`` and free notes."""

    def __init__(self) -> None:
        self.unused: dict[str, list[str]] = {}
        self.other: list[str] = []

    def key(self, key: str, where: str) -> None:
        self.unused.setdefault(key, []).append(where)

    def lines(self) -> list[str]:
        out = []
        if self.unused:
            parts = [
                f"{key} at {_places(where)}: {_NO_LOCAL_MEANING[key]}"
                for key, where in self.unused.items()
            ]
            out.append("keys without local meaning, ignored: " + "; ".join(parts))
        return out + self.other


def _places(where: list[str]) -> str:
    return (
        ", ".join(where) if len(where) <= 3 else f"{', '.join(where[:3])} and {len(where) - 3} more"
    )


def convert_archon(
    data: Mapping[str, Any],
    *,
    model_map: Mapping[str, ModelTarget] | None = None,
    default_model: ModelTarget | None = None,
) -> dict[str, Any]:
    """An Archon config as a Ponder config mapping (validate it with ``SystemConfig.from_data``).

    Args:
        data: The Archon config.
        model_map: Archon model (``name`` or ``"<model_type>:<name>"``) -> Ponder model.
        default_model: The model of every Archon model the map does not name.

    Warns:
        ArchonImportWarning: once, naming everything the import changed (the same notes go into
            the returned description).

    Raises:
        ConfigError: listing every key or value that cannot be mapped, by layer and component.
    """
    models = dict(model_map or {})
    problems: list[str] = []
    notes = _Notes()
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
    have_candidates = False
    for i, layer in enumerate(raw_layers):
        if not isinstance(layer, list | Mapping):
            problems.append(f"layers[{i}]: must be a list of components or one component")
            continue
        branches = _branches(layer, i, problems.append)
        items = _layer_items(layer)
        if not items:
            problems.append(f"layers[{i}]: has no components")
        converted = []
        for j, item in enumerate(items):
            where = f"layers[{i}][{j}]"
            if not isinstance(item, Mapping):
                problems.append(f"{where}: must be a mapping")
                continue
            if item.get("type") in ("fuser", "ranker", "critic") and not have_candidates:
                problems.append(
                    f"{where} ({item['type']}): no earlier layer makes candidates for it, and "
                    f"Archon itself fails on this config (its {item['type']} asserts at least one "
                    "candidate): move it to a layer after the generators"
                )
            converted.append(_component(item, where, models, default_model, problems.append, notes))
        have_candidates = have_candidates or any(
            isinstance(c, Mapping) and c.get("type") == "generator" for c in items
        )
        if branches > 1:
            notes.other.append(
                f"layers[{i}].branches {branches}: its {len(converted)} component(s) repeated "
                f"{branches} times"
            )
        layers.append(converted * branches)
    if problems:
        raise ConfigError(
            "cannot import Archon config: " + "; ".join(problems),
            hint=_MODEL_HINT if any("no local equivalent" in p for p in problems) else None,
        )
    name = data.get("name", "system")
    out: dict[str, Any] = {"name": f"archon:{name}", "layers": layers}
    if default_model is not None:
        out["model"] = default_model
    changes = notes.lines()
    out["description"] = "imported from an Archon config" + (
        "; changes: " + "; ".join(changes) if changes else ""
    )
    if changes:
        warnings.warn(
            f"Archon config {name!r} imported with changes: " + "; ".join(changes),
            ArchonImportWarning,
            stacklevel=3,
        )
    return out


def _branches(layer: Mapping[str, Any] | list[Any], i: int, problem: Callable[[str], None]) -> int:
    """How many times the older form ``{"models": [...], "branches": k}`` repeats its components."""
    if not isinstance(layer, Mapping) or "type" in layer:
        return 1
    extra = sorted(set(layer) - {"models", "branches"})
    if extra:
        problem(f"layers[{i}]: cannot map key(s) {', '.join(extra)}")
    branches = layer.get("branches", 1)
    if not isinstance(branches, int) or isinstance(branches, bool) or branches < 1:
        problem(f"layers[{i}].branches: must be a whole number >= 1 (got {branches!r})")
        return 1
    return branches


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
    notes: _Notes,
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
        if key in allowed:
            continue
        if key in _NO_LOCAL_MEANING:
            notes.key(key, where.split(" ")[0])
            continue
        close = difflib.get_close_matches(key, sorted(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problem(f"{where}: key {key!r} cannot be mapped{hint}")
    if "temperature" in item:
        out["temperature"] = item["temperature"]
    if "max_tokens" in item:
        out["max_tokens"] = item["max_tokens"]
        if isinstance(item["max_tokens"], int) and item["max_tokens"] > _MAX_TOKENS_LIMIT:
            out["max_tokens"] = _MAX_TOKENS_LIMIT
            notes.other.append(
                f"{where}.max_tokens {item['max_tokens']} lowered to {_MAX_TOKENS_LIMIT} "
                "(each call is further limited to the model's context minus its prompt)"
            )
    model = item.get("model")
    model_type = item.get("model_type")
    pairrm = kind == "ranker" and model == PAIRRM
    if model_type is not None and model_type not in MODEL_TYPES and not pairrm:
        problem(
            f"{where}.model_type: {model_type!r} cannot be mapped (a custom Archon generator; "
            f"known: {', '.join(sorted(MODEL_TYPES))})"
        )
    if not isinstance(model, str):
        problem(f"{where}.model: must be a model name (got {model!r})")
    else:
        target = models.get(f"{model_type}:{model}", models.get(model))
        if target is None and model in MODELS:
            target = model
        if target is not None:
            out["model"] = target
        elif default_model is None:
            what = "the PairRM reward model" if pairrm else f"{model!r} ({model_type})"
            problem(f"{where}.model: {what} has no local equivalent")
        if pairrm:
            used = target if target is not None else default_model
            notes.other.append(
                f"{where}: the PairRM reward-model ranker has no local equivalent; it ranks "
                f"pairwise with the chat model {_shown(used)} instead (map {PAIRRM!r} to choose it)"
            )

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
        if pairrm:
            out["mode"] = "pairwise"
        else:
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


def _shown(target: ModelTarget | None) -> str:
    if isinstance(target, Mapping):
        return f"{target.get('backend')}:{target.get('model')}"
    return repr(target) if target is not None else "(the system default)"


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
