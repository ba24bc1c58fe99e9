"""What a driver needs to share a run with other processes: an owner with a heartbeat, and waiting.

Drivers claim sample indices in the store before drawing them (:meth:`ponder.store.Store.claim`),
so processes filling the same run split the work instead of drawing anything twice. Each round, a
driver draws what is neither stored nor claimed by a live owner; when nothing is left but units
another process is drawing, it waits for them (and draws them itself if that process dies).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import datetime

from ponder.errors import StoreError
from ponder.store import HEARTBEAT_S, Owner, Store

logger = logging.getLogger(__name__)


@asynccontextmanager
async def owning(store: Store) -> AsyncIterator[int]:
    """This process as an owner of claims (its id), kept alive by a heartbeat until the block ends.

    On the way out, normal or not, its owner record and any claim it still holds are deleted.
    """
    owner = store.register_owner()
    beat = asyncio.create_task(_heartbeat(store, owner))
    try:
        yield owner
    finally:
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


def busy(
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


class Waiting:
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
