"""asyncio helpers shared by every layer (backends fan out requests, systems run components)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def gather_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run awaitables concurrently and return their results in order.

    Unlike a plain :func:`asyncio.gather`, the first failure cancels the others (and waits for them),
    so no backend call is left running for work that already failed; the failure itself is re-raised
    (not an ExceptionGroup, as a TaskGroup would).
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
