"""What the drivers share: opening a run with its prompts, and filling it alongside other processes.

Drivers claim sample indices in the store before drawing them (:meth:`ponder.store.Store.claim`),
so processes filling the same run split the work instead of drawing anything twice. Each round, a
driver draws what is neither stored nor claimed by a live owner; when nothing is left but units
another process is drawing, it waits for them (and draws them itself if that process dies).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from ponder.errors import StoreError
from ponder.records import Problem, Prompt
from ponder.store import HEARTBEAT_S, Owner, RunSpec, Store

if TYPE_CHECKING:
    from ponder.tasks import Task

logger = logging.getLogger(__name__)

U = TypeVar("U")


def open_run(
    store: Store, spec: RunSpec, task: Task, problems: Sequence[Problem]
) -> tuple[str, dict[str, Prompt]]:
    """Create (or find) the run of ``spec`` with ``problems``, each stored with the prompt it is given.

    Returns the run id and problem id -> prompt: drivers send exactly what is stored.
    """
    run = store.ensure_run(spec)
    prompts = [task.prompt(p) for p in problems]
    store.add_problems(run.id, problems, prompts)
    return run.id, {p.id: prompt for p, prompt in zip(problems, prompts, strict=True)}


def count_stored(store: Store, run_id: str, problems: Sequence[Problem], n: int) -> int:
    """How many of samples ``0..n-1`` of ``problems`` the run holds."""
    existing = store.existing_indices(run_id)
    return sum(len({i for i in existing.get(p.id, set()) if i < n}) for p in problems)


async def fill_run(
    store: Store,
    run_id: str,
    problem_ids: Collection[str],
    *,
    plan: Callable[[dict[str, set[int]]], Sequence[U]],
    work: Callable[[int, Sequence[U]], Awaitable[None]],
    wanted: Callable[[int], bool],
    poll_s: float,
) -> None:
    """Fill a run together with whichever other processes are filling it.

    Each round, ``plan`` gets the indices not to draw now (problem id -> indices stored or claimed
    by another live owner) and returns the units of work left; ``work(owner, units)`` does them,
    claiming each unit's indices before drawing it. When no unit is left but other processes hold
    claims on wanted indices, this waits (polling every ``poll_s`` seconds) until they are stored
    or their owner is dead, and then plans again.
    """
    waiting = _Waiting(run_id)
    async with _owning(store) as owner:
        while True:
            taken, others = _busy(store, run_id, owner, problem_ids)
            units = plan(taken)
            if units:
                await work(owner, units)
                continue
            pending = [o for claimed in others.values() for i, o in claimed.items() if wanted(i)]
            if not pending:
                return
            waiting.tell(pending)
            await asyncio.sleep(poll_s)


@asynccontextmanager
async def _owning(store: Store) -> AsyncIterator[int]:
    """This process as an owner of claims (its id), kept alive by a heartbeat until the block ends.

    On the way out, normal or not, its owner record and any claim it still holds are deleted.
    """
    owner = store.register_owner()
    beat = asyncio.create_task(_heartbeat(store, owner))
    try:
        yield owner
    except BaseException:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
        try:
            store.release_owner(owner)
        except StoreError as exc:
            # Keep the error that stopped the run; the claims lapse once this process is gone.
            logger.warning("could not release this process's claims: %s", exc.message)
        raise
    beat.cancel()
    await asyncio.gather(beat, return_exceptions=True)
    store.release_owner(owner)


async def _heartbeat(store: Store, owner: int) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            if not store.heartbeat(owner):
                logger.warning("this process had been taken for dead by another one; it goes on")
        except StoreError as exc:
            # A busy database delays one beat; the lease is several beats long.
            logger.warning("could not renew the lease on claimed samples: %s", exc.message)


def _busy(
    store: Store, run_id: str, owner: int, problem_ids: Collection[str]
) -> tuple[dict[str, set[int]], dict[str, dict[int, Owner]]]:
    """The indices not to draw now (stored, or claimed by another live owner), and those claims.

    Both are limited to ``problem_ids``.
    """
    others = {
        pid: claimed
        for pid, claimed in store.claims(run_id, exclude=owner).items()
        if pid in problem_ids
    }
    taken = store.existing_indices(run_id)
    for pid, claimed in others.items():
        taken[pid] = taken.get(pid, set()) | set(claimed)
    return taken, others


class _Waiting:
    """Says once per other process which of its samples this one waits for."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._told: set[int] = set()

    def tell(self, pending: list[Owner]) -> None:
        by_owner: dict[int, list[Owner]] = {}
        for o in pending:
            by_owner.setdefault(o.id, []).append(o)
        for owner_id, items in by_owner.items():
            if owner_id in self._told:
                continue
            self._told.add(owner_id)
            o = items[0]
            since = datetime.fromtimestamp(o.started_at).strftime("%Y-%m-%d %H:%M:%S")
            logger.warning(
                "run %s: waiting for %d sample(s) being drawn by another process (pid %d on %s, "
                "sampling since %s); if it stops, they are drawn here",
                self.run_id,
                len(items),
                o.pid,
                o.host,
                since,
            )
