"""The state a stop rule looks at: how the answers drawn so far split, for many rows at once.

A row is one problem in online sampling, or one (problem, random ordering) in a simulation. Rules
see only counts, never the samples' text or a reference answer, so the same rule code decides
online and in replays of stored runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

TOP = 4
"""How many of the largest answer classes :class:`Votes` keeps per row."""


def answer_key(answer: str | None) -> str | None:
    """The class a sample's extracted answer votes for: the answer without surrounding blank
    space, or None (no answer: never a class, never wins).

    Extracted answers are already normalised by their extractor (numbers by the math extraction,
    programs by the code extraction, as the ``vote`` component reads them); stripping here makes
    programs that differ only in surrounding blank lines vote together, as the ``code`` extractor does.
    """
    if answer is None:
        return None
    key = answer.strip()
    return key or None


@dataclass(frozen=True)
class Votes:
    """The vote after ``n`` samples, for each of ``rows`` rows.

    Attributes:
        n: samples drawn so far, answered or not, shape ``(rows,)``.
        top: counts of the ``TOP`` largest answer classes, descending, zero where a row has fewer
            classes; shape ``(rows, TOP)``. Samples without an answer are in no class.
        run: length of the streak of samples with one and the same answer that ends at the last
            sample drawn (0 when the last sample has no answer), shape ``(rows,)``.
    """

    n: NDArray[np.int64]
    top: NDArray[np.int64]
    run: NDArray[np.int64]

    @property
    def rows(self) -> int:
        return int(self.n.shape[0])

    @property
    def leader(self) -> NDArray[np.int64]:
        return self.top[:, 0]

    @property
    def runner_up(self) -> NDArray[np.int64]:
        return self.top[:, 1]


def votes_of(answers: Sequence[str | None]) -> Votes:
    """One row: the vote of ``answers`` (extracted answers in drawing order, None = no answer)."""
    counts: dict[str, int] = {}
    for a in answers:
        key = answer_key(a)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    top = sorted(counts.values(), reverse=True)[:TOP]
    top += [0] * (TOP - len(top))
    run = 0
    last = answer_key(answers[-1]) if answers else None
    if last is not None:
        for a in reversed(answers):
            if answer_key(a) != last:
                break
            run += 1
    return Votes(
        n=np.array([len(answers)], dtype=np.int64),
        top=np.array([top], dtype=np.int64),
        run=np.array([run], dtype=np.int64),
    )


def leading_answer(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """The answer with most votes and its count; among equal counts the one that reached the
    count first (so a replay always names the same one). ``(None, 0)`` when nothing is answered."""
    counts: dict[str, int] = {}
    best: str | None = None
    best_count = 0
    for a in answers:
        key = answer_key(a)
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        if counts[key] > best_count:
            best, best_count = key, counts[key]
    return best, best_count
