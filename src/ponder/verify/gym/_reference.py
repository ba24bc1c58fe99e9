"""What a gym problem stores as its reference (:class:`GymReference`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ponder.errors import ConfigError, DataError
from ponder.text import ExtractStrategy, extract_answer, tagged_answer

ANSWER_TAG = "answer"
"""The tag a gym task asks the model to put its final answer in: ``<answer>...</answer>``."""

GymExtract = Literal["tag", "hash", "boxed", "answer_is", "last_number"]
"""Where a gym verifier looks for the answer: ``tag`` (the last ``<answer>`` tag, what the prompt
asks for), or one of :data:`ponder.text.ExtractStrategy` (``last_number``, ...) as a fallback for
models too small to follow the tag convention."""

DEFAULT_EXTRACT: tuple[GymExtract, ...] = ("tag",)
"""Only the tag: a reply without it is ``unparsed``."""


def check_extract(value: object) -> tuple[GymExtract, ...]:
    """The extraction order from a task option: ``"tag,last_number"`` or a list of names.

    Raises:
        ConfigError: empty, or a name that is not a :data:`GymExtract`.
    """
    if isinstance(value, str):
        names = tuple(n.strip() for n in value.split(",") if n.strip())
    elif isinstance(value, Sequence):
        names = tuple(str(n).strip() for n in value)
    else:
        names = ()
    valid = get_args(GymExtract)
    bad = [n for n in names if n not in valid]
    if not names or bad:
        raise ConfigError(
            f"invalid gym option extract={value!r}"
            + (f": unknown {', '.join(map(repr, bad))}" if bad else ": no method given"),
            hint=f"give methods tried in order, comma-separated, from: {', '.join(valid)} "
            "(e.g. -T extract=tag,last_number)",
        )
    return names  # type: ignore[return-value]  # each name was checked against the Literal above


def find_answer(text: str, extract: Sequence[GymExtract]) -> str | None:
    """The answer in a reply by the first method of ``extract`` that finds one, else None."""
    for method in extract:
        if method == "tag":
            found = tagged_answer(text, ANSWER_TAG)
        else:
            strategy: ExtractStrategy = method
            found = extract_answer(text, [strategy])
        if found is not None:
            return found
    return None


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
        extract: Where the verifier finds the answer in a reply (:data:`GymExtract`, in order).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    options: dict[str, Any]
    index: int = Field(ge=0)
    answer: str | None
    version: str
    extract: tuple[GymExtract, ...] = DEFAULT_EXTRACT

    def to_json(self) -> str:
        """This reference as the JSON string a problem stores (the default ``extract`` is left
        out, so references written before the option existed read back the same)."""
        return self.model_dump_json(
            exclude={"extract"} if self.extract == DEFAULT_EXTRACT else None
        )

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
