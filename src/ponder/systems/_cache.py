"""Generation reuse: completions a model already gave for the same request are served again.

The rule: a call of :meth:`RunContext.generate` asks a model for ``n`` completions of one prompt
with given sampling parameters. Its *key* is the SHA-256 of the canonical JSON of the backend's
identity, the exact prompt (a string, or the chat messages as JSON) and the sampling parameters,
seed included (``n`` is not in the key). The seed of every call already depends only on the system
seed, the query, the component's place and the call's purpose (:meth:`RunContext.seed_for`), so two
systems run with the same seed that ask the same model the same thing, in the same layer and
place, make calls with the same key. Completion ``i`` of a key is the ``i``-th completion of that
request; a backend draws completion ``i`` of a request with seed ``s`` from seed ``s + i``, so when
``0 .. m - 1`` are stored and ``n > m`` are asked, the missing ``m .. n - 1`` come from one request
for ``n - m`` completions with seed ``s + m`` and are stored in turn. A call whose ``n`` completions
are all stored calls no backend.

Reused completions count in the call's usage as if drawn (a system's cost is what it costs when
deployed, without a cache); the trace's :class:`CallRecord` says how many were reused
(``reused``). A call whose completions are all reused reports the prompt tokens stored with its
first completion.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ponder.records import Generation, Prompt, SamplingParams

if TYPE_CHECKING:
    from ponder.store import Store


@runtime_checkable
class GenerationCache(Protocol):
    """Where reusable completions are kept, by key (see :func:`generation_key`).

    Completions of a key are indexed ``0, 1, ...``; an index once stored never changes.
    """

    async def get(self, key: str, n: int) -> Generation:
        """The stored completions of ``key`` with indices ``0 .. k - 1`` (``k <= n``): the
        longest stored run from index 0, and the prompt tokens of the request that drew the
        first (0 when none is stored)."""
        ...

    async def put(self, key: str, start: int, generation: Generation) -> Generation:
        """Store ``generation``'s completions as indices ``start, start + 1, ...`` of ``key``,
        keeping any index already stored; returns what :meth:`get` returns for
        ``n = start + len(generation.completions)`` afterwards."""
        ...


def _prefix(rows: list[Any]) -> list[Any]:
    """The rows with indices 0, 1, ... up to the first gap."""
    out = []
    for expected, row in enumerate(rows):
        if row.idx != expected:
            break
        out.append(row)
    return out


class StoreGenerationCache:
    """A :class:`GenerationCache` in a Ponder store (table ``generations``).

    Completions persist with the store, so a later process (a resumed search) reuses them too;
    two processes drawing the same key at once both draw, and the first to store an index keeps
    it. The store is local SQLite, fast enough to call from the event loop.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def _generation(self, rows: list[Any]) -> Generation:
        rows = _prefix(rows)
        return Generation(
            completions=[row.completion() for row in rows],
            prompt_tokens=rows[0].prompt_tokens if rows else 0,
        )

    async def get(self, key: str, n: int) -> Generation:
        return self._generation(self.store.generations(key, n))

    async def put(self, key: str, start: int, generation: Generation) -> Generation:
        rows = self.store.add_generations(
            key, start, generation.completions, generation.prompt_tokens
        )
        return self._generation(rows)


def generation_key(
    identity: str, prompt: Prompt, params: SamplingParams, *, continued: bool = False
) -> str:
    """The reuse key of a request: model identity, exact prompt, sampling parameters with seed,
    and whether the prompt's last (assistant) message is continued rather than answered."""
    shown: Any = prompt if isinstance(prompt, str) else [m.model_dump(mode="json") for m in prompt]
    data: dict[str, Any] = {
        "model": identity,
        "prompt": shown,
        "params": params.model_dump(mode="json"),
    }
    if continued:  # absent otherwise, so the keys of every other request are what they were
        data["continue_final_message"] = True
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# One lock per (cache, key) while a call on that key is drawing, so that two calls of one process
# on the same key (two layers, two systems sharing a cache) draw once; the second then reads what
# the first stored. Weak values: a lock lives only while some call holds or waits for it, so none
# outlives the event loop it was used on.
_locks: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = weakref.WeakValueDictionary()


def key_lock(cache: GenerationCache, key: str) -> asyncio.Lock:
    """The lock that serialises calls on ``key`` of ``cache`` within this process."""
    lock = _locks.get((id(cache), key))
    if lock is None:
        lock = asyncio.Lock()
        _locks[(id(cache), key)] = lock
    return lock
