"""System configs: validation, error messages that name the field, and reading config files.

A config is a mapping (YAML or JSON)::

    name: sample-8-vote
    model: {backend: llamacpp, model: qwen2.5-coder-0.5b}   # default model of all components
    layers:
      - - type: generate
          n: 8
      - - type: vote

Each layer is a list of components (a single mapping is a one-component layer). Each component
is selected by its ``type`` (see :mod:`ponder.systems.components`); unknown fields are errors.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ponder._files import read_user_file
from ponder.errors import ConfigError, UserError
from ponder.systems._component import (
    ComponentConfig,
    component_class,
    component_names,
    component_types,
)
from ponder.systems._extract import get_extractor
from ponder.systems._models import ModelRef, ModelSpec


class SystemConfig(BaseModel):
    """A system: ordered layers of components, and system-wide settings.

    Build one from data with :meth:`from_data` (errors become a :class:`ConfigError` that names
    each offending field), or in Python from component configs.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "system"
    description: str = ""
    model: ModelRef | None = Field(
        None, description="Default model of components that name none (default: embedded default)."
    )
    extractor: str = Field("math", description="How answers are extracted from candidate texts.")
    seed: int = Field(0, ge=0, lt=2**31, description="Base seed; every call derives its own.")
    repair_retries: int = Field(
        2, ge=0, le=10, description="Repair prompts after an unparseable reply, per call."
    )
    layers: list[list[SerializeAsAny[ComponentConfig]]] = Field(min_length=1)

    @field_validator("layers", mode="before")
    @classmethod
    def _single_component_layers(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [[layer] if isinstance(layer, Mapping) else layer for layer in value]
        return value

    @field_validator("extractor")
    @classmethod
    def _known_extractor(cls, value: str) -> str:
        try:
            get_extractor(value)
        except UserError as exc:  # unknown name, or its plugin failed to load
            raise ValueError(f"{exc.message}; {exc.hint}") from None
        return value

    @model_validator(mode="after")
    def _check_order(self) -> SystemConfig:
        check_structure(self.layers)
        return self

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Any:
        # The base class cannot tell component types apart; the typed subclass can.
        if cls is SystemConfig:
            return _typed_model().model_validate(obj, *args, **kwargs)
        return super().model_validate(obj, *args, **kwargs)

    @classmethod
    def from_data(cls, data: Any, *, source: str | None = None) -> SystemConfig:
        """Validate a config mapping.

        Raises:
            ConfigError: listing every problem as ``path: what is wrong (got value)``.
        """
        if not isinstance(data, Mapping):
            where = f" in {source}" if source else ""
            raise ConfigError(
                f"a system config must be a mapping{where}, got {type(data).__name__}",
                hint="start with `name:` and `layers:` (see configs/*.yaml)",
            )
        try:
            config = _typed_model().model_validate(dict(data))
        except ValidationError as exc:
            raise config_error(exc, source) from None
        assert isinstance(config, SystemConfig)
        return config

    def describe(self) -> str:
        """One line: ``generate(default x8) -> vote``."""
        return " -> ".join(" + ".join(c.describe() for c in layer) for layer in self.layers)


def check_structure(layers: list[list[ComponentConfig]]) -> None:
    """Check that every component gets what it needs from earlier layers.

    Raises:
        ValueError: naming the component (``layers[i][j]``) and the fix.
    """
    have_candidates = have_tests = False
    problems = []
    for i, layer in enumerate(layers):
        for j, c in enumerate(layer):
            if c.needs_candidates and not have_candidates:
                problems.append(
                    f"layers[{i}][{j}] ({c.type}) needs candidates, but no earlier layer makes "
                    "any; put a generate layer before it"
                )
            if c.needs_unit_tests and not have_tests:
                problems.append(
                    f"layers[{i}][{j}] ({c.type}) needs unit tests, but no earlier layer writes "
                    "them; put a unit_tests layer before it"
                )
        have_candidates = have_candidates or any(c.makes_candidates for c in layer)
        have_tests = have_tests or any(c.makes_unit_tests for c in layer)
    if not have_candidates:
        problems.append("no layer makes candidates; add a generate layer")
    if problems:
        raise ValueError("; ".join(problems))


_TYPED: dict[tuple[tuple[str, type[BaseModel]], ...], type[SystemConfig]] = {}


def _typed_model() -> type[SystemConfig]:
    """SystemConfig whose components are a union discriminated by ``type`` over the registry."""
    registry = component_types()
    key = tuple((name, cls.config_type) for name, cls in registry.items())
    if key not in _TYPED:
        configs = tuple(cls.config_type for cls in registry.values())
        member: Any = (
            Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007
            if len(configs) > 1
            else configs[0]
        )
        layer = Annotated[list[member], Field(min_length=1)]
        model = create_model(
            "SystemConfig",
            __base__=SystemConfig,
            __module__=__name__,
            layers=(list[layer], Field(min_length=1)),
        )
        _TYPED[key] = model
    return _TYPED[key]


# ----- error messages ---------------------------------------------------------------------------

_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}
# Union member tags pydantic puts into error locations; they are not fields.
_SYNTHETIC = {"model-name", "model-spec"}


def _fields_at(loc: tuple[int | str, ...]) -> list[str] | None:
    """Field names of the model at ``loc`` (for "did you mean"), where it can be found."""
    model: Any = _typed_model()
    registry = component_types()
    for part in loc:
        if isinstance(part, int) or part in _SYNTHETIC:
            continue
        fields = (
            model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
        )
        if part in fields:
            model = _inner_model(fields[part].annotation)
        elif part in registry:
            model = registry[part].config_type
        else:
            return None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


def _inner_model(annotation: Any) -> Any:
    """The single pydantic model inside list/Optional/Annotated wrappers, if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = [
        m
        for arg in typing.get_args(annotation)
        if (m := _inner_model(arg)) is not None and m is not ComponentConfig
    ]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is Union:
        found = [m for m in found if m is not ModelSpec]
    return found[0] if len(found) == 1 else None


def _path(loc: tuple[int | str, ...]) -> str:
    registry = component_types()
    out = ""
    for pos, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _SYNTHETIC or (pos == 3 and loc[0] == "layers" and part in registry):
            continue
        else:
            out += f".{part}" if out else part
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(error: Any) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    path = _path(loc)
    secret = any("key" in str(p) for p in loc)
    got = "" if secret or isinstance(value, dict | list) else f" (got {_shown(value)})"
    names = ", ".join(component_types())
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        message = f"must be {op} {ctx.get(key)}{got}"
    elif kind == "missing":
        message = "is required"
    elif kind == "extra_forbidden":
        field = str(loc[-1])
        valid = _fields_at(loc[:-1])
        message = "is not a known field"
        if valid:
            close = difflib.get_close_matches(field, valid, n=1)
            message += f" (did you mean {close[0]!r}?)" if close else ""
            message += f"; valid fields: {', '.join(valid)}"
    elif kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        close = difflib.get_close_matches(tag, list(component_types()), n=1)
        path += ".type"
        message = f"unknown component type {tag!r}"
        message += f" (did you mean {close[0]!r}?)" if close else ""
        message += f"; choose one of: {names}"
        if tag in component_names():  # listed but not loadable: its plugin failed to load
            try:
                component_class(tag)
            except UserError as exc:
                message = exc.message
    elif kind == "union_tag_not_found":
        message = f"a component needs a 'type' (one of: {names})"
    elif kind in ("model_type", "model_attributes_type", "dict_type") and "model-spec" in loc:
        message = f"must be a model name or a mapping like {{backend: llamacpp, model: NAME}}{got}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"must be a mapping{got}"
    elif kind == "too_short":
        message = f"must have at least {ctx.get('min_length')} item(s)"
    elif kind == "list_type":
        message = f"must be a list{got}"
    elif kind in ("value_error", "assertion_error"):
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    else:
        message = f"{str(error['msg'])[:1].lower()}{str(error['msg'])[1:]}{got}"
    return f"{path}: {message}" if path else message


def config_error(
    exc: ValidationError,
    source: str | None = None,
    *,
    what: str = "system config",
    examples: str = "the configs/ folder",
) -> ConfigError:
    """A ConfigError listing every validation problem with its field path."""
    problems = list(dict.fromkeys(_problem(e) for e in exc.errors(include_url=False)))
    where = f" {source}" if source else ""
    return ConfigError(
        f"invalid {what}{where}: " + "; ".join(problems),
        hint=f"fix the field(s) named above; {examples} has working examples",
    )


# ----- files -------------------------------------------------------------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or JSON config file.

    Raises:
        NotFoundError: no such file.
        ConfigError: the file is not valid YAML/JSON or not a mapping (naming the line).
    """
    path = Path(path)
    raw = read_user_file(path, "system config", hint="check the path (see configs/*.yaml)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint="save the config as UTF-8",
        ) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a system config must be a mapping, got {type(data).__name__}",
            hint="start with `name:` and `layers:` (see configs/*.yaml)",
        )
    return data
