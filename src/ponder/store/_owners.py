"""Who is drawing samples: the identity of a process, and whether a recorded one is still alive.

A claim on a work unit belongs to an *owner*: a process named by its host, pid and the time the
operating system started it (so a pid reused by a later process is not mistaken for the owner).
An owner is dead when, on this host, its pid is gone, a zombie, or now a different process; and on
any host when its heartbeat is older than the lease (a process on another machine cannot be
checked, and one that stopped beating, say a suspended one, must not hold its units forever).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

LEASE_S = 120.0
"""An owner whose last heartbeat is older than this is taken for dead, wherever it runs."""

HEARTBEAT_S = 15.0
"""How often a live owner renews its heartbeat."""


@dataclass(frozen=True)
class Owner:
    """A process that holds (or held) claims on a store's work units."""

    id: int
    host: str
    pid: int
    process_start: str | None
    started_at: float
    heartbeat: float


def this_host() -> str:
    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """When the OS started process ``pid`` (clock ticks since boot, from /proc), if known.

    None where /proc is not available (then only the pid and the heartbeat tell liveness).
    """
    stat = _stat_fields(pid)
    return stat[19] if stat is not None and len(stat) > 19 else None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return raw[raw.rfind(")") + 2 :].split()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    stat = _stat_fields(pid)
    # A killed child that its parent has not reaped yet is a zombie: it still has a pid.
    return not (stat is not None and stat[0] in ("Z", "X"))


def is_alive(owner: Owner, *, now: float, host: str) -> bool:
    """Whether ``owner`` may still be working (see the module docstring)."""
    if now - owner.heartbeat > LEASE_S:
        return False
    if owner.host != host:
        return True
    if not _pid_alive(owner.pid):
        return False
    if owner.process_start is None:
        return True
    return process_start(owner.pid) == owner.process_start
