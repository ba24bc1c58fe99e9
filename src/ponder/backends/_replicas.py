"""Replicas: several servers of one model behind one backend.

A :class:`ReplicaSet` chooses the server of each request and keeps each server's health; the backend's
own retry policy (:mod:`ponder.backends._base`) does the retrying, so there is one retry loop:

* **choice**: the replica in rotation with the fewest requests outstanding; ties go round robin (the
  one after the last chosen, in the order the URLs were given);
* **out of rotation**: a replica whose request failed with a retryable error (429, 408, 5xx, lost
  connection) is out for ``backoff_base_s * 2**(k-1)`` seconds after its k-th failure in a row (or as long
  as the server asked with ``Retry-After``, if longer), capped at ``backoff_max_s`` (defaults of
  :class:`~ponder.backends.OpenAIConfig`: 1 s, 2 s, 4 s, ... up to 60 s).
  The failed request is retried at once on another replica (it uses up one of the policy's retries);
* **probe**: once its time is out, the next request may go to the replica again, one at a time while
  it is on probation (others keep going to healthy replicas); a success puts it back in full rotation
  and resets its count, a failure takes it out again for twice as long;
* **all out**: a request finds no replica in rotation, raises :class:`ReplicasDownError` (retryable),
  and the policy waits for the soonest replica to come back (each wait is one retry, capped as every
  retry wait is); when the retries run out its message names every replica and its last error;
* errors that cannot succeed elsewhere (401, 400, ...) are recorded but neither take the replica out nor
  are retried (the backend says which errors are retryable).

A set of one replica never takes it out: its retries wait the policy's backoff exactly as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class ReplicasDownError(Exception):
    """No replica is in rotation; retry after ``wait_s`` (when the soonest one comes back)."""

    def __init__(self, message: str, wait_s: float) -> None:
        super().__init__(message)
        self.wait_s = wait_s


@dataclass
class Replica:
    """One server of a replica set and what is known of its health."""

    url: str
    outstanding: int = 0
    """Requests sent to it and not yet answered."""
    failures: int = 0
    """Retryable failures in a row (0: healthy; more: out of rotation or on probation)."""
    down_until: float = 0.0
    """Clock time before which it gets no request."""
    last_error: str | None = None
    served: int = 0
    """Requests it answered."""


class ReplicaSet:
    """Chooses a replica per request and tracks each one's health (rules: the module docstring)."""

    def __init__(
        self,
        urls: list[str],
        *,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("a replica set needs at least one URL")
        self.replicas = [Replica(url) for url in urls]
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._next = 0

    @property
    def single(self) -> bool:
        return len(self.replicas) == 1

    def acquire(self) -> Replica:
        """The replica of the next request (its outstanding count taken).

        Raises:
            ReplicasDownError: every replica is out of rotation.
        """
        now = self._clock()
        up = [r for r in self.replicas if r.down_until <= now]
        if not up:
            wait = min(r.down_until for r in self.replicas) - now
            raise ReplicasDownError(
                f"every replica is out of rotation ({self.summary()})", max(wait, 0.0)
            )
        # A replica on probation takes one request at a time, unless nothing else is up.
        free = [r for r in up if not (r.failures and r.outstanding)] or up
        count = len(self.replicas)
        index = {id(r): i for i, r in enumerate(self.replicas)}
        chosen = min(free, key=lambda r: (r.outstanding, (index[id(r)] - self._next) % count))
        self._next = (index[id(chosen)] + 1) % count
        chosen.outstanding += 1
        return chosen

    def release(
        self,
        replica: Replica,
        *,
        error: str | None = None,
        down: bool = False,
        at_least_s: float | None = None,
    ) -> None:
        """The request sent to ``replica`` ended: answered (no ``error``), or failed with ``error``,
        which takes the replica out of rotation when ``down`` (a retryable failure): for its
        back-off, or ``at_least_s`` if longer (the wait the server asked for, capped at
        ``backoff_max_s``)."""
        replica.outstanding -= 1
        if error is None:
            replica.served += 1
            replica.failures = 0
            replica.down_until = 0.0
            return
        replica.last_error = error
        if not down or self.single:
            return
        now = self._clock()
        if replica.down_until > now:
            return  # a concurrent request already took it out: one outage, one count
        replica.failures += 1
        period = self.backoff_base_s * 2 ** (replica.failures - 1)
        replica.down_until = now + min(self.backoff_max_s, max(period, at_least_s or 0.0))

    def release_cancelled(self, replica: Replica) -> None:
        """The request sent to ``replica`` was cancelled (no verdict on the replica)."""
        replica.outstanding -= 1

    def wait_s(self) -> float:
        """Seconds until some replica is in rotation (0: one is now)."""
        now = self._clock()
        return max(min(r.down_until for r in self.replicas) - now, 0.0)

    def summary(self) -> str:
        """Every replica and its state: ``URL: up`` or ``URL: out Ns, last error: ...``."""
        now = self._clock()
        parts = []
        for r in self.replicas:
            state = "up" if r.down_until <= now else f"out {r.down_until - now:.1f}s"
            if r.last_error is not None:
                state += f", last error: {r.last_error}"
            parts.append(f"{r.url}: {state}")
        return "; ".join(parts)
