"""Loading a system config with the caller's model choices (the rules behind ``ponder run``'s
``--model``, ``--default-model`` and ``--model-map``).

* ``model`` replaces the system's default model (the model of every component that names none). A
  name or ``.gguf`` path runs on the embedded engine and keeps the other engine options of an
  embedded default (slots, context per sequence), so a config tuned for long prompts stays tuned; a
  spec mapping (``{"backend": "openai", "model": ..., "base_url": ...}``) replaces it whole.
* ``default_model`` and ``model_map`` apply to Archon configs only (their hosted model names need a
  local equivalent): ``model_map`` maps an Archon model (``name`` or ``"<model_type>:<name>"``) to a
  Ponder model, ``default_model`` runs every Archon model the map does not name, and defaults to
  ``model``.

* ``top_k`` and ``min_p`` set the token truncation of every component that calls a model (its
  ``top_k_tokens`` and ``min_p``), overriding the config; left out (None), the config's stand.
  Truncation is part of the config, hence of a system run's identity.
* ``max_tokens`` caps the completion tokens of every model call: each token limit of a component
  that calls a model (``max_tokens``, ``critic_max_tokens``, a tree search's ``max_step_tokens``,
  its scorer's ``max_tokens``, an ensemble member's) above it is lowered to it; limits below it
  stand. Part of the config too, hence of the run's identity (a quick try on a slow machine is a
  run of its own, never mixed with the full-length one).

Each model may also be given as text (as on a command line): a name, a ``.gguf`` path, or a JSON
model spec starting with ``{``; see :func:`parse_model` and :func:`parse_model_map`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from ponder.errors import ConfigError
from ponder.systems._archon import ModelTarget, import_archon, looks_like_archon
from ponder.systems._component import ModelComponentConfig
from ponder.systems._config import SystemConfig, read_config_file
from ponder.systems._models import ModelSpec

SPEC_EXAMPLE = '{"backend": "llamacpp", "model": "smollm2-135m"}'


def parse_model(text: str, *, what: str = "model") -> ModelTarget:
    """A model given as text: a name or ``.gguf`` path as is, a JSON model spec as a mapping.

    Raises:
        ConfigError: ``text`` starts with ``{`` but is not valid JSON (``what`` names the source).
    """
    text = text.strip()
    if not text.startswith("{"):
        return text
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{what}: invalid JSON model spec ({exc.msg} at column {exc.colno})",
            hint=f"e.g. {SPEC_EXAMPLE}",
        ) from None
    assert isinstance(spec, dict)  # JSON text that starts with '{' is an object
    return spec


def parse_model_map(items: Iterable[str], *, what: str = "model map") -> dict[str, ModelTarget]:
    """``ARCHON_MODEL=MODEL`` pairs as a model map (the Archon name may hold ``:`` and ``/``, not
    ``=``); MODEL is parsed by :func:`parse_model`.

    Raises:
        ConfigError: an item is not a pair, or its model spec is invalid.
    """
    out: dict[str, ModelTarget] = {}
    for item in items:
        name, sep, target = item.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ConfigError(
                f"{what}: expected ARCHON_MODEL=MODEL, got {item!r}",
                hint="e.g. 'Qwen/Qwen2-72B-Instruct=qwen2.5-coder-0.5b'",
            )
        out[name.strip()] = parse_model(target, what=what)
    return out


def _target(value: ModelTarget, what: str) -> ModelTarget:
    return parse_model(value, what=what) if isinstance(value, str) else value


def load_config(
    source: str | Path | Mapping[str, Any] | SystemConfig,
    *,
    model: ModelTarget | None = None,
    default_model: ModelTarget | None = None,
    model_map: Mapping[str, ModelTarget] | None = None,
    named: Collection[str] = (),
    top_k: int | None = None,
    min_p: float | None = None,
    max_tokens: int | None = None,
) -> SystemConfig:
    """The config in ``source`` (a YAML/JSON file, a mapping, or a config), with the model choices
    and token truncation applied (see the module docstring).

    Args:
        source: A Ponder or Archon config (Archon configs are recognised and imported).
        model: Replaces the system's default model.
        default_model: Archon configs: the model of every Archon model the map does not name.
        model_map: Archon configs: Archon model -> Ponder model.
        named: Names of backends the caller passes to the system (a string ``model`` naming one
            of them is kept as that name).
        top_k: Sample every model call from its ``top_k`` likeliest tokens (0: off).
        min_p: Drop tokens below ``min_p`` times the likeliest one in every model call (0: off).
        max_tokens: Cap the completion tokens of every model call.

    Raises:
        ConfigError: an invalid config or model, or ``default_model``/``model_map`` given for a
            Ponder config.
        NotFoundError: the file does not exist.
    """
    model = None if model is None else _target(model, "model")
    default_model = None if default_model is None else _target(default_model, "default model")
    mapped = {k: _target(v, f"model map {k!r}") for k, v in (model_map or {}).items()}
    where = None
    if isinstance(source, SystemConfig):
        data: Mapping[str, Any] | None = None
        config = source
    else:
        if isinstance(source, Mapping):
            data = source
        else:
            where = str(source)
            data = read_config_file(source)
    if data is not None and looks_like_archon(data):
        config = import_archon(
            data,
            model_map=mapped,
            default_model=default_model if default_model is not None else model,
            source=where,
        )
    else:
        if mapped or default_model is not None:
            raise ConfigError(
                "a model map and a default model apply to Archon configs only",
                hint=f"{where or 'this'} is a Ponder config: set `model:` in it, or replace its "
                "default model (CLI: --model)",
            )
        if data is not None:
            config = SystemConfig.from_data(data, source=where)
    if model is not None:
        config = with_default_model(config, model, named=named, source=where)
    config = with_truncation(config, top_k=top_k, min_p=min_p, source=where)
    return config if max_tokens is None else with_token_cap(config, max_tokens, source=where)


def with_default_model(
    config: SystemConfig,
    model: ModelTarget,
    *,
    named: Collection[str] = (),
    source: str | None = None,
) -> SystemConfig:
    """``config`` with its default model replaced by ``model`` (see the module docstring).

    Raises:
        ConfigError: ``model`` is not a valid model.
    """
    ref: Any = model
    if isinstance(model, str) and model not in named:
        ref = {"backend": "llamacpp", "model": model}
    old = config.model
    embedded = isinstance(old, ModelSpec) and old.backend == "llamacpp"
    if isinstance(ref, Mapping) and ref.get("backend") == "llamacpp" and embedded:
        assert isinstance(old, ModelSpec)
        ref = {**old.options, **ref}
    return SystemConfig.from_data({**config.model_dump(mode="json"), "model": ref}, source=source)


def with_truncation(
    config: SystemConfig,
    *,
    top_k: int | None = None,
    min_p: float | None = None,
    source: str | None = None,
) -> SystemConfig:
    """``config`` with ``top_k`` as the ``top_k_tokens`` and ``min_p`` as the ``min_p`` of every
    component that calls a model (None: as in the config); see the module docstring.

    Raises:
        ConfigError: a value out of range (naming each component).
    """
    values = {k: v for k, v in (("top_k_tokens", top_k), ("min_p", min_p)) if v is not None}
    if not values:
        return config
    return _with_model_components(config, lambda item: item.update(values), source)


def _with_model_components(
    config: SystemConfig, change: Callable[[dict[str, Any]], None], source: str | None
) -> SystemConfig:
    """``config`` rebuilt with ``change`` applied to the data of every component that calls a
    model."""
    data = config.model_dump(mode="json")
    for layer_data, layer in zip(data["layers"], config.layers, strict=True):
        for item, component in zip(layer_data, layer, strict=True):
            if isinstance(component, ModelComponentConfig):
                change(item)
    return SystemConfig.from_data(data, source=source)


def _is_token_limit(key: str) -> bool:
    return key in ("max_tokens", "max_step_tokens") or key.endswith("_max_tokens")


def _cap(data: Any, cap: int) -> None:
    """Lower every token limit above ``cap`` in a component's data (nested: steps, scorer,
    ensemble members)."""
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        if isinstance(value, dict | list):
            _cap(value, cap)
        elif isinstance(key, str) and _is_token_limit(key) and isinstance(value, int):
            data[key] = min(value, cap)


def with_token_cap(
    config: SystemConfig, max_tokens: int, *, source: str | None = None
) -> SystemConfig:
    """``config`` with the completion tokens of every model call capped at ``max_tokens`` (see the
    module docstring).

    Raises:
        ConfigError: ``max_tokens`` below 1.
    """
    if max_tokens < 1:
        raise ConfigError(
            f"max_tokens must be >= 1, got {max_tokens}", hint="pass a positive token count"
        )
    return _with_model_components(config, lambda item: _cap(item, max_tokens), source)
