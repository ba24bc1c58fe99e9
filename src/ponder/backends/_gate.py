"""Sharing the CPU between several embedded engines in one process.

Each llama.cpp engine left at its default thread count uses every core, and its worker threads spin while
waiting for each other. Two such engines decoding at once (an ensemble of two embedded models in one layer)
oversubscribe the cores, and both slow down several-fold instead of sharing. The gate lets requests of one
engine at a time run: any number of concurrent requests to the same engine pass together (they batch), and
engines take turns in the order they asked, so none waits behind a stream of another's requests.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class EngineGate:
    """Admits the requests of one owner (an engine) at a time, with owners served first come first served."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._owner: object | None = None
        self._active = 0
        self._waiting: deque[object] = deque()

    def _may_enter(self, owner: object) -> bool:
        if self._owner is None:
            return self._waiting[0] is owner
        # The owner's turn has begun (its queue entry is gone): its other queued requests join it.
        return self._owner is owner and owner not in self._waiting

    @contextmanager
    def hold(self, owner: object) -> Iterator[None]:
        """Run the body while ``owner`` holds the gate, waiting for other owners' requests to finish."""
        with self._cond:
            if self._owner is None and not self._waiting:
                self._owner = owner
            elif not (self._owner is owner and not self._waiting):
                # Another engine runs or waits: queue behind it, so turns alternate instead of one
                # engine's steady stream of requests starving the other.
                if owner not in self._waiting:
                    self._waiting.append(owner)
                while not self._may_enter(owner):
                    self._cond.wait()
                if self._owner is None:
                    self._waiting.popleft()
                    self._owner = owner
                    self._cond.notify_all()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._owner = None
                    self._cond.notify_all()


#: The gate shared by every embedded engine in this process that uses all cores.
CPU_GATE = EngineGate()
