"""The app: FastAPI routes, API keys, limits, OpenAI-shaped errors, streaming, and running it.

Errors are OpenAI's JSON shape (``{"error": {"message", "type", "param", "code"}}``) with the status
that says what happened: 400 an invalid request (``param`` names the field; FastAPI's own 422
becomes this 400 too), 401 a missing or wrong key, 404 an unknown model (listing the served ones),
413 a body over the limit, 429 too many requests waiting or in flight for one key (with
``Retry-After``), 502 a backend failure (its cause, without secrets), 504 the per-request timeout.
A stream that fails after it started sends the error as its last event.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ponder.errors import ConfigError, PonderError, UserError
from ponder.records import Completion, Generation, ToolCall
from ponder.serve._protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ErrorDetail,
    ErrorResponse,
    ErrorType,
    Progress,
)
from ponder.serve._responses import (
    ChunkWriter,
    ThinkSplitter,
    backend_cause,
    chat_response,
    completion_response,
    new_trace_id,
    redact,
)
from ponder.serve._serving import (
    CHAT,
    COMPLETIONS,
    Answer,
    Outcome,
    RequestError,
    Service,
    Target,
    UnknownModelError,
)
from ponder.serve._ui import ui_router
from ponder.store import ServerRequest

_log = logging.getLogger("ponder.serve")

T = TypeVar("T")

TRACE_HEADER = "X-Ponder-Trace-Id"


@dataclass(frozen=True)
class Limits:
    """What one server accepts.

    Attributes:
        max_body_bytes: Largest request body (413 beyond).
        max_n: Largest ``n`` (400 beyond).
        max_tokens: Largest ``max_tokens`` (400 beyond).
        max_active: Requests worked on at once; later ones wait in a queue.
        max_queued: Requests that may wait; one more gets 429 with ``Retry-After``.
        per_key: Requests one API key may have in flight (waiting or working); one more gets 429.
        timeout_s: Limit on one request, streams included (504 beyond).
        retry_after_s: The ``Retry-After`` of a 429.
        drain_s: On SIGTERM, how long in-flight requests may run on before the server exits.
    """

    max_body_bytes: int = 1_000_000
    max_n: int = 16
    max_tokens: int = 4096
    max_active: int = 16
    max_queued: int = 64
    per_key: int = 8
    timeout_s: float = 600.0
    retry_after_s: int = 1
    drain_s: float = 30.0


class ApiError(Exception):
    """An error answered as OpenAI-shaped JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: ErrorType,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        detail = ErrorDetail(message=self.message, type=self.kind, param=self.param, code=self.code)
        return ErrorResponse(error=detail).model_dump()

    def response(self, trace_id: str | None = None) -> JSONResponse:
        headers = dict(self.headers)
        if trace_id:
            headers[TRACE_HEADER] = trace_id
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def api_error(exc: BaseException, secrets: Collection[str] = ()) -> ApiError:
    """The HTTP error a failure becomes."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, UnknownModelError):
        return ApiError(404, exc.message, "not_found_error", param="model", code="model_not_found")
    if isinstance(exc, RequestError):
        return ApiError(400, redact(str(exc), secrets), "invalid_request_error", param=exc.param)
    if isinstance(exc, UserError):
        return ApiError(400, redact(str(exc), secrets), "invalid_request_error")
    if isinstance(exc, TimeoutError):
        return ApiError(504, "the request took longer than the server's limit", "timeout_error")
    if isinstance(exc, PonderError):
        cause = redact(backend_cause(exc), secrets)
        return ApiError(502, f"the backend failed: {cause}", "server_error", code="backend_error")
    _log.exception("unexpected error", exc_info=exc)
    return ApiError(500, f"internal error: {type(exc).__name__}", "server_error")


def _validation_error(exc: ValidationError | RequestValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first["loc"] if p != "body"]
    param = ".".join(loc) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
        for e in errors[:5]
    )
    return ApiError(400, f"invalid request: {message}", "invalid_request_error", param=param)


# ----- admission ----------------------------------------------------------------------------------


class _Gate:
    """Requests in flight: at most ``max_active`` work, ``max_queued`` wait, ``per_key`` per key."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.active = asyncio.Semaphore(limits.max_active)
        self.waiting = 0
        self.per_key: dict[str, int] = {}

    def _busy(self, why: str) -> ApiError:
        return ApiError(
            429,
            why,
            "rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(self.limits.retry_after_s)},
        )

    @asynccontextmanager
    async def admit(self, key: str | None) -> AsyncIterator[None]:
        if key is not None and self.per_key.get(key, 0) >= self.limits.per_key:
            raise self._busy(f"this key has {self.limits.per_key} requests in flight (the limit)")
        if self.active.locked() and self.waiting >= self.limits.max_queued:
            raise self._busy(f"the server's queue is full ({self.limits.max_queued} waiting)")
        if key is not None:
            self.per_key[key] = self.per_key.get(key, 0) + 1
        try:
            self.waiting += 1
            try:
                await self.active.acquire()
            finally:
                self.waiting -= 1
            try:
                yield
            finally:
                self.active.release()
        finally:
            if key is not None:
                self.per_key[key] -= 1


# ----- helpers ------------------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is over {limit} bytes", "invalid_request_error")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over {limit} bytes", "invalid_request_error")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not JSON: {exc}", "invalid_request_error") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", "invalid_request_error")
    return data


def _parsed(model: type[Any], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _check_supported(request: ChatCompletionRequest | CompletionRequest, target: Target) -> None:
    """Refuse (400) what the server would otherwise silently ignore."""
    unsupported: tuple[str, str] | None = None
    if isinstance(request, CompletionRequest):
        if request.echo:
            unsupported = ("echo", "echo is not supported")
        elif request.logprobs:
            unsupported = ("logprobs", "logprobs of /v1/completions are not supported (use chat)")
    elif request.logprobs and (request.stream or target.config is not None):
        unsupported = (
            "logprobs",
            "logprobs are returned for a plain model (not a system) without stream",
        )
    if unsupported is not None:
        param, message = unsupported
        raise ApiError(400, message, "invalid_request_error", param=param)


def _check_limits(request: ChatCompletionRequest | CompletionRequest, limits: Limits) -> None:
    if request.n > limits.max_n:
        raise ApiError(
            400,
            f"n is {request.n}; this server allows at most {limits.max_n}",
            "invalid_request_error",
            param="n",
        )
    limit = request.token_limit
    if limit is not None and limit > limits.max_tokens:
        param = (
            "max_completion_tokens"
            if getattr(request, "max_completion_tokens", None)
            else "max_tokens"
        )
        raise ApiError(
            400,
            f"{param} is {limit}; this server allows at most {limits.max_tokens}",
            "invalid_request_error",
            param=param,
        )


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """``work``, cancelled if the client goes away first (the body is already read)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left = watcher.done() and not task.done()
        if not task.done():
            task.cancel()
        watcher.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if left:
        raise _ClientGone
    return task.result()


class _ClientGone(Exception):
    """The client disconnected before its answer was ready (its work was cancelled)."""


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_keys: Collection[str], *, allow_no_keys: bool) -> str | None:
    """Whether the server may listen on ``host``; a warning to print, if any.

    Raises:
        ConfigError: a non-loopback address without API keys and without ``allow_no_keys``.
    """
    if _is_loopback(host) or api_keys:
        return None
    if not allow_no_keys:
        raise ConfigError(
            f"--host {host} is reachable from other machines, and no API key is set",
            hint="set keys with --api-key-file or $PONDER_API_KEYS, or pass "
            "--insecure-no-auth to serve without them",
        )
    return (
        f"serving on {host} WITHOUT API keys: anyone who can reach this address can use the models"
    )


# ----- the app ------------------------------------------------------------------------------------


class _Request:
    """One request's bookkeeping: trace id, timing, what gets stored."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.trace_id = new_trace_id()
        self.created = time.time()
        self.start = time.perf_counter()
        self.body: dict[str, Any] | None = None
        self.target: Target | None = None

    def record(
        self,
        status: int,
        *,
        outcome: Outcome | None = None,
        response: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> ServerRequest | None:
        if self.body is None:
            return None
        trace = outcome.traces[0].model_dump(mode="json") if outcome and outcome.traces else None
        return ServerRequest(
            id=self.trace_id,
            created_at=self.created,
            endpoint=self.endpoint,
            model=str(self.body.get("model", "")),
            system=self.target.system if self.target else None,
            status=status,
            latency_s=time.perf_counter() - self.start,
            prompt_tokens=outcome.prompt_tokens if outcome else 0,
            completion_tokens=outcome.completion_tokens if outcome else 0,
            calls=outcome.calls if outcome else 0,
            request=self.body,
            response=response,
            trace=trace,
            error=error,
        )


def create_app(
    service: Service, *, api_keys: Collection[str] = (), limits: Limits | None = None
) -> FastAPI:
    """The OpenAI-compatible app over ``service``.

    Args:
        service: The served models and systems (closed when the app shuts down).
        api_keys: Accepted keys (``Authorization: Bearer KEY``); empty: no authentication.
        limits: Request limits (default: :class:`Limits`).
    """
    limits = limits or Limits()
    keys = frozenset(api_keys)
    db: Path | None = service.db
    gate = _Gate(limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await service.aclose()

    app = FastAPI(title="Ponder", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind: ErrorType = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, str(exc.detail), kind).response()

    def authorize(request: Request) -> str | None:
        """The caller's key (None when the server has none)."""
        if not keys:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            for key in keys:
                if hmac.compare_digest(key.encode(), token.encode()):
                    return key
        raise ApiError(
            401,
            "missing or invalid API key (send Authorization: Bearer KEY)",
            "authentication_error",
            code="invalid_api_key",
        )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": service.names()}

    @app.get("/v1/models")
    async def models(_: str | None = Depends(authorize)) -> dict[str, Any]:
        return service.model_list().model_dump()

    async def handle(request: Request, key: str | None, endpoint: str) -> Response:
        req = _Request(endpoint)
        try:
            req.body = _json_object(await _read_body(request, limits.max_body_bytes))
            kind = ChatCompletionRequest if endpoint == CHAT else CompletionRequest
            parsed = _parsed(kind, req.body)
            _check_limits(parsed, limits)
            req.target = service.resolve(parsed.model, parsed.ponder)
            _check_supported(parsed, req.target)
        except Exception as exc:  # noqa: BLE001 (every failure becomes an HTTP error; api_error logs the unexpected)
            return await _failed(req, exc)
        admission = gate.admit(key)
        try:
            await admission.__aenter__()
        except Exception as exc:  # noqa: BLE001 (every failure becomes an HTTP error; api_error logs the unexpected)
            return await _failed(req, exc)
        if parsed.stream:
            events = _stream_events(req, parsed, request)

            async def body() -> AsyncGenerator[str, None]:
                async with aclosing(events) as it:
                    async for event in it:
                        yield event

            return _Stream(
                body(),
                lambda: admission.__aexit__(None, None, None),
                media_type="text/event-stream",
                headers={TRACE_HEADER: req.trace_id, "Cache-Control": "no-cache"},
            )
        try:
            outcome = await asyncio.wait_for(
                _until_disconnect(request, _run(req, parsed)), limits.timeout_s
            )
            build = chat_response if endpoint == CHAT else completion_response
            response = build(req.trace_id, parsed.model, req.target, outcome).model_dump(
                exclude_none=True
            )
        except _ClientGone:
            # Nobody reads this answer; 499 (nginx's "client closed request") is what is stored.
            await _store(req.record(499, error="the client disconnected"))
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001 (every failure becomes an HTTP error; api_error logs the unexpected)
            return await _failed(req, exc)
        finally:
            await admission.__aexit__(None, None, None)
        await _store(req.record(200, outcome=outcome, response=response))
        return JSONResponse(response, headers={TRACE_HEADER: req.trace_id})

    async def _failed(req: _Request, exc: BaseException) -> JSONResponse:
        error = api_error(exc, keys)
        await _store(req.record(error.status, error=error.message))
        return error.response(req.trace_id)

    async def _store(record: ServerRequest | None) -> None:
        if record is None:
            return
        try:
            await service.store(record)
        except PonderError as exc:  # a failed write must not fail the answer; it is logged
            _log.error("could not store request %s: %s", record.id, exc)

    async def _run(req: _Request, parsed: Any) -> Outcome:
        assert req.target is not None
        target = req.target
        if isinstance(parsed, ChatCompletionRequest):
            generation, messages = service.chat_generation(parsed)
            if target.config is None:
                top = parsed.top_logprobs or 0
                return await service.run_passthrough(target, generation, top)
            return await service.run_system(
                target, messages, parsed, tools=generation.tools, tool_choice=generation.tool_choice
            )
        if target.config is None:
            generation = service.completion_generation(parsed)
            return await service.run_passthrough(target, generation)
        return await service.run_system(target, parsed.text, parsed)

    async def _stream_events(
        req: _Request, parsed: Any, request: Request
    ) -> AsyncGenerator[str, None]:
        chat = isinstance(parsed, ChatCompletionRequest)
        writer = ChunkWriter(req.trace_id, parsed.model, chat=chat)
        deadline = asyncio.get_running_loop().time() + limits.timeout_s
        outcome: Outcome | None = None
        status, error = 200, None
        try:
            if chat:
                for i in range(parsed.n):
                    yield _sse(writer.role(i))
            assert req.target is not None
            if req.target.config is None:
                stream = _stream_passthrough(req, parsed, writer, deadline)
            else:
                stream = _stream_system(req, parsed, writer, deadline)
            async with aclosing(stream) as chunks:
                async for item in chunks:
                    if isinstance(item, Outcome):
                        outcome = item
                    else:
                        yield _sse(item)
            if outcome is not None and parsed.include_usage:
                yield _sse(writer.usage(outcome))
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            status, error = 499, "the client disconnected"
            raise
        except Exception as exc:  # noqa: BLE001 (every failure becomes an HTTP error; api_error logs the unexpected)
            err = api_error(exc, keys)
            status, error = err.status, err.message
            yield _sse(err.body())
        finally:
            response = None
            if outcome is not None:
                build = chat_response if chat else completion_response
                assert req.target is not None
                response = build(req.trace_id, parsed.model, req.target, outcome).model_dump(
                    exclude_none=True
                )
            await asyncio.shield(
                _store(req.record(status, outcome=outcome, response=response, error=error))
            )

    async def _stream_passthrough(
        req: _Request, parsed: Any, writer: ChunkWriter, deadline: float
    ) -> AsyncGenerator[Any, None]:
        assert req.target is not None
        backend = req.target.model.backend
        if isinstance(parsed, ChatCompletionRequest):
            generation, _ = service.chat_generation(parsed)
        else:
            generation = service.completion_generation(parsed)
        hold = bool(generation.tools) and generation.tool_choice != "none"
        texts: dict[int, list[str]] = {i: [] for i in range(parsed.n)}
        finishes: dict[int, Any] = {}
        calls: dict[int, tuple[ToolCall, ...]] = {}
        splitters = {i: ThinkSplitter() for i in range(parsed.n)}
        prompt_tokens = completion_tokens = 0
        async with aclosing(backend.stream(generation)) as deltas:
            while True:
                try:
                    delta = await _before(anext(deltas), deadline)
                except StopAsyncIteration:
                    break
                prompt_tokens += delta.prompt_tokens or 0
                completion_tokens += delta.completion_tokens or 0
                i = delta.index
                if delta.text:
                    texts[i].append(delta.text)
                    if not hold:
                        for chunk in _split_pieces(
                            writer, splitters[i], i, delta.text, chat=writer.chat
                        ):
                            yield chunk
                if delta.finish_reason is not None:
                    finishes[i] = delta.finish_reason
                    calls[i] = delta.tool_calls
        outcome = service.passthrough_outcome(
            generation,
            _generation_of(texts, finishes, calls, prompt_tokens, completion_tokens),
        )
        if parsed.n > 1:
            await _recount(backend, outcome, texts, finishes)
        for i, answer in enumerate(outcome.answers):
            if hold:
                for chunk in _answer_chunks(writer, i, answer):
                    yield chunk
            else:
                for chunk in _flush(writer, splitters[i], i):
                    yield chunk
                if answer.tool_calls:
                    yield writer.tool_calls(i, answer.tool_calls)
            yield writer.finish(i, answer.finish)
        yield outcome

    async def _stream_system(
        req: _Request, parsed: Any, writer: ChunkWriter, deadline: float
    ) -> AsyncGenerator[Any, None]:
        assert req.target is not None
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        tools: tuple[Any, ...] = ()
        choice = None
        if isinstance(parsed, ChatCompletionRequest):
            generation, query = service.chat_generation(parsed)
            tools, choice = generation.tools, generation.tool_choice
        else:
            query = parsed.text
        live = parsed.n == 1 and not tools
        progress_on = parsed.ponder is None or parsed.ponder.progress
        splitter = ThinkSplitter()

        def sink(text: str) -> None:
            queue.put_nowait(("text", text))

        def progress(event: Progress) -> None:
            if progress_on:
                queue.put_nowait(("progress", event))

        work = asyncio.ensure_future(
            service.run_system(
                req.target,
                query,
                parsed,
                tools=tools,
                tool_choice=choice,
                sink=sink if live else None,
                progress=progress,
            )
        )
        streamed = False
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await _before(
                    asyncio.wait({work, getter}, return_when=asyncio.FIRST_COMPLETED), deadline
                )
                if not getter.done():
                    getter.cancel()
                    if queue.empty():
                        break
                    continue
                kind, value = getter.result()
                if kind == "progress":
                    yield writer.progress(value)
                else:
                    streamed = True
                    for chunk in _split_pieces(writer, splitter, 0, value, chat=writer.chat):
                        yield chunk
            outcome = work.result()
        finally:
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        for i, answer in enumerate(outcome.answers):
            if streamed and i == 0:
                for chunk in _flush(writer, splitter, 0):
                    yield chunk
                if answer.tool_calls:
                    yield writer.tool_calls(0, answer.tool_calls)
            else:
                for chunk in _answer_chunks(writer, i, answer):
                    yield chunk
            yield writer.finish(i, answer.finish)
        yield outcome

    @app.post(CHAT)
    async def chat_completions(request: Request, key: str | None = Depends(authorize)) -> Response:
        return await handle(request, key, CHAT)

    @app.post(COMPLETIONS)
    async def completions(request: Request, key: str | None = Depends(authorize)) -> Response:
        return await handle(request, key, COMPLETIONS)

    if db is not None:
        # The browser view of the same database; it does its own (cookie) login with the same keys.
        app.include_router(ui_router(db, api_keys=keys))
    return app


class _Stream(StreamingResponse):
    """A streamed response that releases its admission when it ends, however it ends (also when
    the client left before its body started, so the body never ran)."""

    def __init__(self, content: Any, release: Callable[[], Awaitable[Any]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()


async def _before(aw: Awaitable[T], deadline: float) -> T:
    """``aw`` if it finishes before ``deadline`` (loop time), else TimeoutError."""
    # timeout_at, not wait_for: on Python 3.11 wait_for makes a task per call (here: per token).
    async with asyncio.timeout_at(deadline):
        return await aw


def _split_pieces(
    writer: ChunkWriter, splitter: ThinkSplitter, index: int, text: str, *, chat: bool
) -> list[dict[str, Any]]:
    if not chat:
        return [writer.text(index, text)]
    return [writer.text(index, piece, reasoning=r) for r, piece in splitter.feed(text) if piece]


def _flush(writer: ChunkWriter, splitter: ThinkSplitter, index: int) -> list[dict[str, Any]]:
    if not writer.chat:
        return []
    return [writer.text(index, piece, reasoning=r) for r, piece in splitter.flush() if piece]


def _answer_chunks(writer: ChunkWriter, index: int, answer: Answer) -> list[dict[str, Any]]:
    out = []
    if answer.reasoning and writer.chat:
        out.append(writer.text(index, answer.reasoning, reasoning=True))
    if answer.text:
        out.append(writer.text(index, answer.text))
    if answer.tool_calls:
        out.append(writer.tool_calls(index, answer.tool_calls))
    return out


def _generation_of(
    texts: dict[int, list[str]],
    finishes: dict[int, Any],
    calls: dict[int, tuple[ToolCall, ...]],
    prompt_tokens: int,
    completion_tokens: int,
) -> Generation:
    completions = [
        Completion(
            text="".join(texts[i]),
            finish_reason=finishes.get(i, "unknown"),
            tool_calls=calls.get(i, ()),
        )
        for i in sorted(texts)
    ]
    if completions:
        completions[0] = completions[0].model_copy(update={"completion_tokens": completion_tokens})
    return Generation(completions=completions, prompt_tokens=prompt_tokens)


async def _recount(
    backend: Any, outcome: Outcome, texts: dict[int, list[str]], finishes: dict[int, Any]
) -> None:
    """Completion tokens of a streamed n > 1 request, where the engine reports the first only.

    The backend's tokenizer counts each text (plus the end-of-sequence token of one that stopped);
    without one, the engine's report stands.
    """
    counts = []
    for i in sorted(texts):
        n = await asyncio.to_thread(backend.count_tokens, "".join(texts[i]))
        if n is None:
            return
        counts.append(n + (1 if finishes.get(i) == "stop" else 0))
    outcome.completion_tokens = sum(counts)


__all__ = ["ApiError", "Limits", "check_bind", "create_app"]
