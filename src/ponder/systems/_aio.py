"""asyncio helpers (one implementation, in :mod:`ponder._aio`, shared with the backends)."""

from ponder._aio import gather_all

__all__ = ["gather_all"]
