"""What a gym problem stores as its reference (:class:`GymReference`)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ponder.errors import DataError


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
