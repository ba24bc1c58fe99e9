"""The ``openai`` backend: any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs).

Requests go through the official ``openai`` client with its own retries and timeout switched off: the
:class:`~ponder.backends.Backend` base retries, bounds and times out every request (``max_retries``,
``backoff_*``, ``max_concurrency`` and ``timeout_s`` of the config are its policy). This module only says
what may succeed on a second try (429, 408, 5xx, timeouts, lost connections; never any other 4xx), how long
the server asked to wait (``Retry-After``), and what a 400 teaches about the server:

* ``n`` > 1 (``n_mode="auto"``): the backend switches to one request per completion for the rest of its life
  (a server that answers ``n`` with fewer completions is treated the same way);
* ``logprobs``: the backend stops asking for them for the rest of its life and estimates token counts
  (:func:`_split_usage`).

``base_url`` may list several replicas of one model: each attempt goes to one of them, chosen and kept
healthy by a :class:`~ponder.backends.ReplicaSet` (least outstanding requests, failing replicas out of
rotation for a capped exponential back-off, then probed); the base's retry loop is the only one, so a
retryable failure is retried on another replica at once (:meth:`OpenAIBackend.retry_after` returns 0) or,
when every replica is out, after the soonest one comes back. The URLs are not part of the identity
(:attr:`OpenAIBackend.identity`).

The API key is read from the environment variable named by ``api_key_env``; it is never stored in the
config, logged, or put into an error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import re
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ponder.backends import _wire
from ponder.backends._base import Backend, BackendPolicy, NUnsupportedError
from ponder.backends._registry import register_backend
from ponder.backends._replicas import Replica, ReplicasDownError, ReplicaSet
from ponder.errors import BackendError, BackendRequestError
from ponder.records import (
    Completion,
    FinishReason,
    Generation,
    GenerationRequest,
    Message,
    StreamDelta,
)

_log = logging.getLogger("ponder.backends.openai")

_PLACEHOLDER_KEY = "EMPTY"
"""Sent when the key variable is unset: local servers accept any key, and the header must not be empty."""

# A standalone token "n" (as in "n must be 1", "'n' is not supported", "Unsupported parameter: 'n'",
# "Only n=1 is supported"), not the letter inside a word, "n_probs", "n-gram" or an escaped "\n".
_MENTIONS_N = re.compile(r"(?<![\w\\-])n(?![\w-])")
_MENTIONS_LOGPROBS = re.compile(r"logprob", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Typical characters per token of a BPE tokenizer on English and code; used only by the token-count
# heuristic when the server gives no logprobs (see _split_usage).
_CHARS_PER_TOKEN = 4.0


class OpenAIConfig(BaseModel):
    """Config of a backend that talks to an OpenAI-compatible HTTP server."""

    # Inputs are hidden from validation messages: a key pasted into api_key_env must not be echoed.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    kind: Literal["openai"] = "openai"
    base_url: str | list[str] = Field(
        description=(
            "Server URL, e.g. http://127.0.0.1:8000/v1 (a URL without a path gets /v1), or a list of "
            "URLs of replicas serving the same model (requests go to the least busy one)."
        )
    )
    model: str = Field(min_length=1, description="Model name as the server knows it.")
    identity: Literal["model", "url"] = Field(
        "model",
        description=(
            "What names the model in run identities. model: the model name (and replica_set), not "
            "the URLs, so 1 or 3 replicas make the same run; every URL must serve the same weights. "
            "url: the single base_url as well (the rule of runs stored before replica sets)."
        ),
    )
    replica_set: str | None = Field(
        None,
        min_length=1,
        description=(
            "A name that tells apart servers giving different weights the same model name (part of "
            "the identity when identity is 'model')."
        ),
    )
    replica_backoff_base_s: float = Field(
        1.0,
        gt=0,
        description="A failing replica is out of rotation this long, doubling per failure.",
    )
    replica_backoff_max_s: float = Field(
        60.0, gt=0, description="Cap on the time a failing replica is out of rotation."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description=f"NAME of the environment variable holding the API key ({_PLACEHOLDER_KEY!r} if unset).",
    )
    n_mode: Literal["auto", "native", "fanout"] = Field(
        "auto",
        description=(
            "native: one request with n; fanout: n requests with n=1 and seeds seed+i; auto: native until "
            "the server rejects n, then fanout."
        ),
    )
    max_concurrency: int = Field(8, ge=1, description="HTTP requests in flight at once, in all.")
    max_retries: int = Field(
        5, ge=0, description="Retries after a 429, 408, 5xx, timeout or lost connection."
    )
    timeout_s: float = Field(300.0, gt=0, description="Timeout of one HTTP request (one attempt).")
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0, description="Cap on one wait, Retry-After included.")
    max_batch: int = Field(
        16, ge=1, description="Completions per request that the server batches well."
    )
    logprobs: bool = Field(
        True,
        description="Ask for token logprobs (exact per-completion token counts, mean_logprob).",
    )
    endpoint: Literal["chat", "completions"] = Field(
        "chat",
        description=(
            "Where message prompts go; completions renders them as plain text. Raw string prompts "
            "always go to /completions."
        ),
    )

    @field_validator("base_url")
    @classmethod
    def _normalise_base_url(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            return _normalise_url(value)
        urls = [_normalise_url(v) for v in value]
        if not urls:
            raise ValueError("base_url must name at least one URL")
        if len(set(urls)) != len(urls):
            raise ValueError("base_url lists the same URL twice; give each replica once")
        return urls

    @field_validator("identity")
    @classmethod
    def _check_identity(cls, value: str, info: ValidationInfo) -> str:
        urls = info.data.get("base_url")  # absent when it was invalid itself
        if value == "url" and isinstance(urls, list) and len(urls) != 1:
            raise ValueError(
                "identity 'url' names the run by its one base_url; with several replicas use "
                "identity 'model' (and replica_set to name the set)"
            )
        return value

    def identity_exempt(self) -> frozenset[str]:
        """Fields that do not name another run (read by system run identities): the URLs, unless
        ``identity`` is ``url``."""
        return frozenset({"base_url"}) if self.identity == "model" else frozenset()

    @property
    def base_urls(self) -> list[str]:
        """Every replica's URL, in the order given."""
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)

    @field_validator("api_key_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            # The value is deliberately not repeated: it may be the key itself, pasted by mistake.
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                "not the key"
            )
        return value


def _normalise_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("base_url must be an http(s) URL such as http://127.0.0.1:8000/v1")
    # A bare server address means the conventional OpenAI prefix; an explicit path is kept as given.
    path = parts.path.rstrip("/") or "/v1"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _render_plain(messages: list[Message]) -> str:
    """Messages as plain text for the /completions endpoint (base models, no chat template).

    Contents are separated by blank lines (role names would be noise to a base model; Ponder's task
    templates already carry their own "Q:"/"A:" cues). When the last message is the user's, a blank line
    follows it so that the completion starts the answer.
    """
    text = "\n\n".join(m.content for m in messages)
    if messages and messages[-1].role == "user":
        text += "\n\n"
    return text


def _split_usage(
    texts: list[str], finishes: list[FinishReason], usage_tokens: int | None, max_tokens: int
) -> list[int]:
    """Estimate per-completion token counts from ``usage.completion_tokens`` (no logprobs available).

    Heuristic, in order:

    * one completion: usage is its count;
    * a completion that finished with ``length`` decoded exactly ``max_tokens`` tokens;
    * for the rest, decide whether usage is the SUM over all completions (OpenAI, vLLM) or the count of ONE
      completion (llama.cpp's server reports one sample's count when n > 1). A single completion cannot
      exceed ``max_tokens``, so more than that is a sum; otherwise pick the reading whose characters per
      token is nearer (in ratio) to a typical tokenizer's ~4;
    * a sum, less the ``length`` completions' exact counts, is shared among the others in proportion to
      their text length; a one-completion count gives a tokens-per-character rate (against the mean text
      length) applied to each text.

    Counts are clamped to [1, max_tokens] for non-empty texts. Without usage, non-``length`` counts are 0.
    """
    n = len(texts)
    if usage_tokens is None:
        return [max_tokens if f == "length" else 0 for f in finishes]
    if n == 1:
        return [usage_tokens]
    counts = [max_tokens if f == "length" else 0 for f in finishes]
    rest = [i for i, f in enumerate(finishes) if f != "length"]
    if not rest or usage_tokens <= 0:
        return counts
    total_chars = sum(len(t) for t in texts)
    mean_chars = total_chars / n
    if usage_tokens > max_tokens:
        is_sum = True
    else:
        chars_per_token_if_sum = max(total_chars, 1) / usage_tokens
        chars_per_token_if_one = max(mean_chars, 1) / usage_tokens
        is_sum = abs(math.log(chars_per_token_if_sum / _CHARS_PER_TOKEN)) <= abs(
            math.log(chars_per_token_if_one / _CHARS_PER_TOKEN)
        )
    if is_sum:
        remaining = max(usage_tokens - max_tokens * (n - len(rest)), 0)
        rest_chars = sum(len(texts[i]) for i in rest)
        for i in rest:
            share = len(texts[i]) / rest_chars if rest_chars else 1 / len(rest)
            counts[i] = round(remaining * share)
    else:
        rate = usage_tokens / mean_chars if mean_chars else 0.0
        for i in rest:
            counts[i] = round(len(texts[i]) * rate)
    for i in rest:
        counts[i] = min(max(counts[i], 1 if texts[i] else 0), max_tokens)
    return counts


def _retry_after_s(headers: Any) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms``, or ``Retry-After`` as seconds or a date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass  # malformed: fall through to Retry-After
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass  # not a number: it may be an HTTP date
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _error_body(exc: openai.APIStatusError) -> dict[str, Any]:
    # The client unwraps {"error": {...}}; other servers send {"message": ...} or FastAPI's {"detail": ...}.
    return exc.body if isinstance(exc.body, dict) else {}


def _server_message(exc: openai.APIStatusError) -> str:
    body = _error_body(exc)
    for key in ("message", "detail", "error"):
        if body.get(key):
            return str(body[key])
    try:
        text = exc.response.text.strip()
    except (UnicodeDecodeError, RuntimeError):
        text = ""  # not readable as text (or not read): fall back to the client's own summary
    return text[:500] or exc.message


class OpenAIBackend(Backend):
    """Completions from an OpenAI-compatible server. Create with :func:`ponder.backends.create_backend`."""

    def __init__(self, config: OpenAIConfig) -> None:
        super().__init__(
            BackendPolicy(
                max_concurrency=config.max_concurrency,
                max_retries=config.max_retries,
                backoff_base_s=config.backoff_base_s,
                backoff_max_s=config.backoff_max_s,
                timeout_s=config.timeout_s,
            )
        )
        self.config = config
        # Both are learned from the server's 400s and never revert: retrying a rejected feature cannot help.
        self._n_mode: Literal["auto", "native", "fanout"] = config.n_mode
        self._logprobs = config.logprobs
        self._clients: dict[str, openai.AsyncOpenAI] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._api_key = _PLACEHOLDER_KEY
        self.replicas = ReplicaSet(
            config.base_urls,
            backoff_base_s=config.replica_backoff_base_s,
            backoff_max_s=config.replica_backoff_max_s,
        )

    @property
    def identity(self) -> str:
        """``openai:replicas:MODEL`` (``openai:replicas/SET:MODEL`` with a ``replica_set``): the URLs
        are left out, so the same model served by 1 or 3 replicas, or moved to another host, is the
        same run. With ``identity: url``, ``openai:URL:MODEL`` (runs stored before replica sets)."""
        config = self.config
        if config.identity == "url":
            return f"openai:{config.base_urls[0]}:{config.model}"
        where = "replicas" if config.replica_set is None else f"replicas/{config.replica_set}"
        return f"openai:{where}:{config.model}"

    @property
    def name(self) -> str:
        urls = self.config.base_urls
        return (
            urls[0] if len(urls) == 1 else f"replicas of {self.config.model!r} ({', '.join(urls)})"
        )

    @property
    def max_batch(self) -> int:
        return self.config.max_batch

    @property
    def n_mode(self) -> Literal["auto", "native", "fanout"]:
        """The current mode: ``auto`` becomes ``fanout`` once the server has rejected ``n``."""
        return self._n_mode

    @property
    def draws_n_natively(self) -> bool:
        return self._n_mode != "fanout"

    @property
    def logprobs(self) -> bool:
        """Whether logprobs are still requested (False once the server has rejected them)."""
        return self._logprobs

    # ---- what the base asks ------------------------------------------------------------------------

    def should_retry(self, exc: Exception) -> bool:
        if isinstance(exc, ReplicasDownError):
            return True
        if isinstance(exc, openai.APIStatusError):
            # 408 is the server saying the request timed out: as transient as our own timeout.
            return exc.status_code in (408, 429) or exc.status_code >= 500
        # APITimeoutError is an APIConnectionError: both may work on a second try.
        return isinstance(exc, openai.APIConnectionError)

    def retry_after(self, exc: Exception) -> float | None:
        if isinstance(exc, ReplicasDownError):
            return exc.wait_s
        server_wait = (
            _retry_after_s(exc.response.headers) if isinstance(exc, openai.APIStatusError) else None
        )
        if self.replicas.single:
            return server_wait
        # The failed replica is out of rotation (for at least what its server asked): go to another
        # at once, or wait for the first one back.
        return self.replicas.wait_s()

    def describe_error(self, exc: Exception) -> str:
        one = self._describe_one(exc)
        if self.replicas.single or isinstance(exc, ReplicasDownError):
            return one
        return f"{one} [replicas: {self.replicas.summary()}]"

    def _describe_one(self, exc: Exception) -> str:
        if isinstance(exc, openai.APIStatusError):
            return f"HTTP {exc.status_code}: {self._redact(_server_message(exc))}"
        if isinstance(exc, openai.APITimeoutError):
            return "timed out"
        if isinstance(exc, openai.APIConnectionError):
            detail = exc.__cause__ if exc.__cause__ is not None else exc
            return f"connection failed: {self._redact(str(detail))}"
        return self._redact(super().describe_error(exc))

    # ---- one request ---------------------------------------------------------------------------------

    def _connection(self, url: str) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A connection pool belongs to one event loop; a backend reused from another loop (e.g.
            # successive asyncio.run calls) gets fresh ones. The old pools' loop is gone, so they cannot
            # be closed from here; their sockets are released when they are collected.
            self._api_key = os.environ.get(self.config.api_key_env) or _PLACEHOLDER_KEY
            self._clients = {}
            self._loop = loop
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=url,
                timeout=None,  # the base times out each attempt (one place for timeouts)
                max_retries=0,
            )
        return client

    @asynccontextmanager
    async def _replica(self) -> AsyncIterator[Replica]:
        """A replica for one attempt, released with the attempt's outcome (see :mod:`._replicas`)."""
        replica = self.replicas.acquire()
        try:
            yield replica
        except NUnsupportedError:
            self.replicas.release(replica)  # it answered: the model, not the server, lacks n
            raise
        except Exception as exc:
            down = self.should_retry(exc)
            asked = (
                _retry_after_s(exc.response.headers)
                if isinstance(exc, openai.APIStatusError)
                else None
            )
            self.replicas.release(
                replica, error=self._describe_one(exc), down=down, at_least_s=asked
            )
            raise
        except BaseException:
            self.replicas.release_cancelled(replica)
            raise
        else:
            self.replicas.release(replica)

    def _redact(self, text: str) -> str:
        # Servers sometimes echo the key they rejected; never let it reach a log or an error message.
        if self._api_key != _PLACEHOLDER_KEY and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return text

    def _uses_completions(self, request: GenerationRequest) -> bool:
        return isinstance(request.prompt, str) or self.config.endpoint == "completions"

    def _kwargs(self, request: GenerationRequest, stream: bool) -> dict[str, Any]:
        """The client arguments of ``request`` (chat or /completions)."""
        params = request.params
        # top_k / min_p are not OpenAI parameters (hosted APIs reject them); vLLM, SGLang and llama.cpp
        # accept them, so they are sent only when the user set them.
        extra: dict[str, Any] = {}
        if params.top_k:
            extra["top_k"] = params.top_k
        if params.min_p:
            extra["min_p"] = params.min_p
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "seed": params.seed,
        }
        if request.n > 1:  # some servers reject the parameter itself, even n=1
            kwargs["n"] = request.n
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
        # 1 (not 0): llama.cpp sends no token logprobs at all for 0.
        top = max(request.top_logprobs, 1)
        wants_logprobs = request.top_logprobs > 0 or (self._logprobs and not stream)
        if self._uses_completions(request):
            prompt = request.prompt
            kwargs["prompt"] = prompt if isinstance(prompt, str) else _render_plain(prompt)
            if wants_logprobs:
                kwargs["logprobs"] = top
        else:
            assert not isinstance(request.prompt, str)
            kwargs["messages"] = [_wire.message_json(m) for m in request.prompt]
            if wants_logprobs:
                kwargs["logprobs"] = True
                kwargs["top_logprobs"] = top
            if request.tools:
                kwargs["tools"] = _wire.tools_json(request.tools)
            if request.tool_choice is not None:
                kwargs["tool_choice"] = _wire.tool_choice_json(request.tool_choice)
            if request.continue_final_message:
                # vLLM's names; llama.cpp continues a final assistant message without being asked.
                extra["continue_final_message"] = True
                extra["add_generation_prompt"] = False
        if extra:
            kwargs["extra_body"] = extra
        return kwargs

    async def _create(self, request: GenerationRequest, stream: bool, url: str) -> Any:
        """One HTTP request: a response (as plain data) or, with ``stream``, the client's open stream."""
        client = self._connection(url)
        endpoint = (
            client.completions if self._uses_completions(request) else client.chat.completions
        )
        while True:
            try:
                result = await endpoint.create(**self._kwargs(request, stream))
                return result if stream else result.model_dump()
            except openai.APIStatusError as exc:
                if self.should_retry(exc):
                    raise
                status, message = exc.status_code, self._redact(_server_message(exc))
                if status == 400 and self._is_about_n(exc, message, request.n):
                    self._switch_to_fanout(f"it rejected n={request.n}: {message}")
                    raise NUnsupportedError(message) from exc
                if status == 400 and self._logprobs and self._is_about_logprobs(exc, message):
                    # A different request, not a retry of the same one: it does not use up a retry.
                    self._disable_logprobs(message)
                    if request.top_logprobs == 0:
                        continue
                raise self._request_error(status, message, request.n, url) from exc

    async def _send(self, request: GenerationRequest) -> Generation:
        async with self._replica() as replica:
            start = time.perf_counter()
            data = await self._create(request, stream=False, url=replica.url)
            latency = time.perf_counter() - start
            generation = self._parse(data, request, latency, replica.url)
        got = len(generation.completions)
        if got < request.n:
            # Some servers (e.g. Ollama) ignore n and answer with one choice.
            if self._n_mode == "native":
                raise BackendError(
                    f"{self.name} returned {got} completions for n={request.n}",
                    hint="the server seems to ignore n; set n_mode to 'fanout' (or 'auto')",
                )
            self._switch_to_fanout(f"it answered n={request.n} with {got} completion(s)")
        return generation

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        if request.n > 1 and not self.draws_n_natively:
            raise BackendRequestError(
                f"{self.name} draws one completion per request; stream n=1 requests"
            )
        async with self._replica() as replica:
            stream = await self._create(request, stream=True, url=replica.url)
            calls = _wire.ToolCallAssembler()
            try:
                async for chunk in stream:
                    for delta in _wire.stream_deltas(chunk.model_dump(), calls):
                        yield delta
            finally:
                # Closing the connection is what stops the server's generation.
                await stream.close()

    # ---- what the server taught us -----------------------------------------------------------------

    def _switch_to_fanout(self, why: str) -> None:
        # Concurrent requests may all learn this at once; log it once.
        if self._n_mode != "fanout":
            self._n_mode = "fanout"
            _log.info(
                "%s does not draw several completions per request (%s); "
                "sending one request per completion from now on",
                self.name,
                self._redact(why),
            )

    def _disable_logprobs(self, why: str) -> None:
        if self._logprobs:
            self._logprobs = False
            _log.warning(
                "%s rejected logprobs (%s); requesting none from now on, so per-completion token "
                "counts are estimated from usage",
                self.name,
                self._redact(why),
            )

    def _is_about_n(self, exc: openai.APIStatusError, message: str, n: int) -> bool:
        if n <= 1 or self._n_mode != "auto":
            return False
        return _error_body(exc).get("param") == "n" or bool(_MENTIONS_N.search(message))

    @staticmethod
    def _is_about_logprobs(exc: openai.APIStatusError, message: str) -> bool:
        param = str(_error_body(exc).get("param") or "")
        return "logprob" in param or bool(_MENTIONS_LOGPROBS.search(message))

    def _request_error(self, status: int, message: str, n: int, url: str) -> BackendRequestError:
        where = f"{url} (model {self.config.model!r})"
        hint: str | None = None
        if status in (401, 403):
            env = self.config.api_key_env
            if env in os.environ:
                hint = f"check the API key in the environment variable {env}"
            else:
                hint = (
                    f"the environment variable {env} is not set, so no API key was sent; "
                    "set it, or name another variable with api_key_env"
                )
        elif status == 404:
            hint = "check base_url (usually ending in /v1) and the model name the server serves"
        elif status == 400 and n > 1 and _MENTIONS_N.search(message):
            hint = "the server may not support n > 1; set n_mode to 'fanout' or 'auto'"
        return BackendRequestError(
            f"{where} rejected the request (HTTP {status}): {message}",
            status_code=status,
            hint=hint,
        )

    def _parse(
        self, data: dict[str, Any], request: GenerationRequest, latency: float, url: str
    ) -> Generation:
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index") or 0)
        if not choices:
            raise BackendError(f"{url} returned no completions")
        if len(choices) > request.n:
            raise BackendError(f"{url} returned {len(choices)} completions, asked for {request.n}")
        chat = not self._uses_completions(request)
        texts: list[str] = []
        finishes: list[FinishReason] = []
        tokens = []
        for choice in choices:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else choice.get("text")
            texts.append(_wire.strip_echo(text or "", request.prefix) if chat else text or "")
            finishes.append(_wire.finish_reason(choice.get("finish_reason")))
            tokens.append(_wire.token_logprobs(choice))
        usage = data.get("usage") or {}
        max_tokens = request.params.max_tokens
        if all(t is not None for t in tokens):
            # Exact: one logprob per decoded token. (usage covers one sample on some servers when n > 1.)
            counts = [len(t or []) for t in tokens]
        else:
            counts = _split_usage(texts, finishes, usage.get("completion_tokens"), max_tokens)
        completions = [
            Completion(
                text=text,
                finish_reason=finish,
                completion_tokens=count,
                latency_s=latency,
                mean_logprob=_wire.mean_logprob(toks),
                tool_calls=_wire.tool_calls(choice.get("message")),
                logprobs=_wire.with_top(toks, request.top_logprobs),
            )
            for text, finish, count, toks, choice in zip(
                texts, finishes, counts, tokens, choices, strict=True
            )
        ]
        return Generation(
            completions=completions,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_prompt_tokens=_wire.cached_tokens(usage),
            latency_s=latency,
        )

    async def aclose(self) -> None:
        """Close the HTTP clients (when they belong to the running event loop)."""
        clients, loop = self._clients, self._loop
        self._clients, self._loop = {}, None
        if asyncio.get_running_loop() is loop:
            for client in clients.values():
                await client.close()


@register_backend("openai", OpenAIConfig)
def _make_openai(config: OpenAIConfig) -> OpenAIBackend:
    return OpenAIBackend(config)
