"""Model specs in system configs, and the pool that shares one backend per identical spec."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Annotated, Any, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    SerializationInfo,
    Tag,
    ValidationError,
    model_serializer,
    model_validator,
)

from ponder._configured import validation_problem
from ponder.backends import Backend, backend_config_type, backend_kinds, create_backend
from ponder.errors import ConfigError, UserError
from ponder.models import DEFAULT_MODEL

RUN_IDENTITY = "run_identity"
"""Serialisation context key: dump a config as it enters a system run's identity."""


class ModelSpec(BaseModel):
    """Which backend and model a component uses.

    Written flat in configs: ``{"backend": "llamacpp", "model": "smollm2-135m"}`` or
    ``{"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}``. Every key other
    than ``backend`` is an option of that backend's config (checked against it, so typos fail early).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str
    options: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "options" not in data:
            if "backend" not in data:
                kinds = ", ".join(backend_kinds())
                raise ValueError(f"a model spec needs 'backend' (one of: {kinds})")
            rest = {k: v for k, v in data.items() if k != "backend"}
            return {"backend": data["backend"], "options": rest}
        return data

    @model_validator(mode="after")
    def _check_options(self) -> ModelSpec:
        self.backend_config()
        return self

    @model_serializer
    def _flat(self, info: SerializationInfo) -> dict[str, Any]:
        options = self.options
        if info.context and info.context.get(RUN_IDENTITY):
            exempt = _identity_exempt(self.backend_config())
            options = {k: v for k, v in options.items() if k not in exempt}
        return {"backend": self.backend, **options}

    def backend_config(self) -> BaseModel:
        """The backend's own config built from this spec.

        Raises:
            ValueError: an unknown backend or an invalid option (pydantic reports it with the path).
        """
        if "kind" in self.options:
            raise ValueError("write the backend kind as 'backend', not 'kind'")
        try:
            config_type = backend_config_type(self.backend)
        except UserError as exc:  # unknown backend, or its plugin failed to load
            raise ValueError(f"{exc.message}; {exc.hint}") from None
        try:
            return config_type.model_validate({"kind": self.backend, **self.options})
        except ValidationError as exc:
            fields = [f for f in config_type.model_fields if f != "kind"]
            problems = "; ".join(validation_problem(e, fields, noun="option") for e in exc.errors())
            raise ValueError(f"invalid {self.backend} backend option(s): {problems}") from None

    @property
    def key(self) -> str:
        """Canonical form: specs with the same key share one backend instance."""
        config = self.backend_config().model_dump(mode="json")
        return json.dumps(config, sort_keys=True)

    @property
    def identity_key(self) -> str:
        """:attr:`key` less the options that do not name another run: those a backend config lists
        in ``identity_exempt()`` (e.g. the URLs of an openai replica set, which serve one model)."""
        backend_config = self.backend_config()
        exempt = _identity_exempt(backend_config)
        config = backend_config.model_dump(mode="json", exclude=set(exempt))
        return json.dumps(config, sort_keys=True)

    def describe(self) -> str:
        model = self.options.get("model")
        return f"{self.backend}:{model}" if model else self.backend


def _identity_exempt(config: BaseModel) -> frozenset[str]:
    # An optional hook of backend configs (plugins need not have it).
    exempt = getattr(config, "identity_exempt", None)
    return frozenset(exempt()) if callable(exempt) else frozenset()


def _ref_kind(value: Any) -> str:
    return "model-name" if isinstance(value, str) else "model-spec"


# A tagged union, so that a bad spec is reported once (not once per union member).
ModelRef: TypeAlias = Annotated[
    Annotated[str, Tag("model-name")] | Annotated[ModelSpec, Tag("model-spec")],
    Discriminator(_ref_kind),
]
"""A model as a config names it: a spec, or a string.

A string names a backend passed to the system by name (``System(..., backends={"judge": b})``) or,
failing that, a registered embedded model (``"qwen2.5-coder-0.5b"``, run by the ``llamacpp``
backend) or a path to a ``.gguf`` file.
"""

EMBEDDED_DEFAULT = ModelSpec(backend="llamacpp", options={"model": DEFAULT_MODEL})
"""Used when neither a component, the system, nor the caller names a model."""


def describe_ref(ref: ModelRef | None) -> str:
    if ref is None:
        return "(default)"
    return ref if isinstance(ref, str) else ref.describe()


class BackendPool:
    """Creates backends on first use and shares one instance per identical spec.

    Sharing matters for the embedded engine: two components on the same model must not load it
    twice. Backends the pool created are closed by :meth:`aclose`; backends handed in by the caller
    (``named``, ``default``) belong to the caller and are left open.

    Several pools (the systems of a search) share their backends through ``shared``: a mapping
    from :attr:`ModelSpec.key` to backend that each pool looks in first and creates into. Backends
    in it belong to whoever owns the mapping (who closes them, e.g. with :func:`aclose_backends`),
    never to a pool. Unlike ``named``, this changes nothing a spec resolves to, so a run's identity
    is the same with or without sharing.

    Args:
        named: Backends that string model refs can name.
        default: The backend for components that name no model (takes precedence over
            ``default_ref``).
        default_ref: The system config's default model.
        factory: Builds a backend from a backend config (tests may replace it).
        shared: Backends by spec key, shared with other pools (see above).
    """

    def __init__(
        self,
        *,
        named: Mapping[str, Backend] | None = None,
        default: Backend | None = None,
        default_ref: ModelRef | None = None,
        factory: Callable[[BaseModel], Backend] = create_backend,
        shared: MutableMapping[str, Backend] | None = None,
    ) -> None:
        self._named = dict(named or {})
        self._default = default
        self._default_ref = default_ref
        self._factory = factory
        self._shared = shared
        self._created: dict[str, Backend] = {}

    def resolve(self, ref: ModelRef | None) -> ModelRef | Backend:
        """The spec (or the caller's backend) a ref stands for, applying the defaults."""
        if ref is None:
            if self._default is not None:
                return self._default
            ref = self._default_ref if self._default_ref is not None else EMBEDDED_DEFAULT
        if isinstance(ref, str):
            if ref in self._named:
                return self._named[ref]
            try:
                return ModelSpec(backend="llamacpp", options={"model": ref})
            except ValidationError as exc:
                raise ConfigError(f"invalid model {ref!r}: {exc.errors()[0]['msg']}") from None
        return ref

    def get(self, ref: ModelRef | None) -> Backend:
        """The backend for ``ref`` (created on first use)."""
        target = self.resolve(ref)
        if not isinstance(target, ModelSpec):
            if isinstance(target, str):  # resolve() maps strings to specs or backends
                raise AssertionError(target)
            return target
        key = target.key
        if self._shared is not None:
            if key not in self._shared:
                self._shared[key] = self._factory(target.backend_config())
            return self._shared[key]
        if key not in self._created:
            self._created[key] = self._factory(target.backend_config())
        return self._created[key]

    @property
    def created(self) -> list[Backend]:
        """Backends this pool created (and will close)."""
        return list(self._created.values())

    async def aclose(self) -> None:
        """Close every backend the pool created (not the shared ones); the first failure is
        raised after all were tried."""
        backends, self._created = list(self._created.values()), {}
        await aclose_backends(backends)


async def aclose_backends(backends: Iterable[Backend]) -> None:
    """Close every backend, even when one fails; the first failure is then raised.

    For the owner of a shared mapping (:class:`BackendPool` ``shared``):
    ``await aclose_backends(shared.values())``.
    """
    results = await asyncio.gather(*(b.aclose() for b in backends), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
