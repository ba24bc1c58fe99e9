"""The ``gym`` verifier: each reasoning-gym dataset's own scorer judges the tagged answer."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ponder._closing import Closing
from ponder.errors import DataError, UserError
from ponder.records import Verdict
from ponder.text import tagged_answer
from ponder.verify.gym._library import gym_version, make_dataset

ANSWER_TAG = "answer"
"""The tag a gym task asks the model to put its final answer in: ``<answer>...</answer>``."""


class GymReference(BaseModel):
    """What a gym problem's samples are scored against, stored as JSON in ``Problem.reference``.

    It names the problem rather than copying it: the verifier generates the entry again (the
    generators are deterministic in their seed) and hands the scorer the exact entry, whose
    metadata may hold tuples, sets or grids that a JSON copy would not keep.

    Attributes:
        dataset: The reasoning-gym dataset (``composite`` for a mix).
        options: The options that rebuild it (canonical: seed and size included).
        index: The entry's index in the dataset.
        answer: The entry's reference answer, or None for datasets that accept many answers
            (their scorer checks validity); regenerated entries must match it.
        version: The reasoning-gym version that generated the problem; scoring with another
            installed version is an error, not a guess.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    options: dict[str, Any]
    index: int = Field(ge=0)
    answer: str | None
    version: str

    def to_json(self) -> str:
        """This reference as the JSON string a problem stores."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parse a stored reference.

        Raises:
            DataError: ``text`` is not a gym reference (with pydantic's explanation).
        """
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'reference'}: {e['msg']}" for e in exc.errors()
            )
            raise DataError(f"not a gym reference: {problems}") from None


def _key(reference: GymReference) -> str:
    return json.dumps([reference.dataset, reference.options], sort_keys=True)


class GymVerifier(Closing):
    """Scores samples of gym tasks with the scorer of the dataset that generated the problem.

    For each sample: the answer is the content of the last ``<answer>...</answer>`` outside
    ``<think>`` blocks (:func:`ponder.text.tagged_answer`); none gives ``unparsed``. Otherwise the
    dataset's ``score_answer(answer, entry)`` decides: its score (partial credit in [0, 1]) is
    the verdict's ``score``, and the verdict is ``correct`` for the full score 1.0, ``incorrect``
    below it. A scorer that raises, returns something other than a number in [0, 1], or a
    problem that cannot be regenerated (another reasoning-gym version installed, a changed
    generator) gives ``error`` with the cause in the detail.

    Datasets and regenerated entries are cached for the verifier's life. Scorers run in this
    process, without a time limit (they do string and arithmetic checks, not model code).
    """

    def __init__(self) -> None:
        self._datasets: dict[str, Any] = {}
        self._entries: dict[tuple[str, int], dict[str, Any]] = {}
        self._version: str | None = None

    @property
    def name(self) -> str:
        """``gym`` (the reasoning-gym version is checked per problem, see :class:`GymReference`)."""
        return "gym"

    def verify_many(self, items: Sequence[tuple[str | None, str]]) -> list[Verdict]:
        """Verdicts for ``(reference JSON, sample text)`` pairs, in the same order."""
        return [self._verify(reference, text) for reference, text in items]

    def _verify(self, reference: str | None, text: str) -> Verdict:
        if reference is None:
            return Verdict(status="error", detail="no reference")
        try:
            ref = GymReference.from_json(reference)
        except DataError as exc:
            return Verdict(status="error", detail=f"invalid reference: {exc.message}")
        answer = tagged_answer(text, ANSWER_TAG)
        if answer is None:
            return Verdict(status="unparsed", detail=f"no <{ANSWER_TAG}>...</{ANSWER_TAG}> found")
        try:
            dataset, entry = self._entry(ref)
        except UserError as exc:
            return Verdict(status="error", extracted=answer, detail=exc.message)
        try:
            # A copy: a scorer that changed the entry would change the cached one.
            score = dataset.score_answer(answer, copy.deepcopy(entry))
        # A scorer may raise anything on an odd answer; that sample is an error, not a crash.
        except Exception as exc:  # noqa: BLE001
            return Verdict(
                status="error",
                extracted=answer,
                detail=f"the {ref.dataset} scorer raised {type(exc).__name__}: {exc}",
            )
        if isinstance(score, bool) or not isinstance(score, int | float):
            return Verdict(
                status="error",
                extracted=answer,
                detail=f"the {ref.dataset} scorer returned {score!r}, not a number",
            )
        score = float(score)
        if math.isnan(score) or not 0.0 <= score <= 1.0:
            return Verdict(
                status="error",
                extracted=answer,
                detail=f"the {ref.dataset} scorer returned {score!r}, outside [0, 1]",
            )
        status = "correct" if score >= 1.0 else "incorrect"
        return Verdict(status=status, extracted=answer, score=score)

    def _entry(self, ref: GymReference) -> tuple[Any, dict[str, Any]]:
        if self._version is None:
            self._version = gym_version()
        if ref.version != self._version:
            raise UserError(
                f"the problem was generated by reasoning-gym {ref.version}, but {self._version} "
                "is installed; its entry cannot be regenerated faithfully"
            )
        key = _key(ref)
        dataset = self._datasets.get(key)
        if dataset is None:
            dataset = self._datasets[key] = make_dataset(ref.dataset, ref.options)
        entry = self._entries.get((key, ref.index))
        if entry is None:
            if ref.index >= len(dataset):
                raise DataError(f"index {ref.index} is beyond the dataset's {len(dataset)} entries")
            try:
                entry = dataset[ref.index]
            # A generator may raise anything; the sample is then an error, not a crash.
            except Exception as exc:  # noqa: BLE001
                raise DataError(
                    f"regenerating entry {ref.index} of {ref.dataset} raised "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            self._entries[(key, ref.index)] = entry
        if entry.get("answer") != ref.answer:
            raise DataError(
                f"the regenerated entry {ref.index} of {ref.dataset} has the answer "
                f"{entry.get('answer')!r}, not the stored {ref.answer!r}"
            )
        return dataset, entry

    def close(self) -> None:
        """Drop the cached datasets; idempotent."""
        self._datasets.clear()
        self._entries.clear()
