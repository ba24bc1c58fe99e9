"""The ``openai`` backend: any OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs).

Requests go through the official ``openai`` client with its own retries switched off: Ponder retries itself
so that it can tell what may succeed on a second try (429, 5xx, timeouts, lost connections) from what cannot
(any other 4xx), and so that a 400 can teach the backend what the server does not support:

* ``n`` > 1 (``n_mode="auto"``): the backend switches to one request per completion for the rest of its life;
* ``logprobs``: the backend stops asking for them for the rest of its life and estimates token counts.

The API key is read from the environment variable named by ``api_key_env``; it is never stored in the
config, logged, or put into an error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import random
import re
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

import openai
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ponder.backends._registry import register_backend
from ponder.errors import BackendError, BackendRequestError
from ponder.records import Completion, FinishReason, Generation, Prompt, SamplingParams

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

_log = logging.getLogger("ponder.backends.openai")

_PLACEHOLDER_KEY = "EMPTY"
"""Sent when the key variable is unset: local servers accept any key, and the header must not be empty."""

_SEED_MOD = 2**31

# A standalone token "n" (as in "n must be 1", "'n' is not supported", "Unsupported parameter: 'n'",
# "Only n=1 is supported"), not the letter inside a word, "n_probs", "n-gram" or an escaped "\n".
_MENTIONS_N = re.compile(r"(?<![\w\\-])n(?![\w-])")
_MENTIONS_LOGPROBS = re.compile(r"logprob", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Finish reasons that mean "the model ended the text itself" across servers (TGI says eos_token and
# stop_sequence); anything else but "length" is not something Ponder can interpret.
_STOP_REASONS = frozenset({"stop", "eos", "eos_token", "stop_sequence"})

# Typical characters per token of a BPE tokenizer on English and code; used only by the token-count
# heuristic when the server gives no logprobs (see _split_usage).
_CHARS_PER_TOKEN = 4.0


class OpenAIConfig(BaseModel):
    """Config of a backend that talks to an OpenAI-compatible HTTP server."""

    # Inputs are hidden from validation messages: a key pasted into api_key_env must not be echoed.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    kind: Literal["openai"] = "openai"
    base_url: str = Field(
        description="Server URL, e.g. http://127.0.0.1:8000/v1 (a URL without a path gets /v1)."
    )
    model: str = Field(min_length=1, description="Model name as the server knows it.")
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
        5, ge=0, description="Retries after a 429, 5xx, timeout or lost connection."
    )
    timeout_s: float = Field(300.0, gt=0, description="Timeout of one HTTP request.")
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
    def _normalise_base_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an http(s) URL such as http://127.0.0.1:8000/v1")
        # A bare server address means the conventional OpenAI prefix; an explicit path is kept as given.
        path = parts.path.rstrip("/") or "/v1"
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))

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


def _finish(reason: object) -> FinishReason:
    if reason in _STOP_REASONS:
        return "stop"
    return "length" if reason == "length" else "unknown"


def _render_plain(messages: list[Any]) -> str:
    """Messages as plain text for the /completions endpoint (base models, no chat template).

    Contents are separated by blank lines (role names would be noise to a base model; Ponder's task
    templates already carry their own "Q:"/"A:" cues). When the last message is the user's, a blank line
    follows it so that the completion starts the answer.
    """
    text = "\n\n".join(m.content for m in messages)
    if messages and messages[-1].role == "user":
        text += "\n\n"
    return text


def _token_logprobs(choice: dict[str, Any]) -> list[float] | None:
    """The sampled tokens' logprobs of one choice, or None when the server sent none.

    Chat responses (and llama.cpp's /completions) use ``logprobs.content[].logprob``; the legacy
    /completions shape (OpenAI, vLLM) uses ``logprobs.token_logprobs``.
    """
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if isinstance(content, list):
        return [float(t["logprob"]) for t in content if isinstance(t, dict) and "logprob" in t]
    legacy = logprobs.get("token_logprobs")
    if isinstance(legacy, list):
        return [float(x) for x in legacy if x is not None]
    return None


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


class _NUnsupported(Exception):
    """Internal signal: the server rejected n > 1 (only raised while n_mode is auto)."""


@dataclass
class _Reply:
    """One successful HTTP request, parsed."""

    completions: list[Completion]
    prompt_tokens: int


class OpenAIBackend:
    """Completions from an OpenAI-compatible server. Create with :func:`ponder.backends.create_backend`."""

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        # Both are learned from the server's 400s and never revert: retrying a rejected feature cannot help.
        self._n_mode: Literal["auto", "native", "fanout"] = config.n_mode
        self._logprobs = config.logprobs
        self._client: openai.AsyncOpenAI | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._api_key = _PLACEHOLDER_KEY

    @property
    def identity(self) -> str:
        return f"openai:{self.config.base_url}:{self.config.model}"

    @property
    def max_batch(self) -> int:
        return self.config.max_batch

    @property
    def n_mode(self) -> Literal["auto", "native", "fanout"]:
        """The current mode: ``auto`` becomes ``fanout`` once the server has rejected ``n``."""
        return self._n_mode

    @property
    def logprobs(self) -> bool:
        """Whether logprobs are still requested (False once the server has rejected them)."""
        return self._logprobs

    def _connection(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._semaphore is None or self._loop is not loop:
            # Connection pools and semaphores belong to one event loop; a backend reused from another loop
            # (e.g. successive asyncio.run calls) gets fresh ones. The old pool's loop is gone, so it
            # cannot be closed from here; its sockets are released when it is collected.
            self._api_key = os.environ.get(self.config.api_key_env) or _PLACEHOLDER_KEY
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.config.base_url,
                timeout=self.config.timeout_s,
                max_retries=0,
            )
            self._semaphore = asyncio.Semaphore(self.config.max_concurrency)
            self._loop = loop
        return self._client, self._semaphore

    def _redact(self, text: str) -> str:
        # Servers sometimes echo the key they rejected; never let it reach a log or an error message.
        if self._api_key != _PLACEHOLDER_KEY and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return text

    async def generate(self, prompt: Prompt, n: int, params: SamplingParams) -> Generation:
        """Return ``n`` completions of ``prompt`` (see the module docstring for ``n_mode``)."""
        if n < 1:
            raise BackendRequestError(f"n must be >= 1, got {n}")
        start = time.perf_counter()
        if n == 1 or self._n_mode == "fanout":
            replies = await self._fanout(prompt, range(n), params)
        else:
            replies = await self._native(prompt, n, params)
        completions = [c for r in replies for c in r.completions]
        if len(completions) != n:
            raise BackendError(
                f"{self.config.base_url} returned {len(completions)} completions, asked for {n}"
            )
        return Generation(
            completions=completions,
            # Each request evaluates the prompt, so fanout pays for it once per request.
            prompt_tokens=sum(r.prompt_tokens for r in replies),
            latency_s=time.perf_counter() - start,
        )

    async def _native(self, prompt: Prompt, n: int, params: SamplingParams) -> list[_Reply]:
        try:
            reply = await self._request(prompt, n, params, params.seed)
        except _NUnsupported as exc:
            self._switch_to_fanout(f"it rejected n={n}: {exc}")
            return await self._fanout(prompt, range(n), params)
        got = len(reply.completions)
        if got >= n:
            return [reply]
        # Some servers (e.g. Ollama) ignore n and answer with one choice.
        if self._n_mode == "native":
            raise BackendError(
                f"{self.config.base_url} returned {got} completions for n={n}",
                hint="the server seems to ignore n; set n_mode to 'fanout' (or 'auto')",
            )
        self._switch_to_fanout(f"it answered n={n} with {got} completion(s)")
        return [reply, *await self._fanout(prompt, range(got, n), params)]

    async def _fanout(self, prompt: Prompt, indices: range, params: SamplingParams) -> list[_Reply]:
        """One request per completion, concurrently; completion i uses seed ``params.seed + i``."""
        if len(indices) == 1:
            i = indices[0]
            return [await self._request(prompt, 1, params, (params.seed + i) % _SEED_MOD)]
        tasks = [
            asyncio.ensure_future(self._request(prompt, 1, params, (params.seed + i) % _SEED_MOD))
            for i in indices
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # One request failed for good (or we were cancelled): the siblings' results are of no use.
            # (Not a TaskGroup: callers get the Ponder error itself, not an ExceptionGroup.)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _switch_to_fanout(self, why: str) -> None:
        # Concurrent requests may all learn this at once; log it once.
        if self._n_mode != "fanout":
            self._n_mode = "fanout"
            _log.info(
                "%s does not draw several completions per request (%s); "
                "sending one request per completion from now on",
                self.config.base_url,
                self._redact(why),
            )

    def _disable_logprobs(self, why: str) -> None:
        if self._logprobs:
            self._logprobs = False
            _log.warning(
                "%s rejected logprobs (%s); requesting none from now on, so per-completion token "
                "counts are estimated from usage",
                self.config.base_url,
                self._redact(why),
            )

    async def _post(
        self, client: openai.AsyncOpenAI, prompt: Prompt, n: int, params: SamplingParams, seed: int
    ) -> dict[str, Any]:
        """One HTTP request; returns the response as plain data (shapes vary across servers)."""
        n_arg = n if n > 1 else openai.omit  # some servers reject the parameter itself, even n=1
        stop = list(params.stop) if params.stop else openai.omit
        # top_k / min_p are not OpenAI parameters (hosted APIs reject them); vLLM, SGLang and llama.cpp
        # accept them, so they are sent only when the user set them.
        extra: dict[str, Any] = {}
        if params.top_k:
            extra["top_k"] = params.top_k
        if params.min_p:
            extra["min_p"] = params.min_p
        extra_body = extra or None
        if isinstance(prompt, str) or self.config.endpoint == "completions":
            text = prompt if isinstance(prompt, str) else _render_plain(prompt)
            completion = await client.completions.create(
                model=self.config.model,
                prompt=text,
                n=n_arg,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens,
                stop=stop,
                seed=seed,
                # 1 (not 0): llama.cpp returns no logprobs at all for 0.
                logprobs=1 if self._logprobs else openai.omit,
                extra_body=extra_body,
            )
            return completion.model_dump()
        chat = await client.chat.completions.create(
            model=self.config.model,
            messages=cast(
                "list[ChatCompletionMessageParam]",
                [{"role": m.role, "content": m.content} for m in prompt],
            ),
            n=n_arg,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=stop,
            seed=seed,
            logprobs=True if self._logprobs else openai.omit,
            # 1 (not 0): llama.cpp sends no token logprobs for top_logprobs=0.
            top_logprobs=1 if self._logprobs else openai.omit,
            extra_body=extra_body,
        )
        return chat.model_dump()

    async def _request(self, prompt: Prompt, n: int, params: SamplingParams, seed: int) -> _Reply:
        """One logical request with retries on transient failures."""
        client, semaphore = self._connection()
        failures = 0
        cause: str = ""
        last_exc: Exception | None = None
        while True:
            wait: float | None = None
            try:
                # The slot is held for the HTTP exchange only, not while backing off.
                async with semaphore:
                    start = time.perf_counter()
                    data = await self._post(client, prompt, n, params, seed)
                    latency = time.perf_counter() - start
                return self._parse(data, n, params.max_tokens, latency)
            except openai.APIStatusError as exc:
                status = exc.status_code
                message = self._redact(_server_message(exc))
                # 408 is the server saying the request timed out: as transient as our own timeout.
                if status in (408, 429) or status >= 500:
                    cause, last_exc = f"HTTP {status}: {message}", exc
                    wait = _retry_after_s(exc.response.headers)
                elif status == 400 and self._is_about_n(exc, message, n):
                    raise _NUnsupported(message) from exc
                elif status == 400 and self._logprobs and self._is_about_logprobs(exc, message):
                    # A different request, not a retry of the same one: it does not use up a retry.
                    self._disable_logprobs(message)
                    continue
                else:
                    raise self._request_error(status, message, n) from exc
            except openai.APITimeoutError as exc:
                cause, last_exc = f"timed out after {self.config.timeout_s:g}s", exc
            except openai.APIConnectionError as exc:
                detail = exc.__cause__ if exc.__cause__ is not None else exc
                cause, last_exc = f"connection failed: {self._redact(str(detail))}", exc
            failures += 1
            if failures > self.config.max_retries:
                raise BackendError(
                    f"{self.config.base_url} failed after {failures} attempts; last error: {cause}",
                    status_code=getattr(last_exc, "status_code", None),
                    hint="the server may be down or overloaded; raise max_retries or lower "
                    "max_concurrency",
                ) from last_exc
            backoff = random.uniform(
                0, min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (failures - 1))
            )
            await asyncio.sleep(
                min(wait, self.config.backoff_max_s) if wait is not None else backoff
            )

    def _is_about_n(self, exc: openai.APIStatusError, message: str, n: int) -> bool:
        if n <= 1 or self._n_mode != "auto":
            return False
        return _error_body(exc).get("param") == "n" or bool(_MENTIONS_N.search(message))

    @staticmethod
    def _is_about_logprobs(exc: openai.APIStatusError, message: str) -> bool:
        param = str(_error_body(exc).get("param") or "")
        return "logprob" in param or bool(_MENTIONS_LOGPROBS.search(message))

    def _request_error(self, status: int, message: str, n: int) -> BackendRequestError:
        where = f"{self.config.base_url} (model {self.config.model!r})"
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

    def _parse(self, data: dict[str, Any], n: int, max_tokens: int, latency: float) -> _Reply:
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index") or 0)
        if not choices:
            raise BackendError(f"{self.config.base_url} returned no completions")
        if len(choices) > n:
            raise BackendError(
                f"{self.config.base_url} returned {len(choices)} completions, asked for {n}"
            )
        texts: list[str] = []
        finishes: list[FinishReason] = []
        logprobs: list[list[float] | None] = []
        for choice in choices:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else choice.get("text")
            texts.append(text or "")
            finishes.append(_finish(choice.get("finish_reason")))
            logprobs.append(_token_logprobs(choice))
        usage = data.get("usage") or {}
        if all(lp is not None for lp in logprobs):
            # Exact: one logprob per decoded token. (usage covers one sample on some servers when n > 1.)
            counts = [len(lp or []) for lp in logprobs]
        else:
            counts = _split_usage(texts, finishes, usage.get("completion_tokens"), max_tokens)
        completions = [
            Completion(
                text=text,
                finish_reason=finish,
                completion_tokens=count,
                latency_s=latency,
                mean_logprob=sum(lp) / len(lp) if lp else None,
            )
            for text, finish, count, lp in zip(texts, finishes, counts, logprobs, strict=True)
        ]
        return _Reply(completions, int(usage.get("prompt_tokens") or 0))

    async def aclose(self) -> None:
        """Close the HTTP client (when it belongs to the running event loop)."""
        client, loop = self._client, self._loop
        self._client, self._semaphore, self._loop = None, None, None
        if client is not None and asyncio.get_running_loop() is loop:
            await client.close()


@register_backend("openai", OpenAIConfig)
def _make_openai(config: OpenAIConfig) -> OpenAIBackend:
    return OpenAIBackend(config)
