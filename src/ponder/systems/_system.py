"""The System: runs layers of components over a typed state, with a trace and usage per query."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeAlias

from pydantic import BaseModel, Field

from ponder._aio import gather_all
from ponder._closing import Closing
from ponder.backends import Backend, create_backend
from ponder.errors import ConfigError, PonderError, RunError, UserError
from ponder.records import Message
from ponder.systems._archon import ModelTarget, import_archon
from ponder.systems._cache import GenerationCache
from ponder.systems._component import Component, Delta, component_class
from ponder.systems._config import SystemConfig, read_config_file
from ponder.systems._context import Checker, Resources, RunContext, VerifierLike
from ponder.systems._errors import ComponentError
from ponder.systems._extract import get_extractor
from ponder.systems._layer import merge
from ponder.systems._load import load_config
from ponder.systems._models import BackendPool
from ponder.systems._state import Candidate, State, as_messages
from ponder.systems._trace import ComponentEvent, LayerRecord, Trace, Usage, sum_usage
from ponder.verify import Verifier, make_verifier, verifier_kinds

Query: TypeAlias = str | Sequence[Message] | Sequence[dict[str, Any]]
"""A question, or chat messages ending with the user's turn."""

LayerHook: TypeAlias = Callable[[LayerRecord, bool], None]
"""Called as each layer starts (``False``: its record lists its component events, nothing has run)
and ends (``True``: the record is complete); for progress reports and for knowing which layer a
backend call belongs to. It must not block."""


class SystemResult(BaseModel):
    """The answer to one query, with its trace and usage.

    The answer is the *top candidate*: the first candidate in state order after the last layer.
    Components that choose (rank, vote, judge, unit_test_eval) put their choice first, and fuse
    puts its output first, so the top candidate is the system's pick.
    """

    answer: str = Field(description="Text of the top candidate.")
    answer_id: str = Field(description="Id of the top candidate.")
    extracted: str | None = Field(description="The answer extracted from it (system extractor).")
    candidates: list[Candidate] = Field(
        description="All candidates after the last layer, in order."
    )
    trace: Trace
    usage: Usage = Field(
        description="Calls and tokens summed over components; wall_s of the query."
    )

    @property
    def usage_by_component(self) -> dict[str, Usage]:
        return self.trace.usage_by_component


def _passes(verifier: VerifierLike, reference: str, texts: list[str]) -> list[bool]:
    if isinstance(verifier, Verifier):
        verdicts = verifier.verify_many([(reference, t) for t in texts])
        return [v.status == "correct" for v in verdicts]
    return [bool(verifier(reference, t)) for t in texts]


class System(Closing):
    """A composed inference system, loaded from a config.

    ::

        system = System.load("configs/sample-8-vote.yaml")
        result = system.run("What is 17*23?")        # or: await system.arun(messages)
        print(result.answer, result.usage.total_tokens)
        system.close()                                # or use `with System.load(...) as system:`

    Backends are created on first use, one per distinct model spec, and closed by
    :meth:`close`/:meth:`aclose`. Backends passed in by the caller are the caller's to close.

    Args:
        config: The validated config.
        default_backend: Runs every component that names no model (overrides the config's
            ``model``).
        backends: Named backends; a string model in the config names one of them.
        verifiers: Named verifiers for ``verify`` components (a Verifier, or a function
            ``(reference, text) -> bool``); other names are registered verifier kinds.
        generation_cache: Serves completions already drawn for the same model, prompt and
            sampling parameters instead of drawing them again (e.g. a
            :class:`StoreGenerationCache`); see :mod:`ponder.systems._cache`.
        shared_backends: Backends by model spec key, shared with other systems: backends are
            looked up in it and created into it, and belong to whoever owns it (this system does
            not close them). The run identity is unchanged (see :class:`BackendPool`).
        backend_factory: Builds each backend the system creates from its config (default:
            :func:`ponder.backends.create_backend`; an executor's
            :meth:`~ponder.executors.Executor.backend` runs them on a cluster).

    Raises:
        ConfigError: a ``verify`` component names no known verifier.
    """

    def __init__(
        self,
        config: SystemConfig,
        *,
        default_backend: Backend | None = None,
        backends: Mapping[str, Backend] | None = None,
        verifiers: Mapping[str, VerifierLike] | None = None,
        generation_cache: GenerationCache | None = None,
        shared_backends: MutableMapping[str, Backend] | None = None,
        backend_factory: Callable[[BaseModel], Backend] | None = None,
    ) -> None:
        self.config = config
        self._layers: list[list[Component[Any]]] = [
            [component_class(c.type)(c) for c in layer] for layer in config.layers
        ]
        self._pool = BackendPool(
            named=backends,
            default=default_backend,
            default_ref=config.model,
            shared=shared_backends,
            factory=backend_factory or create_backend,
        )
        self._verifiers: dict[str, VerifierLike] = dict(verifiers or {})
        self._owned_verifiers: dict[str, Verifier] = {}
        self._verifier_locks: dict[str, threading.Lock] = {}
        self._check_verifiers()
        self._resources = Resources(
            pool=self._pool,
            extractor=get_extractor(config.extractor),
            checker=self._checker,
            repair_retries=config.repair_retries,
            generation_cache=generation_cache,
        )
        self._runner: asyncio.Runner | None = None
        self._config_json: dict[str, Any] = config.model_dump(mode="json")

    # ----- construction ---------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **kwargs: Any) -> System:
        """A system from a config mapping (Ponder's format). ``kwargs`` go to :class:`System`.

        Raises:
            ConfigError: naming every invalid field.
        """
        return cls(SystemConfig.from_data(data), **kwargs)

    @classmethod
    def from_archon(
        cls,
        data: Mapping[str, Any] | str | Path,
        *,
        model_map: Mapping[str, ModelTarget] | None = None,
        default_model: ModelTarget | None = None,
        **kwargs: Any,
    ) -> System:
        """A system from an Archon config (a mapping or a JSON file); see :mod:`._archon`.

        Raises:
            ConfigError: naming each layer/component key or model that cannot be mapped.
        """
        source = None
        if not isinstance(data, Mapping):
            source = str(data)
            data = read_config_file(data)
        config = import_archon(
            data, model_map=model_map, default_model=default_model, source=source
        )
        return cls(config, **kwargs)

    @classmethod
    def load(
        cls,
        source: str | Path | Mapping[str, Any] | SystemConfig,
        *,
        model: ModelTarget | None = None,
        default_model: ModelTarget | None = None,
        model_map: Mapping[str, ModelTarget] | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        max_tokens: int | None = None,
        **kwargs: Any,
    ) -> System:
        """A system from a YAML or JSON file (or a config mapping); Archon configs are recognised
        and imported.

        Args:
            source: A Ponder or Archon config: a file, a mapping, or a :class:`SystemConfig`.
            model: Replaces the default model (of components that name none). A name or ``.gguf``
                path runs embedded and keeps the engine options of an embedded default; a spec
                mapping (``{"backend": "openai", ...}``) replaces it whole.
            default_model: Archon configs only: the model of every Archon model that
                ``model_map`` does not name (default: ``model``).
            model_map: Archon configs only: Archon model (``name`` or ``"<model_type>:<name>"``)
                -> Ponder model.
            top_k: Replaces the ``top_k_tokens`` of every component that calls a model (token
                truncation; part of the config, hence of a system run's identity).
            min_p: Replaces the ``min_p`` of every component that calls a model.
            max_tokens: Caps every token limit of the components that call a model (their
                ``max_tokens``, ``critic_max_tokens``, ``max_step_tokens``, ...); lower limits
                stand. Part of the config, hence of a system run's identity.
            **kwargs: Passed to :class:`System` (``backends``, ``default_backend``,
                ``verifiers``, ``generation_cache``, ``shared_backends``, ``backend_factory``).

        Models may be given as text as on a command line (a JSON spec starting with ``{``); see
        :func:`ponder.systems.parse_model` and the rules in :mod:`ponder.systems._load`.

        Raises:
            ConfigError: an invalid config or model; a model map or default model for a Ponder
                config; an Archon config that cannot be imported (naming each field).
            NotFoundError: no such file.
        """
        config = load_config(
            source,
            model=model,
            default_model=default_model,
            model_map=model_map,
            named=tuple(kwargs.get("backends") or ()),
            top_k=top_k,
            min_p=min_p,
            max_tokens=max_tokens,
        )
        return cls(config, **kwargs)

    @property
    def pool(self) -> BackendPool:
        """The backends of this system: ``pool.resolve(ref)`` is what a component's model ref
        stands for, ``pool.get(ref)`` the very backend its components run on (shared, created on
        first use, closed with the system)."""
        return self._pool

    @property
    def name(self) -> str:
        return self.config.name

    def _check_verifiers(self) -> None:
        for i, layer in enumerate(self.config.layers):
            for j, c in enumerate(layer):
                name = getattr(c, "verifier", None) if c.type == "verify" else None
                if not isinstance(name, str) or name in self._verifiers:
                    continue
                if name not in verifier_kinds():
                    known = sorted({*self._verifiers, *verifier_kinds()})
                    raise ConfigError(
                        f"layers[{i}][{j}].verifier: unknown verifier {name!r}",
                        hint=f"pass it with System(..., verifiers={{{name!r}: fn}}) "
                        f"or choose one of: {', '.join(known)}",
                    )

    def _checker(self, name: str) -> Checker:
        verifier = self._verifiers.get(name)
        if verifier is None:
            if name not in self._owned_verifiers:
                self._owned_verifiers[name] = make_verifier(name)
            verifier = self._owned_verifiers[name]
        # A verifier may not be used from two threads at once (concurrent queries share it).
        lock = self._verifier_locks.setdefault(name, threading.Lock())

        def check(reference: str, texts: list[str]) -> list[bool]:
            with lock:
                return _passes(verifier, reference, texts)

        return check

    # ----- running ----------------------------------------------------------------------------

    async def arun(
        self,
        query: Query,
        *,
        reference: str | None = None,
        seed: int | None = None,
        on_layer: LayerHook | None = None,
    ) -> SystemResult:
        """Answer one query.

        Args:
            query: A question or chat messages (ending with the user's message).
            reference: A reference answer or tests, used only by ``verify`` components.
            seed: Overrides the config's seed for this query.
            on_layer: Called as each layer starts and ends (see :data:`LayerHook`).

        Raises:
            ComponentError: a component failed (its ``trace`` holds what ran until then).
            UserError: the query is malformed, a model is missing or a backend rejected a request.
        """
        messages = as_messages(query)
        seed = self.config.seed if seed is None else seed
        key = hashlib.sha256("\n".join(m.model_dump_json() for m in messages).encode()).hexdigest()[
            :16
        ]
        state = State(messages=messages, reference=reference)
        trace = Trace(system=self.config.name, config=self._config_json, query=messages, seed=seed)
        made: dict[str, Candidate] = {}
        start = time.perf_counter()
        try:
            for index, layer in enumerate(self._layers):
                state = await self._run_layer(index, layer, state, trace, made, seed, key, on_layer)
        except PonderError as exc:
            self._finish(trace, state, made, start)
            trace.error = str(exc)
            if isinstance(exc, ComponentError):
                exc.trace = trace
            raise
        self._finish(trace, state, made, start)
        if not state.candidates:
            error = RunError(f"system {self.config.name!r} ended with no candidates")
            trace.error = str(error)
            raise error
        top = state.candidates[0]
        trace.answer_id = top.id
        return SystemResult(
            answer=top.text,
            answer_id=top.id,
            extracted=top.answer,
            candidates=state.candidates,
            trace=trace,
            usage=trace.usage,
        )

    async def _run_layer(
        self,
        index: int,
        layer: list[Component[Any]],
        state: State,
        trace: Trace,
        made: dict[str, Candidate],
        seed: int,
        key: str,
        on_layer: LayerHook | None = None,
    ) -> State:
        input_ids = [c.id for c in state.candidates]
        record = LayerRecord(index=index)
        trace.layers.append(record)
        contexts = []
        for j, component in enumerate(layer):
            event = ComponentEvent(
                layer=index,
                index=j,
                component=component.config.type,
                label=component.config.name,
                input_ids=input_ids,
            )
            record.events.append(event)
            contexts.append(
                RunContext(
                    event=event,
                    resources=self._resources,
                    seed=seed,
                    query_key=key,
                    repair_retries=getattr(component.config, "repair_retries", None),
                )
            )
        if on_layer is not None:
            on_layer(record, False)
        start = time.perf_counter()
        try:
            deltas = await gather_all(
                _run_component(c, state, ctx) for c, ctx in zip(layer, contexts, strict=True)
            )
        finally:
            record.wall_s = time.perf_counter() - start
        state, touched = merge(
            state, [(c.config.name, d) for c, d in zip(layer, deltas, strict=True)]
        )
        made.update(touched)
        record.candidate_ids = [c.id for c in state.candidates]
        record.unit_tests = len(state.unit_tests)
        if on_layer is not None:
            on_layer(record, True)
        return state

    def _finish(self, trace: Trace, state: State, made: dict[str, Candidate], start: float) -> None:
        trace.candidates = list(made.values())
        trace.critiques = list(state.critiques)
        trace.unit_tests = list(state.unit_tests)
        trace.final_ids = [c.id for c in state.candidates]
        trace.usage, trace.usage_by_component = sum_usage(trace.events, time.perf_counter() - start)

    def run(
        self, query: Query, *, reference: str | None = None, seed: int | None = None
    ) -> SystemResult:
        """Synchronous :meth:`arun` (not from inside a running event loop)."""
        return self._runner_for("run").run(self.arun(query, reference=reference, seed=seed))

    async def arun_many(
        self,
        queries: Sequence[Query],
        *,
        references: Sequence[str | None] | None = None,
        concurrency: int = 4,
        seed: int | None = None,
    ) -> list[SystemResult]:
        """Answer many queries, at most ``concurrency`` at a time; results in query order.

        Raises:
            UserError: ``references`` does not match ``queries`` or ``concurrency`` < 1.
            ComponentError: the first failure (the other queries are cancelled).
        """
        if concurrency < 1:
            raise UserError(f"concurrency must be >= 1, got {concurrency}")
        refs = list(references) if references is not None else [None] * len(queries)
        if len(refs) != len(queries):
            raise UserError(f"{len(queries)} queries but {len(refs)} references")
        gate = asyncio.Semaphore(concurrency)

        async def one(query: Query, reference: str | None) -> SystemResult:
            async with gate:
                return await self.arun(query, reference=reference, seed=seed)

        return await gather_all(one(q, r) for q, r in zip(queries, refs, strict=True))

    def run_many(
        self,
        queries: Sequence[Query],
        *,
        references: Sequence[str | None] | None = None,
        concurrency: int = 4,
        seed: int | None = None,
    ) -> list[SystemResult]:
        """Synchronous :meth:`arun_many`."""
        return self._runner_for("run_many").run(
            self.arun_many(queries, references=references, concurrency=concurrency, seed=seed)
        )

    def _runner_for(self, method: str) -> asyncio.Runner:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UserError(
                f"System.{method}() cannot be called inside a running event loop",
                hint=f"use `await system.a{method}(...)` there",
            )
        # One loop for all synchronous calls: backends may hold clients bound to their loop.
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner

    # ----- closing ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the backends and verifiers this system created."""
        verifiers, self._owned_verifiers = list(self._owned_verifiers.values()), {}
        try:
            await self._pool.aclose()
        finally:
            for verifier in verifiers:
                verifier.close()

    def close(self) -> None:
        """Synchronous :meth:`aclose`; also ends the event loop of the synchronous calls."""
        runner, self._runner = self._runner, None
        if runner is None:
            asyncio.run(self.aclose())
            return
        try:
            runner.run(self.aclose())
        finally:
            runner.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"System({self.config.name!r}: {self.config.describe()})"


async def _run_component(component: Component[Any], state: State, ctx: RunContext) -> Delta:
    """Run one component; fill its trace event (effects, usage, error)."""
    event = ctx.event
    start = time.perf_counter()
    try:
        delta = await component.run(state, ctx)
    except PonderError as exc:
        event.error = str(exc)
        raise
    except Exception as exc:  # a bug in a (plugin) component: re-raised with where it happened
        event.error = f"{type(exc).__name__}: {exc}"
        raise ctx.error(f"the component failed: {event.error}") from exc
    finally:
        event.usage = Usage(
            calls=len(event.calls),
            prompt_tokens=sum(c.prompt_tokens for c in event.calls),
            completion_tokens=sum(c.completion_tokens for c in event.calls),
            wall_s=time.perf_counter() - start,
        )
    event.produced = [c.id for c in delta.new]
    event.changed = [c.id for c in delta.changed]
    if delta.placement == "replace" and delta.new:
        event.dropped = list(event.input_ids)
    elif delta.keep is not None:
        kept = set(delta.keep)
        event.dropped = [i for i in event.input_ids if i not in kept]
    event.output_ids = list(delta.keep) if delta.keep is not None else None
    event.scores = dict(delta.scores)
    return delta
