"""Serving: what a request means in library calls, and the answer it gets.

A request's ``model`` names what runs (see :meth:`Service.resolve`): a served system (over its
model), ``system:model`` (a served system over a served model), or a served model alone (a
pass-through: one backend call, no overhead). ``ponder.system`` in the body chooses a system too,
or gives a whole config; ``ponder.overrides`` changes the config for this request.

What the request's parameters mean for a system (documented in ``docs/serve.md``):

* ``n``: ``n`` independent runs of the system, with seeds ``seed``, ``seed + 1``, ...; each is one
  choice. ``seed`` is the system's seed (default: the config's).
* ``max_tokens`` / ``max_completion_tokens``, ``temperature``, ``top_p`` and ``stop`` apply to the
  components that write the final answer: the ``generate`` and ``fuse`` components of the last layer
  that makes candidates, and every ``refine`` after it. Left out, the config's values stand.
  ``stop`` also cuts the final answer at the first stop sequence.
* ``tools`` / ``tool_choice`` are sent with the calls of that same layer's ``generate`` / ``fuse``
  components; the answer's tool calls are those of the completion it came from, or (for models
  that write calls as text) those :func:`ponder.text.parse_tool_calls` finds in it.

Usage sums the prompt and completion tokens of every internal call of every run. Every response has
a trace id (``X-Ponder-Trace-Id`` header, ``ponder.trace_id`` field); the request, its response and
its trace are stored in the database unless storing is off.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ponder._aio import gather_all
from ponder.backends import Backend
from ponder.errors import ConfigError, NotFoundError, RunError, UserError
from ponder.records import (
    Completion,
    Generation,
    GenerationRequest,
    Message,
    NamedToolChoice,
    SamplingParams,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from ponder.serve._protocol import (
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    ModelCard,
    ModelList,
    NamedToolChoiceIn,
    Progress,
    TokenLogprobOut,
    TopLogprobOut,
    finish_reason,
)
from ponder.serve._tap import Tap, via_stream
from ponder.store import ServerRequest, Store
from ponder.systems import LayerRecord, System, SystemConfig, SystemResult, Trace
from ponder.systems import Usage as SystemUsage
from ponder.text import parse_tool_calls, split_think

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"

_WRITERS = ("generate", "fuse")
"""Components whose output is a candidate's message as the model wrote it."""

_REQUIRED_TOOL_NOTE = (
    "You must answer with a call of {which}, written as a JSON object "
    '{{"name": <tool name>, "arguments": <object>}} and nothing else.'
)


class RequestError(UserError):
    """A request that cannot be served as sent (HTTP 400); ``param`` names the offending field."""

    def __init__(self, message: str, *, param: str | None = None, hint: str | None = None) -> None:
        self.param = param
        super().__init__(message, hint=hint)


class ToolCallMissingError(RunError):
    """The model wrote no tool call where ``tool_choice`` demanded one (HTTP 502)."""


class UnknownModelError(NotFoundError):
    """The request's ``model`` names nothing served (HTTP 404); the message lists what is."""


# ----- what is served ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedModel:
    """A model the server answers with: its served name, the backend, and what it is.

    ``backend_kind`` and ``model`` are what a system config's model spec is matched against (a
    component that names ``{"backend": "llamacpp", "model": "smollm2-135m"}`` runs on the served
    model of that backend and name).
    """

    name: str
    backend: Backend
    backend_kind: str
    model: str


@dataclass(frozen=True)
class Target:
    """What one request runs: a system (or None for a pass-through) over a served model."""

    model: ServedModel
    config: SystemConfig | None = None

    @property
    def system(self) -> str | None:
        return None if self.config is None else self.config.name


@dataclass
class Answer:
    """One choice of a response, before it is put on the wire."""

    text: str
    finish: str
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None
    logprobs: list[Any] | None = None


@dataclass
class Outcome:
    """What a request produced: its choices, usage over every internal call, and its traces."""

    answers: list[Answer]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    traces: list[Trace] = field(default_factory=list)


def _match_ref(ref: Any, models: Mapping[str, ServedModel], where: str) -> str:
    """The served name a config's model reference stands for.

    Raises:
        ConfigError: it names a model that is not served.
    """
    if isinstance(ref, str):
        if ref in models:
            return ref
        found = [m.name for m in models.values() if m.backend_kind == "llamacpp" and m.model == ref]
    elif isinstance(ref, Mapping):
        found = [
            m.name
            for m in models.values()
            if m.backend_kind == ref.get("backend") and m.model == ref.get("model")
        ]
    else:
        raise ConfigError(f"{where}: a model must be a name or a spec, got {type(ref).__name__}")
    if not found:
        shown = ref if isinstance(ref, str) else json.dumps(ref)
        raise ConfigError(
            f"{where}: model {shown} is not served (served: {', '.join(models)})",
            hint="start `ponder serve` with --model for it, or name a served model",
        )
    return found[0]


def _served_config(data: Mapping[str, Any], models: Mapping[str, ServedModel]) -> dict[str, Any]:
    """A config (JSON data) whose component models are all served names; its default model is
    dropped (the request's model replaces it)."""
    out = dict(data)
    out.pop("model", None)

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, Mapping):
            return {
                k: _match_ref(v, models, f"{path}.{k}")
                if k == "model" and v is not None
                else walk(v, f"{path}.{k}")
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    out["layers"] = walk(out.get("layers"), "layers")
    return out


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.0.c`` in nested dicts/lists (a layer given as one component is a list of one)."""
    keys = path.split(".")
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list) and not key.isdigit() and len(node) == 1:
            node = node[0]  # a layer of one component: "layers.0.n" means "layers.0.0.n"
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise RequestError(
                    f"ponder.overrides: {path!r}: {key!r} is not an index of a list of {len(node)}",
                    param=f"ponder.overrides.{path}",
                )
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
            continue
        if not isinstance(node, dict):
            raise RequestError(
                f"ponder.overrides: {path!r} goes into a value that is not a mapping",
                param=f"ponder.overrides.{path}",
            )
        if last:
            if isinstance(value, Mapping) and isinstance(node.get(key), dict):
                merged = dict(node[key])
                for k, v in value.items():
                    _set_path(merged, k, v)
                node[key] = merged
            else:
                node[key] = value
        else:
            node = node.setdefault(key, {})


def _answer_layer(config: SystemConfig) -> int:
    """The last layer with a component that makes candidates (the answer's source)."""
    for i in range(len(config.layers) - 1, -1, -1):
        if any(c.makes_candidates for c in config.layers[i]):
            return i
    return len(config.layers) - 1


def _streams_last_layer(config: SystemConfig) -> bool:
    """Whether the last layer is one generation whose tokens can be streamed as they come."""
    last = config.layers[-1]
    if len(last) != 1:
        return False
    c = last[0]
    if c.type == "fuse":
        return True
    return c.type == "generate" and getattr(c, "models", None) is None and getattr(c, "n", 0) == 1


def _apply_params(
    data: dict[str, Any], config: SystemConfig, values: Mapping[str, Any]
) -> dict[str, Any]:
    """``data`` with the request's sampling values set on the components that write the answer."""
    if not values:
        return data
    start = _answer_layer(config)
    layers = data["layers"]
    for i in range(start, len(config.layers)):
        for j, component in enumerate(config.layers[i]):
            writes = (i == start and component.type in _WRITERS) or component.type == "refine"
            if not writes:
                continue
            layers[i][j].update(values)
            for member in layers[i][j].get("models") or []:
                for key in ("temperature", "max_tokens"):
                    if key in values and member.get(key) is not None:
                        member[key] = values[key]
    return data


# ----- building answers ---------------------------------------------------------------------------


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _answer(
    text: str,
    finish: str,
    *,
    tools: Sequence[ToolSpec],
    tool_choice: ToolChoice | None,
    calls: tuple[ToolCall, ...] = (),
    logprobs: list[Any] | None = None,
) -> Answer:
    """A choice: ``<think>`` reasoning split off, tool calls from the engine or parsed from the text.

    Raises:
        ToolCallMissingError: ``tool_choice`` demanded a call (``required``, or a named tool) and
            the model wrote none.
    """
    reasoning, content = split_think(text)
    named = tool_choice.name if isinstance(tool_choice, NamedToolChoice) else None
    if named is not None:
        tools = [t for t in tools if t.name == named]
    if not calls and tools and tool_choice != "none":
        content, calls = parse_tool_calls(content, tools)
    if named is not None and any(c.name != named for c in calls):
        calls = ()
    if (tool_choice == "required" or named is not None) and not calls:
        which = f"the tool {named!r}" if named else "a tool"
        raise ToolCallMissingError(
            f"the model did not call {which}, which tool_choice required; it wrote: "
            f"{content[:200]!r}"
        )
    if calls:
        finish = "tool_calls"
    return Answer(content, finish, calls, reasoning, logprobs)


def _tool_specs(request: ChatCompletionRequest) -> tuple[tuple[ToolSpec, ...], ToolChoice | None]:
    tools = tuple(
        ToolSpec(
            name=t.function.name,
            description=t.function.description,
            parameters=t.function.parameters,
        )
        for t in request.tools or ()
    )
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoiceIn):
        return tools, NamedToolChoice(name=choice.function.name)
    return tools, choice if tools else None


def _message(m: ChatMessageIn, i: int) -> Message:
    role = "system" if m.role == "developer" else m.role
    calls = tuple(
        ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
        for c in m.tool_calls or ()
    )
    try:
        return Message(role=role, content=m.text(), tool_calls=calls, tool_call_id=m.tool_call_id)
    except ValidationError as exc:
        raise RequestError(
            f"messages[{i}]: {exc.errors()[0]['msg']}", param=f"messages[{i}]"
        ) from None


def _required_note(tools: Sequence[ToolSpec], choice: ToolChoice | None) -> str | None:
    """An instruction that makes small models write the call ``tool_choice`` demands."""
    if isinstance(choice, NamedToolChoice):
        return _REQUIRED_TOOL_NOTE.format(which=f"the tool {choice.name!r}")
    if choice == "required":
        return _REQUIRED_TOOL_NOTE.format(
            which="one of the tools " + ", ".join(t.name for t in tools)
        )
    return None


def _with_note(messages: list[Message], note: str | None) -> list[Message]:
    if note is None:
        return messages
    if messages and messages[0].role == "system":
        first = messages[0].model_copy(update={"content": f"{messages[0].content}\n\n{note}"})
        return [first, *messages[1:]]
    return [Message(role="system", content=note), *messages]


def _logprobs_out(completion: Completion, top: int) -> list[Any] | None:
    """The completion's token log-probabilities with ``top`` alternatives each."""
    if completion.logprobs is None:
        return None
    return [
        TokenLogprobOut(
            token=t.token,
            logprob=t.logprob,
            top_logprobs=[TopLogprobOut(token=a.token, logprob=a.logprob) for a in t.top[:top]],
        )
        for t in completion.logprobs
    ]


# ----- the service ------------------------------------------------------------------------------


class Service:
    """The served models and systems, and the handlers of the OpenAI endpoints.

    Args:
        models: The served models, first one the default of served systems.
        systems: Served systems (configs); their component models must be served models.
        db: Where served requests are stored (None: nothing is stored).
        default_max_tokens: ``max_tokens`` of a pass-through request that sets none.

    Raises:
        ConfigError: no model, a duplicate name, or a system that needs a model not served.
    """

    def __init__(
        self,
        models: Sequence[ServedModel],
        systems: Sequence[SystemConfig] = (),
        *,
        db: Path | None = None,
        default_max_tokens: int = 512,
    ) -> None:
        if not models:
            raise ConfigError("ponder serve needs at least one model")
        self.models = {m.name: m for m in models}
        self.default_model = models[0].name
        self.systems: dict[str, SystemConfig] = {}
        self.db = db
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())
        for config in systems:
            name = config.name
            if name in self.models or name in self.systems:
                raise ConfigError(f"two served things are named {name!r}", hint="rename a system")
            data = _served_config(config.model_dump(mode="json"), self.models)
            self.systems[name] = SystemConfig.from_data(data, source=name)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ponder-serve-store")
        self._store: Store | None = None

    # ----- names ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every name the ``model`` field may hold: systems, ``system:model`` pairs, models."""
        pairs = [f"{s}:{m}" for s in self.systems for m in self.models]
        return [*self.systems, *pairs, *self.models]

    def model_list(self) -> ModelList:
        cards = [
            ModelCard(id=name, created=self.created, description=self._describe(name))
            for name in self.names()
        ]
        return ModelList(data=cards)

    def _describe(self, name: str) -> str:
        system, _, model = name.partition(":") if name not in self.models else ("", "", name)
        if system in self.systems:
            config = self.systems[system]
            over = model or self.default_model
            return f"system {config.name} on {over}: {config.description or config.describe()}"
        return f"model {name} ({self.models[name].backend.identity}), pass-through"

    def resolve(self, name: str, options: Any = None) -> Target:
        """What the ``model`` field (and the ``ponder`` options) ask to run.

        Served names match first; then the name splits at its first ``:`` into a system and a
        model. ``ponder.system`` (a served system's name or a whole config) runs over the model the
        name gives; ``ponder.overrides`` changes the config.

        Raises:
            UnknownModelError: nothing served has that name (the message lists what is).
            RequestError: an invalid ``ponder`` object (naming the field).
        """
        system: SystemConfig | None = None
        if name in self.systems:
            system, model = self.systems[name], self.models[self.default_model]
        elif name in self.models:
            model = self.models[name]
        else:
            head, sep, tail = name.partition(":")
            if not sep or head not in self.systems or tail not in self.models:
                raise UnknownModelError(
                    f"the model {name!r} is not served; served: {', '.join(self.names())}",
                    hint="name a served system, a served model, or system:model",
                )
            system, model = self.systems[head], self.models[tail]
        if options is not None:
            system = self._chosen(system, options)
        return Target(model=model, config=system)

    def _chosen(self, system: SystemConfig | None, options: Any) -> SystemConfig | None:
        chosen = options.system
        if isinstance(chosen, str):
            if chosen not in self.systems:
                raise RequestError(
                    f"ponder.system: {chosen!r} is not a served system "
                    f"(served: {', '.join(self.systems) or 'none'})",
                    param="ponder.system",
                )
            system = self.systems[chosen]
        elif isinstance(chosen, dict):
            system = self._config(chosen, "ponder.system")
        if options.overrides:
            if system is None:
                raise RequestError(
                    "ponder.overrides needs a system (the model field names a plain model)",
                    param="ponder.overrides",
                )
            data = system.model_dump(mode="json")
            for path, value in options.overrides.items():
                _set_path(data, path, value)
            system = self._config(data, "ponder.overrides")
        return system

    def _config(self, data: Mapping[str, Any], where: str) -> SystemConfig:
        try:
            return SystemConfig.from_data(_served_config(data, self.models), source=where)
        except ConfigError as exc:
            raise RequestError(f"{where}: {exc.message}", param=where, hint=exc.hint) from None

    # ----- running ---------------------------------------------------------------------------

    def chat_generation(
        self, request: ChatCompletionRequest
    ) -> tuple[GenerationRequest, list[Message]]:
        """The backend request of a pass-through chat request (and its messages)."""
        messages = [_message(m, i) for i, m in enumerate(request.messages)]
        tools, choice = _tool_specs(request)
        note = _required_note(tools, choice)
        prompt = _with_note(messages, note)
        params = self._params(request, request.token_limit)
        try:
            generation = GenerationRequest(
                prompt=prompt,
                n=request.n,
                params=params,
                tools=tools,
                tool_choice=choice,
                # The engine returns token log-probabilities only with 1+ alternatives; extra ones are
                # cut on the way out.
                top_logprobs=max(1, request.top_logprobs or 0) if request.logprobs else 0,
            )
        except ValidationError as exc:
            raise RequestError(f"invalid request: {exc.errors()[0]['msg']}") from None
        return generation, messages

    def completion_generation(self, request: CompletionRequest) -> GenerationRequest:
        """The backend request of a pass-through text completion request."""
        return GenerationRequest(
            prompt=request.text, n=request.n, params=self._params(request, request.token_limit)
        )

    def _params(self, request: Any, limit: int | None) -> SamplingParams:
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        try:
            return SamplingParams(
                temperature=1.0 if request.temperature is None else request.temperature,
                top_p=1.0 if request.top_p is None else request.top_p,
                max_tokens=limit or self.default_max_tokens,
                stop=request.stops(),
                seed=seed,
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            raise RequestError(
                f"{error['loc'][0]}: {error['msg']}", param=str(error["loc"][0])
            ) from None

    def _system_values(self, request: Any) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if request.temperature is not None:
            values["temperature"] = request.temperature
        if request.top_p is not None:
            values["top_p"] = request.top_p
        if request.token_limit is not None:
            values["max_tokens"] = request.token_limit
        if request.stop is not None:
            values["stop"] = list(request.stops())
        return values

    async def run_passthrough(
        self, target: Target, generation: GenerationRequest, top: int = 0
    ) -> Outcome:
        """One backend call; ``top``: alternatives per token to return (with logprobs)."""
        backend = target.model.backend
        if generation.n == 1 and not generation.top_logprobs:
            result = await via_stream(backend, generation)
        else:
            result = await backend.complete(generation)
        return self.passthrough_outcome(generation, result, top)

    def passthrough_outcome(
        self, generation: GenerationRequest, result: Generation, top: int = 0
    ) -> Outcome:
        answers = [
            _answer(
                c.text,
                finish_reason(c.finish_reason),
                tools=generation.tools,
                tool_choice=generation.tool_choice,
                calls=c.tool_calls,
                logprobs=_logprobs_out(c, top),
            )
            for c in result.completions
        ]
        return Outcome(
            answers=answers,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=sum(c.completion_tokens for c in result.completions),
            calls=1,
        )

    async def run_system(
        self,
        target: Target,
        query: str | list[Message],
        request: Any,
        *,
        tools: tuple[ToolSpec, ...] = (),
        tool_choice: ToolChoice | None = None,
        sink: Callable[[str], None] | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> Outcome:
        """``request.n`` runs of the target's system on ``query`` (concurrently)."""
        assert target.config is not None
        config = target.config
        values = self._system_values(request)
        values_seed = request.seed if request.seed is not None else config.seed
        data = _apply_params(config.model_dump(mode="json"), config, values)
        config = self._config(data, "request")
        layers = len(config.layers)
        stream_layer = layers - 1 if sink is not None and _streams_last_layer(config) else None
        stops = request.stops()
        messages = query if isinstance(query, list) else [Message(role="user", content=query)]
        messages = _with_note(messages, _required_note(tools, tool_choice))

        async def one(i: int) -> tuple[Answer, SystemResult]:
            taps = {
                name: Tap(
                    m.backend,
                    answer_layer=_answer_layer(config),
                    tools=tools,
                    tool_choice=tool_choice,
                    stream_layer=stream_layer if i == 0 else None,
                    sink=sink if i == 0 else None,
                )
                for name, m in self.models.items()
            }

            def on_layer(record: LayerRecord, done: bool) -> None:
                for tap in taps.values():
                    tap.on_layer(record, done)
                if progress is not None and i == 0:
                    progress(
                        Progress(
                            event="layer_end" if done else "layer_start",
                            layer=record.index,
                            layers=layers,
                            components=[e.label for e in record.events],
                            candidates=len(record.candidate_ids) if done else None,
                            wall_s=record.wall_s if done else None,
                        )
                    )

            async with System(
                config, default_backend=taps[target.model.name], backends=taps
            ) as system:
                result = await system.arun(
                    messages, seed=(values_seed + i) % 2**31, on_layer=on_layer
                )
            return self._system_answer(result, taps.values(), stops, tools, tool_choice), result

        runs = await gather_all(one(i) for i in range(request.n))
        usage = SystemUsage()
        for _, result in runs:
            usage = usage.plus(result.usage)
        return Outcome(
            answers=[a for a, _ in runs],
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            calls=usage.calls,
            traces=[r.trace for _, r in runs],
        )

    def _system_answer(
        self,
        result: SystemResult,
        taps: Collection[Tap],
        stops: Sequence[str],
        tools: tuple[ToolSpec, ...],
        tool_choice: ToolChoice | None,
    ) -> Answer:
        top = result.candidates[0]
        text, stopped = _cut_at_stop(result.answer, stops)
        finish = "stop" if stopped else finish_reason(top.finish_reason)
        calls: tuple[ToolCall, ...] = ()
        for tap in taps:
            made = next((c for c in tap.made if c.text == result.answer and c.tool_calls), None)
            if made is not None:
                calls = made.tool_calls
                break
        return _answer(
            text,
            finish,
            tools=tools,
            tool_choice=tool_choice,
            calls=calls,
        )

    # ----- storing ---------------------------------------------------------------------------

    def _write(self, record: ServerRequest) -> None:
        if self._store is None:
            assert self.db is not None
            self._store = Store(self.db)
        self._store.add_server_request(record)

    async def store(self, record: ServerRequest) -> None:
        """Store a served request (in the store's own thread; nothing when storing is off)."""
        if self.db is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._write, record)

    async def aclose(self) -> None:
        """Close the store and the served backends."""

        def close_store() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        await asyncio.get_running_loop().run_in_executor(self._writer, close_store)
        self._writer.shutdown(wait=True)
        await gather_all(m.backend.aclose() for m in self.models.values())


__all__ = [
    "CHAT",
    "COMPLETIONS",
    "Answer",
    "Outcome",
    "RequestError",
    "ServedModel",
    "Service",
    "Target",
    "ToolCallMissingError",
    "UnknownModelError",
]
