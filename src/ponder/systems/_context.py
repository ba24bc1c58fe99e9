"""The run context of one component in one query: backends, seeds, candidate ids, the trace."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ponder.backends import Backend
from ponder.errors import UserError
from ponder.records import (
    Completion,
    Generation,
    GenerationRequest,
    Message,
    Prompt,
    SamplingParams,
)
from ponder.systems._budget import PromptTooLongError, TokenMeter, fit_texts, upper_bound
from ponder.systems._cache import GenerationCache, generation_key, key_lock
from ponder.systems._errors import ComponentError
from ponder.systems._extract import Extractor
from ponder.systems._models import BackendPool, ModelRef
from ponder.systems._parsing import Unparseable
from ponder.systems._prompts import render, template
from ponder.systems._state import Action, Candidate, Provenance
from ponder.systems._trace import CallRecord, ComponentEvent, Fallback
from ponder.text import strip_think
from ponder.verify import Verifier

T = TypeVar("T")
P = TypeVar("P", bound=Prompt)

VerifierLike = Verifier | Callable[[str | None, str], bool]
"""A task verifier, or a function ``(reference, candidate text) -> passed``."""


@dataclass(frozen=True)
class Asked(Generic[T]):
    """The outcome of a call whose reply must parse: the value, or why it never did."""

    value: T | None
    problem: str = ""
    outputs: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.value is not None

    @property
    def output(self) -> str:
        """The last reply (the one that parsed, when ok)."""
        return self.outputs[-1] if self.outputs else ""


Checker = Callable[[str, list[str]], list[bool]]
"""``(reference, candidate texts) -> passed``; blocking and thread-safe."""


@dataclass
class Resources:
    """What the system lends its components for a run.

    Attributes:
        pool: The backends.
        extractor: The system's answer extractor.
        checker: A named verifier as a :data:`Checker`.
        repair_retries: The system's default number of repair prompts.
        generation_cache: Where completions are kept for reuse (None: every call draws); see
            :mod:`ponder.systems._cache`.
        meters: The context meter of each backend (by ``id``), made on first use.
    """

    pool: BackendPool
    extractor: Extractor
    checker: Callable[[str], Checker]
    repair_retries: int
    generation_cache: GenerationCache | None = None
    meters: dict[int, TokenMeter] = field(default_factory=dict)

    def meter(self, backend: Backend) -> TokenMeter:
        """The context meter of ``backend`` (shared by every component and query)."""
        key = id(backend)
        if key not in self.meters:
            self.meters[key] = TokenMeter(backend)
        return self.meters[key]


class RunContext:
    """Everything one component needs while it runs for one query, and its record in the trace.

    Components call backends through :meth:`generate` / :meth:`ask` (never directly), so that every
    call is recorded with its prompt, output and usage, and a failing backend surfaces as a
    :class:`ComponentError` naming the layer and component.
    """

    def __init__(
        self,
        *,
        event: ComponentEvent,
        resources: Resources,
        seed: int,
        query_key: str,
        repair_retries: int | None = None,
    ) -> None:
        self.event = event
        self.resources = resources
        self.repair_retries = resources.repair_retries if repair_retries is None else repair_retries
        self._seed = seed
        self._query_key = query_key
        self._next_id = 0

    @property
    def layer(self) -> int:
        return self.event.layer

    @property
    def index(self) -> int:
        return self.event.index

    @property
    def label(self) -> str:
        return self.event.label

    # ----- backends -------------------------------------------------------------------------

    def backend(self, ref: ModelRef | None) -> Backend:
        """The backend for a model ref (the system default for None); noted in the trace."""
        backend = self.resources.pool.get(ref)
        if backend.identity not in self.event.models:
            self.event.models.append(backend.identity)
        return backend

    def seed_for(self, *parts: object) -> int:
        """A seed for one call: fixed by the system seed, the query, the component and ``parts``."""
        key = "|".join(
            str(p) for p in (self._seed, self._query_key, self.layer, self.index, *parts)
        )
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 2**31

    def error(self, message: str, model: str | None = None) -> ComponentError:
        """A :class:`ComponentError` that names this component's place (and ``model``)."""
        return ComponentError(
            message, layer=self.layer, index=self.index, component=self.label, model=model
        )

    async def generate(
        self,
        backend: Backend,
        prompt: Prompt,
        n: int,
        params: SamplingParams,
        purpose: str,
        *,
        continue_final_message: bool = False,
        top_logprobs: int = 0,
        cache_prompt: bool | None = None,
    ) -> Generation:
        """One backend request for ``n`` completions, recorded in the trace.

        ``continue_final_message``: the prompt ends in a partial assistant turn that the model
        continues (tree search extends a partial solution this way); the completions hold only the
        new text. ``top_logprobs``: alternatives per generated token (a judge reads the
        probability of its verdict token); such a call is never served from stored generations,
        which keep no log-probabilities. ``cache_prompt``: ask the engine to reuse its cache of an
        earlier prompt's prefix (see :class:`~ponder.records.GenerationRequest`).

        With a generation cache (``Resources.generation_cache``), completions already stored for
        the same model, prompt and parameters are served from it and only the missing ones are
        drawn, in one request (see :mod:`ponder.systems._cache`); the record counts them as
        ``reused``, and its usage counts every completion as if drawn.

        Raises:
            ComponentError: the backend failed (after its own retries); the cause is chained.
            UserError: the backend rejected the request or the model is missing (a note names
                the component).
        """
        try:
            params = await self._within_context(backend, prompt, params, purpose)
        except UserError:
            raise
        except Exception as exc:  # the backend could not measure the prompt: chained below
            raise self.error(
                f"measuring the prompt of {purpose!r} failed: {type(exc).__name__}: {exc}",
                backend.identity,
            ) from exc
        record = CallRecord(
            purpose=purpose, model=backend.identity, prompt=prompt, n=n, params=params
        )
        self.event.calls.append(record)
        request = GenerationRequest(
            prompt=prompt,
            n=n,
            params=params,
            continue_final_message=continue_final_message,
            top_logprobs=top_logprobs,
            cache_prompt=cache_prompt,
        )
        cache = self.resources.generation_cache
        if cache is None or top_logprobs:
            return await self._draw(backend, request, purpose, record)
        key = generation_key(backend.identity, prompt, params, continued=continue_final_message)
        async with key_lock(cache, key):
            stored = await cache.get(key, n)
            have = len(stored.completions)
            if have >= n:
                served = stored.completions[:n]
                prompt_tokens = stored.prompt_tokens
            else:
                # The missing completions m..n-1 are completions 0..n-m-1 of a request with seed
                # s+m: the backends' own convention for completion i of a request with seed s.
                rest = params.model_copy(update={"seed": params.seed + have})
                drawn = await self._draw(
                    backend,
                    request.model_copy(update={"n": n - have, "params": rest}),
                    purpose,
                    record,
                )
                kept = await cache.put(key, have, drawn)
                # What the cache holds wins (another process may have stored an index first).
                served = [*kept.completions, *drawn.completions[len(kept.completions) - have :]]
                prompt_tokens = drawn.prompt_tokens
        record.reused = min(have, n)
        return self._served(record, served[:n], prompt_tokens)

    def _served(
        self, record: CallRecord, completions: list[Completion], prompt_tokens: int
    ) -> Generation:
        """Fill ``record`` with the completions the call returns."""
        record.outputs = [c.text for c in completions]
        record.finish_reasons = [c.finish_reason for c in completions]
        record.prompt_tokens = prompt_tokens
        record.completion_tokens = sum(c.completion_tokens for c in completions)
        return Generation(
            completions=completions, prompt_tokens=prompt_tokens, latency_s=record.latency_s
        )

    async def _draw(
        self, backend: Backend, request: GenerationRequest, purpose: str, record: CallRecord
    ) -> Generation:
        """One backend request, its failure or short answer recorded in ``record``."""
        n = request.n
        start = time.perf_counter()
        try:
            if (
                request.continue_final_message
                or request.top_logprobs
                or request.cache_prompt is not None
            ):
                generation = await backend.complete(request)
            else:
                generation = await backend.generate(request.prompt, n, request.params)
        except UserError as exc:
            # The input must change (a bad request, a missing model): keep the type, add where.
            record.error = str(exc)
            exc.add_note(f"while running layers[{self.layer}][{self.index}] ({self.label})")
            raise
        except Exception as exc:  # any backend failure: re-raised below with the cause chained
            record.error = f"{type(exc).__name__}: {exc}"
            raise self.error(
                f"backend call {purpose!r} failed: {record.error}", backend.identity
            ) from exc
        finally:
            record.latency_s = time.perf_counter() - start
        if len(generation.completions) != n:
            record.error = f"asked for {n} completions, got {len(generation.completions)}"
            raise self.error(f"backend call {purpose!r}: {record.error}", backend.identity)
        self._served(record, generation.completions, generation.prompt_tokens)
        record.cached_prompt_tokens = generation.cached_prompt_tokens
        return generation

    async def context_size(self, backend: Backend) -> int | None:
        """Tokens one request to ``backend`` may hold, prompt and reply (None: unknown)."""
        return await self.resources.meter(backend).context()

    async def prompt_bound(self, backend: Backend, prompt: Prompt) -> int:
        """Tokens ``prompt`` cannot exceed on ``backend``'s model (for budgets; see
        :meth:`~ponder.systems._budget.TokenMeter.prompt_bound`)."""
        return await self.resources.meter(backend).prompt_bound(prompt)

    async def count_tokens(self, backend: Backend, prompt: Prompt) -> int:
        """Tokens ``prompt`` takes on ``backend``'s model, with an allowance for the chat template
        (estimated from its length when the backend has no tokenizer)."""
        return await self.resources.meter(backend).prompt_tokens(prompt)

    async def _within_context(
        self, backend: Backend, prompt: Prompt, params: SamplingParams, purpose: str
    ) -> SamplingParams:
        """``params`` with ``max_tokens`` lowered to what the model's context leaves after the
        prompt (noted in the trace, and warned once per component).

        Raises:
            PromptTooLongError: the prompt alone fills the context.
        """
        meter = self.resources.meter(backend)
        context = await meter.context()
        if context is None or upper_bound(prompt) + params.max_tokens <= context:
            return params
        used = await meter.prompt_tokens(prompt)
        if used + params.max_tokens <= context:
            return params
        where = f"layers[{self.layer}][{self.index}] ({self.label})"
        if used >= context:
            raise PromptTooLongError(
                f"{where}: the prompt of call {purpose!r} takes about {used} tokens, more than the "
                f"model's context of {context} tokens",
                hint="shorten the query or the candidates before this component, or use a model "
                "with a longer context",
            )
        limit = context - used
        self.note(
            f"{purpose}: max_tokens {params.max_tokens} lowered to {limit} (the model's context "
            f"of {context} tokens minus the prompt's {used})"
        )
        warnings.warn(
            f"{where}: max_tokens {params.max_tokens} is more than the model's context leaves "
            f"after the prompt; each call is limited to the context ({context} tokens) minus its "
            "prompt (see the trace)",
            stacklevel=2,
        )
        return params.model_copy(update={"max_tokens": limit})

    async def fit(
        self,
        backend: Backend,
        build: Callable[[list[str]], P],
        candidates: Sequence[Candidate],
        *,
        max_tokens: int,
    ) -> P:
        """``build`` applied to the candidates' texts, shortened where the prompt would not leave
        room for the reply in the model's context (see :mod:`ponder.systems._budget`); what was
        cut is recorded as a fallback in the trace.

        Raises:
            PromptTooLongError: the candidates cannot be fitted.
        """
        # Reasoning (<think> blocks) is the writer's, not the answer: judges, rankers and fusers
        # see the answers only.
        texts = [strip_think(c.text).strip() for c in candidates]
        fitted = await fit_texts(self.resources.meter(backend), build, texts, max_tokens=max_tokens)
        if fitted.cut:
            cut = ", ".join(f"{candidates[i].id}: {n}" for i, n in fitted.cut.items())
            self.fallback(
                f"the {len(candidates)} candidate(s) do not fit in the model's context of "
                f"{fitted.context} tokens with room for the reply",
                f"shortened the candidates listed here to share {fitted.room} tokens, each keeping "
                f"its start and end around a '[... N tokens cut ...]' marker (tokens cut: {cut})",
                [candidates[i].id for i in fitted.cut],
            )
        return fitted.prompt

    async def ask(
        self,
        backend: Backend,
        messages: Sequence[Message],
        params: SamplingParams,
        parse: Callable[[str], T],
        *,
        purpose: str,
        expected: str,
        repair_retries: int | None = None,
    ) -> Asked[T]:
        """Ask for one reply and parse it; on :class:`Unparseable`, send a repair prompt.

        At most ``repair_retries`` repair prompts (default: the context's) follow the first call;
        each one shows the model its reply, what was wrong with it and the ``expected`` format.
        The caller records a fallback when the result is not ok.
        """
        retries = self.repair_retries if repair_retries is None else repair_retries
        convo = list(messages)
        reply = (await self.generate(backend, convo, 1, params, purpose)).completions[0].text
        replies = [reply]
        problem = ""
        for attempt in range(retries + 1):
            try:
                return Asked(parse(reply), outputs=tuple(replies))
            except Unparseable as exc:
                problem = exc.problem
            if attempt == retries:
                break
            repair = render(template("repair"), problem=problem, format=expected)
            convo += [
                Message(role="assistant", content=reply),
                Message(role="user", content=repair),
            ]
            label = f"{purpose} (repair {attempt + 1})"
            retry = params.model_copy(update={"seed": self.seed_for(label)})
            reply = (await self.generate(backend, convo, 1, retry, label)).completions[0].text
            replies.append(reply)
        return Asked(None, problem=problem, outputs=tuple(replies))

    # ----- candidates -----------------------------------------------------------------------

    def candidate(
        self,
        text: str,
        *,
        action: Action,
        model: str | None,
        parents: Sequence[str] = (),
        completion: Completion | None = None,
    ) -> Candidate:
        """A new candidate with the next id of this component (``L<layer>.<index>.<k>``)."""
        self._next_id += 1
        return Candidate(
            id=f"L{self.layer}.{self.index}.{self._next_id}",
            text=text,
            answer=self.resources.extractor(text),
            history=[
                Provenance(
                    action=action,
                    component=self.label,
                    layer=self.layer,
                    index=self.index,
                    model=model,
                    parents=list(parents),
                )
            ],
            finish_reason=completion.finish_reason if completion else "unknown",
            completion_tokens=completion.completion_tokens if completion else 0,
        )

    def revised(
        self, candidate: Candidate, text: str, *, model: str | None, action: Action = "refined"
    ) -> Candidate:
        """``candidate`` with new text: the same id, the next version, the change in its history."""
        step = Provenance(
            action=action,
            component=self.label,
            layer=self.layer,
            index=self.index,
            model=model,
            previous_text=candidate.text,
        )
        return candidate.model_copy(
            update={
                "text": text,
                "answer": self.resources.extractor(text),
                "version": candidate.version + 1,
                "history": [*candidate.history, step],
            }
        )

    # ----- trace ------------------------------------------------------------------------------

    def fallback(
        self,
        reason: str,
        action: str,
        candidate_ids: Sequence[str] = (),
        output: str | None = None,
    ) -> None:
        """Record that the component fell back to ``action`` because of ``reason``."""
        self.event.fallbacks.append(
            Fallback(reason=reason, action=action, candidate_ids=list(candidate_ids), output=output)
        )

    def note(self, text: str) -> None:
        self.event.notes.append(text)
