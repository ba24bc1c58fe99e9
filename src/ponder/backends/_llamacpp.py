"""The embedded default backend: llama.cpp in-process through the prebuilt ``xllamacpp`` wheel.

One request for n completions evaluates the prompt once; llama.cpp runs the extra sequences as child slots
that share the prompt's KV cells and decodes all of them in one batch. The request handlers block, so they
run in this backend's own worker threads (``n_parallel`` of them); the engine is thread-safe across
concurrent requests.

The :class:`~ponder.backends.Backend` base bounds concurrency in the engine's slots: a request for n
completions holds n of the ``n_parallel`` slots (more than ``n_parallel`` are split into requests of
``n_parallel``), so the engine never queues work of ours behind busy slots. A request in flight cannot be
interrupted, so a cancelled ``generate`` keeps its slots until the engine has answered; a stream
(``backend.stream``) can: xllamacpp calls ``handle_chat_completions(body, callback)`` /
``handle_completions(body, callback)`` with ``"stream": True`` once per chunk (a dict), and a callback that
returns True makes llama.cpp stop decoding that request at the next token (measured: 3 tokens decoded of
up to 400), which this backend does once the stream is closed or its consumer cancelled.

A chat prompt that ends in an assistant message (``continue_final_message``) is continued; llama.cpp
returns the prefilled text followed by the new text (its streams send only the new text), and the
completion holds only the new text.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ponder.backends import _wire
from ponder.backends._base import Backend, BackendPolicy
from ponder.backends._registry import register_backend
from ponder.errors import BackendError, BackendRequestError, ConfigError, RunError
from ponder.models import DEFAULT_MODEL, MODELS, get_model, resolve_model
from ponder.records import Completion, Generation, GenerationRequest, StreamDelta

_T = TypeVar("_T")

_END = object()
"""Put on a stream's queue when the engine call has returned."""


THREADS_ENV = "PONDER_THREADS"


def default_threads() -> int:
    """Threads of an engine whose config sets none: ``$PONDER_THREADS``, else every core.

    Several processes that each run an engine on a small machine should split the cores between
    them (e.g. ``PONDER_THREADS=1`` for two processes on 2 cores): llama.cpp's threads wait by
    spinning, so more threads than cores slow every engine down many times over. Not part of a
    model's identity (the samples do not depend on it).

    Raises:
        ConfigError: the variable is set but is not a positive integer.
    """
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return os.cpu_count() or 1
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(
            f"{THREADS_ENV}={raw!r} is not a positive number of threads",
            hint=f"set {THREADS_ENV} to an integer >= 1, or unset it to use every core",
        )
    return int(raw)


class LlamaCppConfig(BaseModel):
    """Config of the embedded llama.cpp engine."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["llamacpp"] = "llamacpp"
    model: str = Field(
        DEFAULT_MODEL, description="A registered model name or a path to a .gguf file."
    )
    n_parallel: int = Field(16, ge=1, le=256, description="Sequences decoded together (slots).")
    ctx_per_sequence: int = Field(2048, ge=128, description="KV cells reserved per sequence.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads; default: $PONDER_THREADS, else all cores."
    )
    reuse_prompt_cache: bool = Field(
        False,
        description=(
            "Reuse KV cache of earlier requests with the same prefix. Faster for repeated prompts, but "
            "results then depend on what ran before, so the same seed may not reproduce a sample."
        ),
    )
    logprobs: Literal["off", "sampling", "model"] = Field(
        "off",
        description=(
            "Token log-probabilities to return as each sample's mean_logprob (a confidence score). "
            "'sampling': under the distribution actually sampled from (temperature and truncation "
            "applied); 'model': the model's own. Either costs a pass over the vocabulary per token "
            "when sampling is not truncated (about 2x slower on CPU with top_p=1)."
        ),
    )
    verbose: bool = Field(False, description="Let llama.cpp log to stderr.")


def _raise_for_error(result: object) -> dict[str, Any]:
    """``result`` as a response object, or the engine's error as a Ponder error."""
    if not isinstance(result, dict):
        raise BackendError(f"llama.cpp returned {type(result).__name__}, expected a JSON object")
    if "error" in result:
        err = result["error"]
        code = int(err.get("code", 500)) if isinstance(err, dict) else 500
        msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        cls = BackendRequestError if 400 <= code < 500 else BackendError
        raise cls(f"llama.cpp error {code}: {msg}", status_code=code)
    return result


class LlamaCppBackend(Backend):
    """In-process llama.cpp. Create with :func:`ponder.backends.create_backend` or directly."""

    def __init__(self, config: LlamaCppConfig | None = None) -> None:
        self.config = config or LlamaCppConfig()
        super().__init__(BackendPolicy(max_concurrency=self.config.n_parallel))
        self.path: Path = resolve_model(self.config.model)
        self._server: Any = None
        self._http: httpx.Client | None = None
        self._context: int | None = None  # the engine's, once asked
        self._pool: ThreadPoolExecutor | None = None
        # Re-entrant: base_url (used under the lock by _client) loads the engine under it too.
        self._lock = threading.RLock()

    @property
    def identity(self) -> str:
        if self.config.model in MODELS:
            return f"llamacpp:{self.config.model}@{get_model(self.config.model).sha256[:12]}"
        return f"llamacpp:{self.path.resolve()}"

    @property
    def max_batch(self) -> int:
        return self.config.n_parallel

    @property
    def max_n_per_request(self) -> int:
        return self.config.n_parallel

    def _slots_for(self, request: GenerationRequest) -> int:
        return request.n  # one engine slot per sequence

    def _engine(self) -> Any:
        with self._lock:
            if self._server is None:
                self._server = self._start()
            return self._server

    def _start(self) -> Any:
        import xllamacpp

        threads = self.config.threads or default_threads()
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_parallel = self.config.n_parallel
        params.n_ctx = self.config.n_parallel * self.config.ctx_per_sequence
        # One unified KV buffer lets the child sequences of an n-request share the prompt's cells.
        params.kv_unified = True
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.endpoint_metrics = True
        params.warmup = False
        params.verbosity = 3 if self.config.verbose else -1
        try:
            return xllamacpp.Server(params)
        except Exception as exc:  # the engine raises bare RuntimeErrors; keep the cause
            raise RunError(f"llama.cpp could not load {self.path}: {exc}") from exc

    def start(self) -> None:
        """Load the model now (otherwise it loads on the first request)."""
        self._engine()

    @property
    def engine(self) -> Any:
        """The underlying ``xllamacpp.Server`` (loaded on first access), for direct requests."""
        return self._engine()

    @property
    def base_url(self) -> str:
        """The engine's own OpenAI-compatible HTTP endpoint on 127.0.0.1."""
        return str(self._engine().listening_address).rstrip("/")

    def metrics(self) -> dict[str, float]:
        """llama.cpp's counters (e.g. ``prompt_tokens_total``, ``tokens_predicted_total``)."""
        text: str = self._engine().handle_metrics()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition(" ")
                out[key.split(":", 1)[-1]] = float(value)
        return out

    def _body(self, request: GenerationRequest, stream: bool = False) -> dict[str, Any]:
        params = request.params
        body: dict[str, Any] = {
            "n": request.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            # Explicit, so llama.cpp's own defaults (top_k 40, min_p 0.05) do not silently narrow the
            # distribution: temperature means the same thing here as on vLLM or OpenAI.
            "top_k": params.top_k,
            "min_p": params.min_p,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
            "cache_prompt": self.config.reuse_prompt_cache
            if request.cache_prompt is None
            else request.cache_prompt,
        }
        top = request.top_logprobs
        if self.config.logprobs != "off" or top:
            body["post_sampling_probs"] = self.config.logprobs == "sampling"
        if isinstance(request.prompt, str):
            body["prompt"] = request.prompt
            if self.config.logprobs != "off" or top:
                body["logprobs"] = max(top, 1)
        else:
            body["messages"] = [_wire.message_json(m) for m in request.prompt]
            if self.config.logprobs != "off" or top:
                body["logprobs"] = True
                body["top_logprobs"] = max(top, 1)
            if request.tools:
                body["tools"] = _wire.tools_json(request.tools)
            if request.tool_choice is not None:
                body["tool_choice"] = _wire.tool_choice_json(request.tool_choice)
        if params.stop:
            body["stop"] = list(params.stop)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _client(self) -> httpx.Client:
        """A client of the engine's own HTTP endpoint (for what the Python binding does not expose)."""
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(base_url=self.base_url, timeout=60.0)
            return self._http

    def _ask(self, method: str, path: str, body: Any = None) -> Any:
        try:
            reply = self._client().request(method, path, json=body)
            reply.raise_for_status()
            return reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise BackendError(f"llama.cpp could not answer {path}: {exc}") from exc

    def context_size(self) -> int:
        """Tokens one request may hold: the context of one of the engine's slots, as the engine
        reports it (``ctx_per_sequence``, at most what the model was trained for). Loads the model."""
        if self._context is None:  # concurrent first calls may both ask, and get the same answer
            props = self._ask("GET", "/props")
            try:
                self._context = int(props["default_generation_settings"]["n_ctx"])
            except (KeyError, TypeError, ValueError) as exc:
                raise BackendError(f"llama.cpp's /props has no context size: {exc!r}") from exc
        return self._context

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` by the model's own tokenizer (the engine's /tokenize endpoint).

        Also used for the samples of an n-request that usage does not cover. Re-tokenising generated text
        gives the generated count except for rare non-canonical token sequences (measured: 2 tokens off in
        8,894).
        """
        if not text:
            return 0
        reply = self._ask("POST", "/tokenize", {"content": text, "add_special": False})
        try:
            return len(reply["tokens"])
        except (KeyError, TypeError) as exc:
            raise BackendError(f"llama.cpp's /tokenize answered without tokens: {exc!r}") from exc

    def _call(self, body: dict[str, Any], callback: Callable[[Any], bool] | None = None) -> Any:
        engine = self._engine()
        handle = engine.handle_chat_completions if "messages" in body else engine.handle_completions
        try:
            return handle(body) if callback is None else handle(body, callback)
        except ValueError as exc:
            raise BackendRequestError(f"llama.cpp rejected the request: {exc}") from exc

    def _generate_sync(self, request: GenerationRequest) -> Generation:
        start = time.perf_counter()
        result = _raise_for_error(self._call(self._body(request)))
        latency = time.perf_counter() - start
        usage = result.get("usage") or {}
        completions = [
            self._completion(choice, usage, request, latency)
            for choice in sorted(result["choices"], key=lambda c: c.get("index", 0))
        ]
        return Generation(
            completions=completions,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            cached_prompt_tokens=_wire.cached_tokens(usage),
            latency_s=latency,
        )

    def _completion(
        self,
        choice: dict[str, Any],
        usage: dict[str, Any],
        request: GenerationRequest,
        latency: float,
    ) -> Completion:
        message = choice.get("message")
        if isinstance(message, dict):
            text = _wire.strip_echo(message.get("content") or "", request.prefix)
        else:
            text = choice.get("text") or ""
        finish = _wire.finish_reason(choice.get("finish_reason"))
        tokens = _wire.token_logprobs(choice)
        if tokens:
            count = len(tokens)
        elif finish == "length":
            count = request.params.max_tokens
        elif choice.get("index", 0) == 0 and "completion_tokens" in usage:
            # With n > 1 llama.cpp's usage covers the first sequence only; for it, it is exact.
            count = int(usage["completion_tokens"])
        else:
            count = self.count_tokens(text) + (1 if finish == "stop" else 0)
        return Completion(
            text=text,
            finish_reason=finish,
            completion_tokens=count,
            latency_s=latency,
            mean_logprob=_wire.mean_logprob(tokens),
            tool_calls=_wire.tool_calls(message),
            logprobs=_wire.with_top(tokens, request.top_logprobs),
        )

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                # One thread per slot: the bound, not a default pool's size, decides what runs at once.
                self._pool = ThreadPoolExecutor(
                    max_workers=self.config.n_parallel, thread_name_prefix="ponder-llamacpp"
                )
            return self._pool

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        future = asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The engine call cannot be interrupted: keep the slots until it has answered, so the bound
            # stays true, then let the cancellation through.
            await asyncio.wait([future])
            raise

    async def _send(self, request: GenerationRequest) -> Generation:
        return await self._in_thread(self._generate_sync, request)

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return stop.is_set()  # True makes llama.cpp stop decoding this request

        def run() -> None:
            try:
                self._call(self._body(request, stream=True), on_chunk)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        future = loop.run_in_executor(self._executor(), run)
        calls = _wire.ToolCallAssembler()
        try:
            while (chunk := await queue.get()) is not _END:
                for delta in _wire.stream_deltas(_raise_for_error(chunk), calls):
                    yield delta
            await future  # the engine's own error, if the call raised
        finally:
            stop.set()
            if not future.done():
                # Stops at the next token; the slots stay held until then.
                await asyncio.wait([future])

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            # Dropping the last reference stops llama.cpp's loop and frees the model.
            self._server = None
            self._context = None


@register_backend("llamacpp", LlamaCppConfig)
def _make_llamacpp(config: LlamaCppConfig) -> LlamaCppBackend:
    return LlamaCppBackend(config)
