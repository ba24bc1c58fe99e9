"""The dev/test split of a task's problems: the search sees only dev; the systems it selects are
evaluated once on test."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ponder.errors import ConfigError
from ponder.records import Problem


def _count(name: str, value: int, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"--{name} must be an integer, got {value!r}", hint=f"pass --{name} N (problems)"
        )
    if value < least:
        raise ConfigError(
            f"--{name} must be >= {least}, got {value}",
            hint=f"pass --{name} N with N >= {least} problems",
        )


def split_problems(
    problems: Sequence[Problem], dev: int, test: int, seed: int
) -> tuple[list[Problem], list[Problem]]:
    """A seeded, disjoint dev/test split of ``problems``.

    The problems are shuffled with ``random.Random(seed)`` (an integer seed gives the same order in
    every process and Python version); dev is the first ``dev`` of the shuffled order, test the
    next ``test``. The same seed with a larger ``dev`` or ``test`` keeps the earlier dev problems
    (dev is a prefix of the shuffle); test moves when dev grows.

    Raises:
        ConfigError: a dev count below 1, a negative test count, a non-integer seed, duplicate
            problem ids, or ``dev + test`` more than the task has.
    """
    _count("dev", dev)
    _count("test", test, least=0)  # 0: no test evaluation
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"the split seed must be an integer, got {seed!r}")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ConfigError(
            f"the task has repeated problem ids ({', '.join(map(repr, dupes))}): a split by id "
            "could not keep dev and test apart",
            hint="give every problem of the task its own id",
        )
    if dev + test > len(problems):
        raise ConfigError(
            f"--dev {dev} + --test {test} = {dev + test} problems, but the task has "
            f"{len(problems)}",
            hint=f"choose --dev and --test with a sum of at most {len(problems)}",
        )
    order = list(problems)
    random.Random(seed).shuffle(order)
    return order[:dev], order[dev : dev + test]
