"""Choosing which problems of a task to run: ids, seeded shuffle, offset, limit."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ponder.errors import ConfigError, NotFoundError
from ponder.records import Problem

_SHOWN_UNKNOWN = 5


def _check_count(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}", hint=f"pass --{name} N with N >= 0")


def select_problems(
    problems: Sequence[Problem],
    *,
    limit: int | None = None,
    offset: int = 0,
    ids: Sequence[str] | None = None,
    shuffle_seed: int | None = None,
) -> list[Problem]:
    """A subset of ``problems``, chosen in this order: ids, shuffle, offset, limit.

    Args:
        problems: All problems of a task, in the task's order.
        limit: Keep at most this many (``None``: all).
        offset: Skip this many first.
        ids: Keep only these problems, in the order given (repeats are dropped).
        shuffle_seed: Shuffle with ``random.Random(shuffle_seed)``: the same seed gives the same
            order on every run.

    Raises:
        ConfigError: a negative ``limit`` or ``offset``.
        NotFoundError: some of ``ids`` are not problems of the task (up to 5 are named).
    """
    _check_count("limit", limit)
    _check_count("offset", offset)
    if shuffle_seed is not None and (
        isinstance(shuffle_seed, bool) or not isinstance(shuffle_seed, int)
    ):
        raise ConfigError(f"shuffle seed must be an integer, got {shuffle_seed!r}")
    selected = list(problems)
    if ids is not None:
        if isinstance(ids, str):
            raise ConfigError(f"ids must be a list of problem ids, got the string {ids!r}")
        by_id = {p.id: p for p in selected}
        wanted = list(dict.fromkeys(ids))
        unknown = [i for i in wanted if i not in by_id]
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:_SHOWN_UNKNOWN])
            more = len(unknown) - _SHOWN_UNKNOWN
            extra = f" (and {more} more)" if more > 0 else ""
            example = f" (ids look like {selected[0].id!r})" if selected else ""
            raise NotFoundError(
                f"unknown problem id{'s' if len(unknown) > 1 else ''}: {shown}{extra}",
                hint=f"use ids of the task's problems{example}",
            )
        selected = [by_id[i] for i in wanted]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(selected)
    selected = selected[offset:]
    if limit is not None:
        selected = selected[:limit]
    return selected
