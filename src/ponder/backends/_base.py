"""The Backend base class, which owns the request policy.

A backend implements only how to send one request for n completions (:meth:`Backend._send`) and which of
its errors may succeed on a later try (:meth:`Backend.should_retry`); optionally how to stream one request
(:meth:`Backend._stream`). Everything else lives here, once, for every backend (built-in or plugin):

* **retries** with exponential backoff and full jitter (a wait drawn from ``[0, min(max, base * 2**k)]``),
  or the wait the server asked for (:meth:`Backend.retry_after`, capped at ``backoff_max_s``), only for
  errors the backend calls retryable, and for the base's own timeout; anything else is raised at once;
* the **concurrency bound** in slots: a request takes :meth:`Backend._slots_for` slots (1 by default; the
  embedded engine counts its sequences), held while it is being sent, not while backing off;
* the per-attempt **timeout**;
* **n**: a request for more completions than the backend draws at once is split; a backend that cannot
  draw several completions per request (``draws_n_natively`` False, or :class:`NUnsupportedError` from
  ``_send``) gets one request per completion with seeds ``seed + i``, and completions a server left out
  are drawn the same way;
* **usage accounting** (:attr:`Backend.usage`) and **tracing** (:class:`BackendEvent` s to listeners and
  the ``ponder.backends`` debug log).

The public calls are ``await backend.generate(prompt, n, params)`` (a :class:`~ponder.records.Generation`),
``await backend.complete(request)`` for a full :class:`~ponder.records.GenerationRequest` (tools, top
log-probabilities, continuing an assistant turn), and ``backend.stream(request)``, an async iterator of
:class:`~ponder.records.StreamDelta` s; closing it or cancelling its consumer stops the generation.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ponder._aio import gather_all
from ponder.errors import BackendError, BackendRequestError
from ponder.records import (
    Completion,
    Generation,
    GenerationRequest,
    Prompt,
    SamplingParams,
    StreamDelta,
    Usage,
)

_log = logging.getLogger("ponder.backends")

_T = TypeVar("_T")


@dataclass(frozen=True)
class BackendPolicy:
    """How the base sends a backend's requests.

    Attributes:
        max_concurrency: slots in use at once across all calls (None: unbounded).
        max_retries: retries after a retryable failure (0: none).
        backoff_base_s: the first retry waits up to this long; each later one up to twice as long.
        backoff_max_s: cap on one wait, a server's Retry-After included.
        timeout_s: limit on one attempt (None: none); an attempt that runs out is retried.
    """

    max_concurrency: int | None = None
    max_retries: int = 0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float | None = None

    def backoff_s(self, failures: int, server_wait: float | None = None) -> float:
        """The wait before the retry after ``failures`` consecutive failures."""
        if server_wait is not None:
            return min(max(server_wait, 0.0), self.backoff_max_s)
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (failures - 1))
        return random.uniform(0, cap)


EventKind = Literal["send", "done", "retry", "fail", "stream"]


@dataclass(frozen=True)
class BackendEvent:
    """One step of a request, for tracing (see :meth:`Backend.add_listener`).

    ``send``: an attempt starts (holding ``slots``); ``done``: it answered; ``retry``: it failed
    transiently and the next attempt waits ``wait_s``; ``fail``: the request failed for good;
    ``stream``: a stream ended (answered, closed or cancelled).
    """

    kind: EventKind
    backend: str
    n: int
    attempt: int
    slots: int = 0
    wait_s: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    at: float = field(default_factory=time.perf_counter)


class NUnsupportedError(Exception):
    """Raised by ``_send`` when the engine rejected n > 1; the base then draws one completion per request.

    The backend should also stop reporting ``draws_n_natively`` so later requests fan out at once.
    """


class _Slots:
    """A FIFO weighted semaphore: a request waits until its slots are free and no earlier request waits."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, k: int) -> None:
        if not self._waiters and self.used + k <= self.capacity:
            self.used += k
            return
        entry = (k, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self.release(k)  # granted just before the cancellation arrived
            else:
                self._waiters.remove(entry)
                self._wake()  # the head may have been blocking smaller requests behind it
            raise

    def release(self, k: int) -> None:
        self.used -= k
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            k, future = self._waiters.popleft()
            if not future.done():
                self.used += k
                future.set_result(None)


class _Tally:
    """Mutable counters behind :attr:`Backend.usage`."""

    def __init__(self) -> None:
        self.values: dict[str, float] = dict.fromkeys(Usage.model_fields, 0)

    def add(self, **amounts: float) -> None:
        for key, amount in amounts.items():
            self.values[key] += amount

    def snapshot(self) -> Usage:
        return Usage.model_validate(self.values)


def _merge(parts: list[Generation]) -> Generation:
    nodes = {g.node for g in parts}
    return Generation(
        completions=[c for g in parts for c in g.completions],
        # Each request evaluates the prompt, so a split request pays for it once per part.
        prompt_tokens=sum(g.prompt_tokens for g in parts),
        cached_prompt_tokens=sum(g.cached_prompt_tokens for g in parts),
        latency_s=max((g.latency_s for g in parts), default=0.0),
        node=nodes.pop() if len(nodes) == 1 else None,
    )


class Backend(ABC):
    """Generates n completions of one prompt, under the policy of this module.

    Subclasses implement :attr:`identity`, :attr:`max_batch` and :meth:`_send`, and override
    :meth:`should_retry` (and the other hooks) where their errors or engine need it. They must draw all
    completions of a request in a way that lets the engine share the prompt (one request with ``n``
    where the engine supports it) and report per-completion token counts.
    """

    def __init__(self, policy: BackendPolicy | None = None) -> None:
        self.policy = policy or BackendPolicy()
        self._tally = _Tally()
        self._listeners: list[Callable[[BackendEvent], None]] = []
        self._slots: _Slots | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    # ---- what a backend implements ---------------------------------------------------------------

    @property
    @abstractmethod
    def identity(self) -> str:
        """A stable string naming backend + model; part of a run's identity."""

    @property
    @abstractmethod
    def max_batch(self) -> int:
        """How many sequences this backend decodes together efficiently (used to size requests)."""

    @abstractmethod
    async def _send(self, request: GenerationRequest) -> Generation:
        """Send ``request`` once and return its completions (fewer than ``n`` if the engine ignored n)."""

    def should_retry(self, exc: Exception) -> bool:
        """Whether ``exc`` (raised by ``_send``) may succeed on a later try. Default: never."""
        return False

    def retry_after(self, exc: Exception) -> float | None:
        """Seconds the engine asked to wait before retrying after ``exc`` (None: use backoff)."""
        return None

    def describe_error(self, exc: Exception) -> str:
        """A one-line cause for the message of a request that failed after its retries."""
        return str(exc) or type(exc).__name__

    @property
    def name(self) -> str:
        """How error messages name this backend (default: its identity)."""
        return self.identity

    @property
    def draws_n_natively(self) -> bool:
        """Whether one request can draw several completions (otherwise: one request per completion)."""
        return True

    @property
    def max_n_per_request(self) -> int | None:
        """Most completions one request may ask for (None: no limit); larger requests are split."""
        return None

    def _slots_for(self, request: GenerationRequest) -> int:
        """Slots of the concurrency bound that ``request`` occupies while it is sent."""
        return 1

    @property
    def request_slots(self) -> int:
        """Requests of up to :attr:`max_batch` sequences each that this backend serves at once
        (1: one engine's batch is the limit). A pool of engines, such as the Ray executor's
        actors, has one per engine; drivers keep that many more requests in flight."""
        return 1

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        """Stream ``request``'s completions. Default: send it whole and yield each completion at once.

        Implementations stop the engine's work when the iterator is closed or the awaiting task is
        cancelled (``finally`` runs in both cases).
        """
        generation = await self._send(request)
        for i, c in enumerate(generation.completions):
            yield StreamDelta(
                index=i,
                text=c.text,
                finish_reason=c.finish_reason,
                tool_calls=c.tool_calls,
                completion_tokens=c.completion_tokens,
                prompt_tokens=generation.prompt_tokens if i == 0 else None,
            )

    def context_size(self) -> int | None:
        """Tokens one request may hold, prompt and completion together (None: unknown, the
        default). Components fit their prompts and ``max_tokens`` into it. May block (load the
        model, ask the engine): call it off the event loop."""
        return None

    def count_tokens(self, text: str) -> int | None:
        """Tokens of ``text`` by the model's own tokenizer, no special tokens added (None: no
        tokenizer at hand, the default; callers then estimate). May block, like
        :meth:`context_size`."""
        return None

    async def aclose(self) -> None:
        """Release engines, connections and threads."""
        return None

    # ---- the policy ----------------------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        """Requests, completions, tokens, retries and failures of this backend so far (a snapshot)."""
        return self._tally.snapshot()

    def add_listener(self, listener: Callable[[BackendEvent], None]) -> None:
        """Call ``listener`` with every :class:`BackendEvent` of this backend (tracing)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[BackendEvent], None]) -> None:
        self._listeners.remove(listener)

    async def generate(self, prompt: Prompt, n: int, params: SamplingParams) -> Generation:
        """Return ``n`` completions of ``prompt``; ``params.seed`` is this request's seed."""
        if n < 1:
            raise BackendRequestError(f"n must be >= 1, got {n}")
        return await self.complete(GenerationRequest(prompt=prompt, n=n, params=params))

    async def complete(self, request: GenerationRequest) -> Generation:
        """Return ``request.n`` completions of ``request`` (retried, bounded, accounted)."""
        start = time.perf_counter()
        parts = await self._draw(request)
        generation = _merge(parts)
        if len(generation.completions) != request.n:
            raise BackendError(
                f"{self.name} returned {len(generation.completions)} completions, asked for {request.n}"
            )
        return generation.model_copy(update={"latency_s": time.perf_counter() - start})

    async def _draw(self, request: GenerationRequest) -> list[Generation]:
        n, seed = request.n, request.params.seed
        if n > 1 and not self.draws_n_natively:
            return await self._fanout(request, range(n))
        size = self.max_n_per_request or n
        if n <= size:
            return await self._native(request)
        chunks = [(start, min(size, n - start)) for start in range(0, n, size)]
        parts = await gather_all(
            self._native(request.with_n(k, seed + start)) for start, k in chunks
        )
        return [g for part in parts for g in part]

    async def _native(self, request: GenerationRequest) -> list[Generation]:
        """One request for all n; what the engine left out (or all, if it rejected n) one by one."""
        try:
            first = await self._attempt(request)
        except NUnsupportedError:
            first = Generation(completions=[])
        got = len(first.completions)
        if got > request.n:
            raise BackendError(f"{self.name} returned {got} completions, asked for {request.n}")
        if got == request.n:
            return [first]
        return [first, *await self._fanout(request, range(got, request.n))]

    async def _fanout(self, request: GenerationRequest, indices: range) -> list[Generation]:
        """One request per completion, concurrently; completion i uses seed ``seed + i``."""
        seed = request.params.seed
        return await gather_all(self._attempt(request.with_n(1, seed + i)) for i in indices)

    @asynccontextmanager
    async def _bound(self, slots: int) -> AsyncIterator[None]:
        capacity = self.policy.max_concurrency
        if capacity is None:
            yield
            return
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            # Futures belong to one event loop; a backend reused from another loop (successive
            # asyncio.run calls) gets a fresh bound. Nothing of the old loop can still be running.
            self._slots, self._slots_loop = _Slots(capacity), loop
        bound, slots = self._slots, min(slots, capacity)
        await bound.acquire(slots)
        try:
            yield
        finally:
            bound.release(slots)

    def _emit(
        self, kind: EventKind, request: GenerationRequest, attempt: int, **extra: Any
    ) -> None:
        event = BackendEvent(kind, self.identity, request.n, attempt, **extra)
        _log.debug("%s", event)
        for listener in self._listeners:
            listener(event)

    def _retry_wait(
        self, exc: Exception, request: GenerationRequest, failures: int
    ) -> float | None:
        """The wait before the next attempt after ``exc``; None: raise ``exc`` as it is.

        Raises:
            BackendError: ``exc`` was retryable but the retries are used up.
        """
        timed_out = isinstance(exc, _AttemptTimeout)
        if isinstance(exc, NUnsupportedError):
            return None  # not a failure: the base draws the completions one by one
        if not timed_out and not self.should_retry(exc):
            self._tally.add(failures=1)
            self._emit("fail", request, failures, error=self.describe_error(exc))
            return None
        cause = str(exc) if timed_out else self.describe_error(exc)
        if failures > self.policy.max_retries:
            self._tally.add(failures=1)
            self._emit("fail", request, failures, error=cause)
            raise BackendError(
                f"{self.name} failed after {failures} attempts; last error: {cause}",
                status_code=getattr(exc, "status_code", None),
                hint="the server may be down or overloaded; raise max_retries or lower max_concurrency",
            ) from exc
        wait = self.policy.backoff_s(failures, None if timed_out else self.retry_after(exc))
        self._tally.add(retries=1)
        self._emit("retry", request, failures, wait_s=wait, error=cause)
        return wait

    async def _attempt(self, request: GenerationRequest) -> Generation:
        """``_send`` under the bound and the timeout, retried as the policy says."""
        slots = self._slots_for(request)
        failures = 0
        while True:
            try:
                async with self._bound(slots):
                    self._emit("send", request, failures + 1, slots=slots)
                    start = time.perf_counter()
                    generation = await self._timed(self._send(request))
                    latency = time.perf_counter() - start
            except Exception as exc:
                failures += 1
                wait = self._retry_wait(exc, request, failures)
                if wait is None:
                    raise
                await asyncio.sleep(wait)  # not holding a slot
                continue
            self._account(generation.completions, generation.prompt_tokens, latency)
            self._emit("done", request, failures + 1, slots=slots, latency_s=latency)
            return generation

    async def _timed(self, aw: Awaitable[_T]) -> _T:
        timeout = self.policy.timeout_s
        if timeout is None:
            return await aw
        try:
            async with asyncio.timeout(timeout):
                return await aw
        except TimeoutError as exc:
            raise _AttemptTimeout(f"timed out after {timeout:g}s") from exc

    def _account(self, completions: list[Completion], prompt_tokens: int, latency: float) -> None:
        self._tally.add(
            requests=1,
            completions=len(completions),
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(c.completion_tokens for c in completions),
            latency_s=latency,
        )

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        """Stream ``request``'s completions as deltas (retried until the first delta arrives).

        The timeout applies to the wait for each delta; a stream that stalls after its first delta raises
        :class:`~ponder.errors.BackendError` (a retry would repeat text the consumer already has).

        Closing the iterator (``aclose``, leaving ``async with contextlib.aclosing(...)``) or cancelling the
        task that consumes it stops the generation in the engine.
        """
        limit = self.max_n_per_request
        if limit is not None and request.n > limit:
            raise BackendRequestError(
                f"{self.name} streams at most {limit} completions per request"
            )
        slots = self._slots_for(request)
        failures = 0
        while True:
            async with self._bound(slots):
                self._emit("send", request, failures + 1, slots=slots)
                start = time.perf_counter()
                inner = self._stream(request)
                try:
                    try:
                        first = await self._timed(anext(inner))
                    except StopAsyncIteration:
                        return
                    except Exception as exc:
                        failures += 1
                        wait = self._retry_wait(exc, request, failures)
                        if wait is None:
                            raise
                    else:
                        relay = self._relay(request, inner, first, start, failures + 1)
                        async with aclosing(relay):
                            async for delta in relay:
                                yield delta
                        return
                finally:
                    await inner.aclose()
            await asyncio.sleep(wait)

    async def _relay(
        self,
        request: GenerationRequest,
        inner: AsyncGenerator[StreamDelta, None],
        first: StreamDelta,
        start: float,
        attempt: int,
    ) -> AsyncGenerator[StreamDelta, None]:
        """``first`` and the rest of ``inner``, each delta within the timeout; accounted when it ends."""
        seen = _StreamTally()
        delta: StreamDelta | None = first
        try:
            while delta is not None:
                seen.add(delta)
                yield delta
                try:
                    delta = await self._timed(anext(inner))
                except StopAsyncIteration:
                    delta = None
                except _AttemptTimeout as exc:
                    # Not retried: the consumer already has part of the text.
                    raise BackendError(f"{self.name} stopped streaming: {exc}") from exc
        finally:
            latency = time.perf_counter() - start
            self._tally.add(**seen.amounts(), requests=1, latency_s=latency)
            self._emit("stream", request, attempt, latency_s=latency)


class _AttemptTimeout(Exception):
    """The base's own per-attempt timeout ran out (always retryable)."""


class _StreamTally:
    """What a stream delivered, for usage: finished completions and the token counts it reported."""

    def __init__(self) -> None:
        self.finished = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def add(self, delta: StreamDelta) -> None:
        self.finished += delta.finish_reason is not None
        self.prompt_tokens += delta.prompt_tokens or 0
        self.completion_tokens += delta.completion_tokens or 0

    def amounts(self) -> dict[str, float]:
        return {
            "completions": self.finished,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
